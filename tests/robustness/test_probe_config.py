"""The second hostile probe's config cases (issue 30, items 6-8, 10, 12-15) through `simgan`.

Each case runs the command in-process through cli.main (no Ray: `train --print-config` resolves
and validates the config and starts nothing) and asserts the exit status, one line naming the
field, file or option, no traceback, and no secret in any output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simgan_dist.cli import main

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYz"  # an AWS-shaped secret key: it holds a '/'


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one `simgan` command run in this process."""
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def _refused(argv: list[str], capsys, *must_name: str, status: int = 2) -> str:
    """Run argv; assert it stopped with `status`, no traceback, nothing on stdout, its last
    stderr line naming each of must_name and holding no secret. Returns that line."""
    code, out, err = _run(argv, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == status, (code, out[-500:], err[-2000:])
    assert lines and "Traceback" not in err, err[-2000:]
    assert out == "" and SECRET not in err
    for name in must_name:
        assert name in lines[-1], f"{name!r} not named in: {lines[-1]}"
    assert len(lines[-1]) < 600, lines[-1][:600]
    return lines[-1]


def _print_config(*sets: str) -> list[str]:
    argv = ["train", "--preset", "debug", "--print-config"]
    for text in sets:
        argv += ["--set", text]
    return argv


# Item 6: a run name is one path component.


@pytest.mark.parametrize("name", ["../escaped", "/tmp/elsewhere", "a/b", "..", "x" * 300])
def test_a_run_name_that_leaves_the_storage_path_is_refused(name: str, capsys) -> None:
    _refused(_print_config(f"run.name={name}"), capsys, "run.name", "one path component")


def test_a_refused_run_name_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    _refused(
        ["train", "--preset", "debug", "--set", "run.storage_path=runs", "--set",
         "run.name=../escaped"],
        capsys, "run.name",
    )  # fmt: skip
    assert not (tmp_path / "escaped").exists() and not list((tmp_path / "runs").iterdir())
    code, out, _ = _run(_print_config("run.name=digits-001.v2"), capsys)
    assert code == 0 and "name: digits-001.v2" in out  # a plain name is kept
