"""run.resume=auto / --resume-if-exists: a start under a name that holds a checkpoint continues
that run; without it the start is refused; auto needs a name (no Ray: run directories only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simgan_dist.cli import main
from simgan_dist.config import ConfigError, load_config
from simgan_dist.train.runs import changed_fields, run_location, start_run
from simgan_dist.train.session import save_initial_checkpoint


def _config(debug_overrides, **fields: object):
    return load_config(preset="debug", overrides=debug_overrides(**fields))


def test_auto_resume_needs_a_run_name(debug_overrides) -> None:
    with pytest.raises(ConfigError, match=r"run\.name: must be set with run\.resume=auto"):
        _config(debug_overrides, **{"run.resume": "auto"})
    with pytest.raises(ConfigError, match=r"run\.resume"):
        _config(debug_overrides, **{"run.resume": "sometimes", "run.name": "x"})


def test_a_name_with_a_checkpoint_is_refused_unless_resume_is_auto(
    debug_overrides, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, _ = start_run(_config(debug_overrides, **{"run.name": "again"}))
    save_initial_checkpoint(cfg, run_location(cfg).local_path() / "checkpoint-000000000048")
    with pytest.raises(ConfigError, match="already holds a run.*--resume-if-exists"):
        start_run(_config(debug_overrides, **{"run.name": "again"}))

    longer = {"run.name": "again", "run.resume": "auto", "schedule.adversarial_nimg": 192}
    with caplog.at_level("INFO", logger="simgan_dist"):
        resumed, out = start_run(_config(debug_overrides, **longer))
    assert resumed.run.name == "again" and resumed.schedule.adversarial_nimg == 192
    assert out == run_location(cfg).local_path()
    assert "resuming it (config changed: run.resume, schedule.adversarial_nimg)" in caplog.text


def test_a_name_without_a_checkpoint_starts_with_resume_auto(debug_overrides) -> None:
    cfg, out = start_run(_config(debug_overrides, **{"run.name": "fresh", "run.resume": "auto"}))
    assert cfg.run.resume == "auto" and (out / "config.yaml").exists()


def test_changed_fields_names_nested_fields(debug_overrides) -> None:
    a = _config(debug_overrides)
    b = a.replace(engine={"deepspeed": {"csv_monitor": {"enabled": True}}}, run={"seed": 3})
    assert changed_fields(a, b) == ["engine.deepspeed.csv_monitor.enabled", "run.seed"]
    assert changed_fields(a, a) == []


def test_resume_and_resume_if_exists_together_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--preset", "debug", "--resume", "runs/x", "--resume-if-exists"])
    assert "--resume RUN_DIR or --resume-if-exists, not both" in capsys.readouterr().err


def test_tune_resume_if_exists_finds_the_named_search(debug_overrides, tmp_path: Path) -> None:
    from simgan_dist.tune.search import existing_search, start_search
    from simgan_dist.tune.space import load_search

    bundled = Path(__file__).parents[2] / "simgan_dist" / "tune" / "searches" / "debug.yaml"
    cfg = _config(debug_overrides)
    unnamed = load_search(str(bundled), cfg)
    with pytest.raises(ConfigError, match=r"tune\.name: must be set with --resume-if-exists"):
        existing_search(cfg, unnamed)
    named = tmp_path / "named.yaml"
    named.write_text(bundled.read_text() + "  name: retried\n")
    search = load_search(str(named), cfg)
    assert existing_search(cfg, search) is None
    exp = start_search(cfg, search)
    assert existing_search(cfg, search) == exp.location == str(tmp_path / "retried")
