"""The refiner as ONNX (torch's dynamo exporter, opset 18), checked against PyTorch with onnxruntime.

Why the dynamo exporter: it is torch 2.13's default (the legacy TorchScript one is deprecated).
It needs onnxscript; the check needs onnxruntime: with onnx, the optional `export` extra.
Opset 18 runs on onnxruntime 1.14 and later.

The graph takes `images` (batch, C, H, W) in [-1, 1] and, for a refiner with a noise input,
`noise` (batch, K): the per-image N(0, 1) values that Refiner.noise_like draws, broadcast over
the image inside the graph. The batch axis is dynamic. Its output is `refined`, like R(x).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from simgan_dist.config import ConfigError
from simgan_dist.model.exported import ExportError
from simgan_dist.model.networks import Refiner

ONNX_OPSET = 18
# Largest |onnxruntime - PyTorch| accepted on the check batch: float32 rounding in a different
# order of operations is ~1e-6; one 8-bit level is 1/128 = 0.0078, 78 times this tolerance.
ONNX_TOLERANCE = 1e-4
CHECK_BATCH = 4  # images in the check batch: not the example batch of 2 the graph was traced on
CHECK_SEED = 0
EXTRA_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


class OnnxRefiner(nn.Module):
    """R with its noise as one value per image and channel, as the ONNX graph takes it."""

    def __init__(self, refiner: Refiner) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is not None:
            n, _, h, w = images.shape
            noise = noise[:, :, None, None].expand(n, noise.shape[1], h, w)
        out = self.refiner(images, noise=noise)
        assert isinstance(out, Tensor)
        return out


def require_onnx_packages() -> None:
    """Stop with one line naming the extra when the ONNX packages are not installed."""
    missing = []
    for name in EXTRA_PACKAGES:
        try:
            importlib.import_module(name)  # imported, not looked up: a broken install fails here
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"--onnx: needs {', '.join(missing)}: pip install 'simgan-dist[export]' "
            "(or export without ONNX: --no-onnx)"
        )


def check_inputs(
    refiner: Refiner, image_shape: tuple[int, int, int], batch: int = CHECK_BATCH, seed: int = 0
) -> dict[str, Tensor]:
    """A seeded batch of graph inputs: uniform images in [-1, 1], N(0, 1) noise when R has it."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {"images": torch.rand((batch, *image_shape), generator=generator) * 2 - 1}
    if refiner.noise_channels:
        inputs["noise"] = torch.randn((batch, refiner.noise_channels), generator=generator)
    return inputs


def write_onnx(refiner: Refiner, path: Path, image_shape: tuple[int, int, int]) -> None:
    """R (on the CPU, eval mode) as one self-contained .onnx file with a dynamic batch axis."""
    require_onnx_packages()
    from torch.export import Dim

    module = OnnxRefiner(refiner.cpu().eval()).eval()
    example = check_inputs(refiner, image_shape, batch=2)
    batch = Dim("batch")
    tmp = path.with_name(f".{path.name}.tmp")
    with _quiet_exporter():
        torch.onnx.export(
            module,
            tuple(example.values()),
            tmp,
            input_names=list(example),
            output_names=["refined"],
            dynamic_shapes=tuple({0: batch} for _ in example),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,  # one file: refiners are megabytes, far below protobuf's 2 GB
            verbose=False,
        )
    tmp.replace(path)


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The ONNX graph's output on the CPU for named float32 inputs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["refined"], inputs)[0]


def check_onnx(path: Path, refiner: Refiner, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime and R in PyTorch on the same seeded batch; raise
    ExportError when they differ by more than ONNX_TOLERANCE. Returns the JSON's `onnx` entry."""
    inputs = check_inputs(refiner, image_shape, seed=CHECK_SEED)
    with torch.no_grad():
        expected = OnnxRefiner(refiner.cpu().eval())(*inputs.values()).numpy()
    try:
        got = run_onnx(path, {name: t.numpy() for name, t in inputs.items()})
    except Exception as err:  # onnxruntime's own errors share no base class
        raise ExportError(f"{path}: onnxruntime cannot run it: {err}") from None
    if got.shape != expected.shape:
        raise ExportError(f"{path}: output shape {got.shape}, PyTorch gives {expected.shape}")
    max_abs_diff = float(np.abs(got - expected).max())
    if not max_abs_diff <= ONNX_TOLERANCE:  # a NaN fails too
        raise ExportError(
            f"{path}: onnxruntime differs from PyTorch by up to {max_abs_diff:.3g} on the check "
            f"batch (tolerance {ONNX_TOLERANCE:g})"
        )
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "opset": ONNX_OPSET,
        "inputs": list(inputs),
        "outputs": ["refined"],
        "check": {
            "batch": CHECK_BATCH,
            "seed": CHECK_SEED,
            "max_abs_diff": max_abs_diff,
            "tolerance": ONNX_TOLERANCE,
        },
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's warnings (torchvision ops it skips, deprecations inside torch) say nothing
    about this graph; check_onnx is what tells whether the export is right."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)
