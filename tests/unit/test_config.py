"""Config loading: presets validate, and every bad input is one line naming the field and the file."""

from __future__ import annotations

import pytest

from simgan_dist.config import PRESETS_DIR, Config, ConfigError, load_config, save_config


@pytest.mark.parametrize("name", ["gaze", "hand", "digits", "debug"])
def test_presets_load(name: str) -> None:
    cfg = load_config(preset=name)
    assert isinstance(cfg, Config)
    assert cfg.schedule.batch_size % (2 * cfg.run.num_workers) == 0


def test_gaze_preset_is_the_papers_setting() -> None:
    cfg = load_config(preset="gaze")
    assert (cfg.model.image_height, cfg.model.image_width) == (35, 55)
    assert (cfg.model.refiner_blocks, cfg.model.refiner_kernel, cfg.model.refiner_features) == (
        4,
        3,
        64,
    )
    assert cfg.schedule.batch_size == 512 and cfg.optim.refiner_lr == 1e-3
    hand = load_config(preset="hand")
    assert (hand.model.refiner_blocks, hand.model.refiner_kernel) == (10, 7)


def _error_for(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_unknown_key_names_field_and_file(tmp_path) -> None:
    message = _error_for(tmp_path, "preset: debug\nschedule:\n  batchsize: 8\n")
    assert "schedule.batchsize" in message and "unknown key" in message


def test_unknown_section(tmp_path) -> None:
    assert "optimiser" in _error_for(tmp_path, "optimiser: {}\n")


def test_wrong_type(tmp_path) -> None:
    message = _error_for(tmp_path, "preset: debug\nschedule:\n  batch_size: eight\n")
    assert "schedule.batch_size" in message and "integer" in message


def test_bool_is_not_an_int(tmp_path) -> None:
    assert "schedule.k_g" in _error_for(tmp_path, "preset: debug\nschedule:\n  k_g: true\n")


def test_out_of_range(tmp_path) -> None:
    message = _error_for(tmp_path, "preset: debug\nloss:\n  reg_lambda: -1\n")
    assert "loss.reg_lambda" in message and ">= 0" in message
    message = _error_for(tmp_path, "preset: debug\nloss:\n  saturation_margin: 1.5\n")
    assert "loss.saturation_margin" in message and "0 (off)" in message


def test_bad_choice(tmp_path) -> None:
    message = _error_for(tmp_path, "preset: debug\nloss:\n  psi: sobel\n")
    assert "loss.psi" in message and "identity" in message


def test_batch_must_split_over_workers(tmp_path) -> None:
    message = _error_for(
        tmp_path, "preset: debug\nschedule:\n  batch_size: 6\nrun:\n  num_workers: 2\n"
    )
    assert "schedule.batch_size" in message


def test_even_kernel_rejected(tmp_path) -> None:
    assert "model.refiner_kernel" in _error_for(
        tmp_path, "preset: debug\nmodel:\n  refiner_kernel: 4\n"
    )


def test_overrides_and_roundtrip(tmp_path) -> None:
    cfg = load_config(preset="debug", overrides=["schedule.k_g=3", "loss.psi=gradients"])
    assert cfg.schedule.k_g == 3 and cfg.loss.psi == "gradients"
    saved = tmp_path / "resolved.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg


def test_bad_override_names_field() -> None:
    with pytest.raises(ConfigError, match="schedule.k_g"):
        load_config(preset="debug", overrides=["schedule.k_g=0"])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="nope")
    assert (PRESETS_DIR / "digits.yaml").exists()


def test_config_from_a_path_a_yaml_string_or_a_dict_is_the_same(tmp_path) -> None:
    text = "preset: debug\nschedule:\n  k_g: 3\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    from_path = load_config(path, overrides=["loss.reg_lambda=0.25"])
    from_str_path = load_config(str(path), overrides=["loss.reg_lambda=0.25"])
    from_text = load_config(text, overrides=["loss.reg_lambda=0.25"])
    from_dict = load_config(
        {"preset": "debug", "schedule": {"k_g": 3}}, overrides=["loss.reg_lambda=0.25"]
    )
    one_line = load_config(
        "{schedule: {k_g: 3}}", preset="debug", overrides=["loss.reg_lambda=0.25"]
    )
    assert from_path == from_str_path == from_text == from_dict == one_line
    assert from_path.schedule.k_g == 3 and from_path.loss.reg_lambda == 0.25


def test_config_values_name_their_source_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"^<string>: schedule\.k_g: must be an integer"):
        load_config("schedule:\n  k_g: two\n")
    with pytest.raises(ConfigError, match=r"^<dict>: loss\.nope: unknown key"):
        load_config({"loss": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"^s3://b/run/config\.yaml: run\.seed: must be an"):
        load_config({"run": {"seed": "x"}}, source="s3://b/run/config.yaml")
    with pytest.raises(ConfigError, match=r"missing\.yaml: file not found"):
        load_config("missing.yaml")


def test_config_to_yaml_round_trips() -> None:
    from simgan_dist.config import config_to_yaml

    cfg = load_config(preset="digits", overrides=["optim.adam_betas=[0.5, 0.9]"])
    assert load_config(config_to_yaml(cfg)) == cfg
    a_dict = {"loss": {"reg_lambda": 1.0}}
    load_config(a_dict)
    assert a_dict == {"loss": {"reg_lambda": 1.0}}  # the caller's dict is left as it was


def test_shuffle_buffers_old_name_is_read_with_a_deprecation_line(caplog) -> None:
    """data.shuffle_buffer became data.shuffle_window (it sizes a window, not a buffer): the
    old name is read for one release, saying so; both names at once are refused."""
    import logging

    from simgan_dist.config import ConfigError, from_dict

    with caplog.at_level(logging.WARNING):
        cfg = from_dict({"data": {"shuffle_buffer": 64}}, source="old.yaml")
    assert cfg.data.shuffle_window == 64
    assert "old.yaml: data.shuffle_buffer is deprecated" in caplog.text
    with pytest.raises(ConfigError, match="data.shuffle_buffer: is data.shuffle_window's old name"):
        from_dict({"data": {"shuffle_buffer": 64, "shuffle_window": 8}}, source="both.yaml")


def test_an_elastic_run_needs_a_batch_that_splits_over_every_worker_count_it_may_have() -> None:
    cfg = load_config(
        preset="debug",
        overrides=["run.num_workers=4", "run.min_workers=2", "schedule.batch_size=24"],
    )
    assert cfg.run.elastic() and list(cfg.run.worker_counts()) == [2, 3, 4]
    assert list(load_config(preset="debug").run.worker_counts()) == [2]  # fixed: num_workers
    with pytest.raises(ConfigError, match=r"schedule.batch_size: .*elastic run .* for \[3\]"):
        load_config(preset="debug", overrides=["run.num_workers=4", "run.min_workers=2",
                                               "schedule.batch_size=16"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"run.min_workers: must be at most run.num_workers=2"):
        load_config(preset="debug", overrides=["run.min_workers=3"])


@pytest.mark.parametrize("field", ["data.rank_split=batch_rows", "optim.disc_optimizer=adam"])
def test_a_removed_field_is_refused_naming_it_and_what_to_do(field: str) -> None:
    name = field.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{name}: removed in this release: .*drop the field"):
        load_config(preset="debug", overrides=[field])
