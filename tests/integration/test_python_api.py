"""The README's Python API block, run as written, on the session's shards and local Ray."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _api_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- python-api:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no python-api block"
    return match.group(1)


@pytest.mark.ray
def test_the_readme_python_api_block_runs(ray_local, digit_shards, tmp_path, capsys) -> None:
    block = _api_block()
    assert len(block.strip().splitlines()) <= 12  # "in ten lines", and an import or two
    (tmp_path / "shards").symlink_to(digit_shards["synthetic"].parent)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
    num_images, difference = capsys.readouterr().out.split()[-2:]
    assert int(num_images) == 400  # every synthetic digit of the session's corpus, once
    assert -1 <= float(difference) <= 1
    refined = namespace["refined"]
    assert refined.shape == (16, 1, 28, 28) and refined.abs().max() <= 1
    assert (tmp_path / "runs" / "api" / "report" / "report.json").exists()
    assert any((tmp_path / "runs" / "api").glob("simgan-*/checkpoint-*"))
