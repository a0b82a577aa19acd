"""The command line and the package surface: help everywhere, --version, --print-config, exits."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import simgan_dist
from simgan_dist.cli import build_parser, main
from simgan_dist.config import Config, load_config, save_config
from simgan_dist.train.runs import RUN_CONFIG_FILE


def _parsers(parser: argparse.ArgumentParser, name: str = "simgan"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    missing = [
        f"{name}: {action.dest}"
        for name, parser in _parsers(build_parser())
        for action in parser._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert not missing
    refine_help = dict(_parsers(build_parser()))["simgan refine"].format_help()
    assert "(default: 256)" in refine_help and "(default: skip)" in refine_help
    assert "(default: None)" not in refine_help and "(default: False)" not in refine_help


def test_the_top_level_help_names_every_command_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("shards", "train", "tune", "screen", "refine", "eval", "demo", "bench"):
        assert command in out.split("positional arguments")[0], command
    assert "130 interrupted" in " ".join(out.split())


def test_version_from_the_command_and_python_m(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"simgan-dist {simgan_dist.__version__}"
    done = subprocess.run([sys.executable, "-m", "simgan_dist", "--version"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and simgan_dist.__version__ in done.stdout


def test_print_config_prints_what_would_run_and_writes_nothing(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["train", "--preset", "debug", "--set", "schedule.k_g=3", "--print-config"])
    text = capsys.readouterr().out
    cfg = load_config(text)
    assert isinstance(cfg, Config) and cfg.schedule.k_g == 3
    assert Path(cfg.data.synthetic).is_absolute()  # as the run would see it
    assert not list(tmp_path.iterdir())


def test_print_config_of_a_run_to_resume(checkpoint, capsys) -> None:
    run_dir = checkpoint.parent
    save_config(load_config(preset="debug"), run_dir / RUN_CONFIG_FILE)
    before = sorted(p.name for p in run_dir.iterdir())
    main(["train", "--resume", str(run_dir), "--set", "schedule.adversarial_nimg=960",
          "--print-config"])  # fmt: skip
    cfg = load_config(capsys.readouterr().out)
    assert cfg.schedule.adversarial_nimg == 960 and cfg.run.name == run_dir.name
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_ctrl_c_exits_130_in_one_line(monkeypatch, capsys) -> None:
    import simgan_dist.cli.parser as parser_module

    def interrupted(args: argparse.Namespace) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(parser_module, "cmd_shards_stats", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", "stats", "anywhere"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "simgan: interrupted\n"


def test_importing_the_package_is_cheap_and_its_names_resolve() -> None:
    code = (
        "import sys, simgan_dist as sd; "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules; "
        "assert all(getattr(sd, n) is not None for n in sd.__all__); "
        "print(len(sd.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(simgan_dist.__all__) >= 9
    assert (Path(simgan_dist.__file__).parent / "py.typed").exists()
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        simgan_dist.nothing  # noqa: B018
