"""docs/refine.md's export snippets, run as written in their own processes on a fresh export: plain
PyTorch loads the refiner without Ray or DeepSpeed, onnxruntime alone refines as PyTorch does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan_dist.model.onnx_refiner import ONNX_TOLERANCE
from simgan_dist.refine.export import export_refiner
from simgan_dist.train.checkpoint import load_refiner

pytestmark = pytest.mark.slow  # process groups or ONNX exports: out of the quick tier

DOC = Path(__file__).resolve().parents[2] / "docs" / "refine.md"


def _block(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:[^>]*-->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/refine.md has no {marker} block"
    return match.group(1)


def _run(code: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture
def exported(checkpoint: Path, tmp_path: Path) -> Path:
    """tmp_path/runs/export, where the snippets look, from the debug checkpoint."""
    export_refiner(checkpoint, tmp_path / "runs" / "export")
    return tmp_path


def test_the_plain_pytorch_snippet_loads_the_refiner_in_five_lines(exported, checkpoint) -> None:
    block = _block("export-torch")
    assert len([line for line in block.splitlines() if line.strip()]) <= 5
    check = (
        "import sys, torch\n"
        "assert not {'ray', 'deepspeed'} & set(sys.modules), 'the snippet imported Ray/DeepSpeed'\n"
        "assert not refiner.training\n"
        "torch.save(refiner.state_dict(), 'loaded.pt')\n"
    )
    _run(block + check, exported)
    loaded = torch.load(exported / "loaded.pt", weights_only=True)
    expected = load_refiner(checkpoint)[0].state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_the_onnxruntime_snippet_refines_as_pytorch_does(exported, checkpoint) -> None:
    block = _block("export-onnx")
    check = (
        "import sys\n"
        "assert 'torch' not in sys.modules, 'the snippet needed torch'\n"
        "np.save('images.npy', images)\n"
        "np.save('refined.npy', refined)\n"
    )
    _run(block + check, exported)
    images = np.load(exported / "images.npy")
    refined = np.load(exported / "refined.npy")
    refiner = load_refiner(checkpoint)[0]
    with torch.no_grad():
        expected = refiner(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(refined, expected, atol=ONNX_TOLERANCE)
