"""Hostile config input (issue 18, items 6, 7, 11, 12): one ConfigError line, no secret in it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from simgan_dist.cli.commands import storage_options_from_args
from simgan_dist.config import ConfigError, load_config

SECRET = "S3cr3tValue"


@pytest.mark.parametrize(
    "options",
    [
        f"{{client_kwargs: {{aws_secret_access_key: {SECRET}}}}}",
        f"{{config_kwargs: {{extra: [{{token: {SECRET}}}]}}}}",
        f"{{aws_secret_access_key: {SECRET}}}",
    ],
)
def test_credentials_refused_at_any_depth_without_printing_them(options: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(preset="debug", overrides=[f"data.storage_options={options}"])
    message = str(err.value)
    assert "data.storage_options" in message and "credentials" in message
    assert SECRET not in message


def test_storage_option_flag_refuses_nested_credentials_without_printing_them() -> None:
    args = argparse.Namespace(storage_options=[f"client_kwargs={{secret: {SECRET}}}"])
    with pytest.raises(ConfigError) as err:
        storage_options_from_args(args)
    assert "client_kwargs.secret" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"optim\.refiner_lr: must be a finite number"):
        load_config(preset="debug", overrides=[f"optim.refiner_lr={value}"])


@pytest.mark.parametrize(
    "override",
    [
        "schedule.batch_size=[8",
        "schedule.batch_size=: :",
        "run.seed=!!python/object/apply:os.system ['echo PWNED']",
    ],
)
def test_unparsable_override_is_one_line_naming_the_field(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(preset="debug", overrides=[override])
    message = str(err.value)
    assert message.startswith("--set ") and "\n" not in message
    assert override.split("=", 1)[0] in message


def test_bad_yaml_in_storage_option_flag() -> None:
    args = argparse.Namespace(storage_options=["endpoint_url=["])
    with pytest.raises(ConfigError, match="--storage-option endpoint_url: the value is not valid"):
        storage_options_from_args(args)


def test_non_utf8_config_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"run:\n  name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8"):
        load_config(path)


def _deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"a": value}
    return value


def test_a_deeply_nested_dict_is_one_config_error_not_a_recursion_error() -> None:
    # Issue 30 item 14: load_config(dict) deep-copied (and merged) it before any check.
    with pytest.raises(ConfigError, match=r"<dict>: engine\.deepspeed\.a\.a\.\.\.: nested deeper"):
        load_config({"preset": "debug", "engine": {"deepspeed": _deep(5000)}})


def test_a_shared_structure_built_in_python_is_refused_before_it_is_walked() -> None:
    # Issue 30 items 12, 13: shared lists, 10**6 values to walk here (the probe's 10**10 never end).
    bomb: list = ["x"] * 10
    for _ in range(5):
        bomb = [bomb] * 10
    with pytest.raises(ConfigError, match="more than 100000 values") as err:
        load_config({"preset": "debug", "data": {"storage_options": {"client_kwargs": bomb}}})
    assert len(str(err.value)) < 200


def test_the_credential_scan_of_storage_options_is_bounded() -> None:
    from simgan_dist.config import DataConfig

    bomb: list = ["x"] * 10
    for _ in range(5):
        bomb = [bomb] * 10
    with pytest.raises(ValueError, match="data.storage_options: .*too large"):
        DataConfig(storage_options={"client_kwargs": bomb})


def test_a_refused_value_is_shown_cut_short() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(preset="debug", overrides=["schedule.batch_size=" + "x" * 100_000])
    assert "schedule.batch_size: must be an integer" in str(err.value)
    assert len(str(err.value)) < 300


def test_a_preset_name_is_not_a_path(tmp_path) -> None:
    # A preset is a bundled name: `--preset ../../x` read any YAML file as a preset.
    outside = tmp_path / "outside.yaml"
    outside.write_text("run:\n  name: from-outside\n")
    from simgan_dist.config.loading import PRESETS_DIR

    relative = Path(
        "..", "..", "..", "..", "..", "..", "..", "..", *outside.with_suffix("").parts[1:]
    )
    assert (PRESETS_DIR / f"{relative}.yaml").resolve() == outside.resolve()
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset=str(relative))
