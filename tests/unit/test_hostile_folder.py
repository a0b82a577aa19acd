"""`simgan shards build folder` on hostile folders (issue 18, item 14): one line naming the file
or the option, exit status 1 (input) or 2 (options), no traceback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simgan_dist.cli import main


def _png(path, size=(28, 28)) -> None:
    Image.fromarray(np.zeros(size, dtype=np.uint8)).save(path)


def _build(folder, out, *extra: str) -> None:
    main(["shards", "build", "folder", "--folder", str(folder), "--out", str(out), *extra])


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: (_png(d / "a.png"), _png(d / "b.png", (30, 28))), "has shape"),
        (lambda d: _png(d / "__meta__.png"), "__meta__.png: bad sample key"),
        (lambda d: (_png(d / "a.png"), (d / "a.json").write_text("{bad")), "a.json: not a JSON"),
        (lambda d: (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n trunc"), "a.png: not a readable"),
    ],
    ids=["mixed-sizes", "meta-name", "bad-sidecar", "corrupt-png"],
)
def test_bad_folder_input_is_one_line_naming_the_file(setup, expected, tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    setup(folder)
    with pytest.raises(SystemExit) as exit_info:
        _build(folder, tmp_path / "out")
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and expected in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--size", "28"], "--size '28': expected HEIGHTxWIDTH"),
        (["--size", "0x0"], "--size '0x0': expected HEIGHTxWIDTH"),
        (["--samples-per-shard", "0"], "--samples-per-shard: must be >= 1"),
    ],
)
def test_bad_options_are_config_errors(extra, expected, tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png")
    with pytest.raises(SystemExit) as exit_info:
        _build(folder, tmp_path / "out", *extra)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err
