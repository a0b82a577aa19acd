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
