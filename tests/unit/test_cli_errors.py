"""What `simgan` prints for an error (issue 28 item 4): an error raised on purpose (SimganError)
or by a store (OSError) is one line with its exit status; anything else is a bug and keeps its
traceback, instead of passing for a user error."""

from __future__ import annotations

import pytest

from simgan_dist.cli import main, parser
from simgan_dist.config import ConfigError
from simgan_dist.errors import InputError, SimganError


def _command_raising(monkeypatch, err: BaseException) -> None:
    def command(args) -> None:
        raise err

    monkeypatch.setattr(parser, "cmd_shards_verify", command)


@pytest.mark.parametrize(
    ("err", "status", "line"),
    [
        (InputError("shards/x.tar: key k: image is 20x20"), 1, "simgan: error: shards/x.tar"),
        (ConfigError("run.yaml: run.seed: must be >= 0"), 2, "simgan: config error: run.yaml"),
        (FileNotFoundError("s3://b/x: not found"), 1, "simgan: error: s3://b/x: not found"),
    ],
)
def test_an_error_raised_on_purpose_is_one_line_with_its_status(
    monkeypatch, capsys, err, status, line
) -> None:
    _command_raising(monkeypatch, err)
    with pytest.raises(SystemExit) as exited:
        main(["shards", "verify", "anywhere"])
    assert exited.value.code == status
    err_text = capsys.readouterr().err
    assert err_text.startswith(line) and "Traceback" not in err_text
    assert len(err_text.strip().splitlines()) == 1


def test_every_project_error_is_a_simgan_error_with_an_exit_status() -> None:
    assert issubclass(ConfigError, SimganError) and ConfigError.exit_code == 2
    assert InputError.exit_code == 1 and issubclass(InputError, ValueError)


@pytest.mark.parametrize(
    "bug",
    [ValueError("zip() argument 2 is shorter than argument 1"), KeyError("x"), TypeError("t")],
)
def test_a_plain_bug_keeps_its_traceback(monkeypatch, bug) -> None:
    _command_raising(monkeypatch, bug)
    with pytest.raises(type(bug)):
        main(["shards", "verify", "anywhere"])
