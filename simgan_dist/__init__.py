"""simgan-dist: S+U learning (SimGAN) on Ray Train + DeepSpeed, as a library.

The names below load on first use, so `import simgan_dist` is cheap and starts nothing. (Not
`train` and `refine`: those are the subpackages simgan_dist.train and simgan_dist.refine.)

    load_config(config=None, preset=None, overrides=None) -> Config   a validated run config
    train_refiner(config, preset=, overrides=, resume=) -> str          `simgan train`; the run's location
    load_refiner(location) -> (Refiner, Config, checkpoint directory)   a trained R, eval mode
    Refiner.refine(images, generator=None) -> images                    R on a float batch in [-1, 1]
    refine_corpus(checkpoint, input, output, **settings) -> summary     `simgan refine`, exactly once
    export_refiner(location, out, onnx=True) -> refiner.json's content  `simgan export`
    read_exported(export_dir) -> ExportedRefiner (.refiner, .model, .info)  R from an export
    evaluate_digits(synthetic, refined, real_eval, out_dir, ...) -> report  `simgan eval`
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simgan_dist.api import export_refiner, refine_corpus, train_refiner
    from simgan_dist.config import Config, ConfigError, load_config
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.model.exported import read_exported
    from simgan_dist.model.networks import Refiner
    from simgan_dist.train.checkpoint import load_refiner

try:
    __version__ = importlib.metadata.version("simgan-dist")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# name -> the module that defines it
_EXPORTS = {
    "Config": "simgan_dist.config",
    "ConfigError": "simgan_dist.config",
    "load_config": "simgan_dist.config",
    "Refiner": "simgan_dist.model.networks",
    "load_refiner": "simgan_dist.train.checkpoint",
    "train_refiner": "simgan_dist.api",
    "refine_corpus": "simgan_dist.api",
    "evaluate_digits": "simgan_dist.eval.protocol",
    "export_refiner": "simgan_dist.api",
    "read_exported": "simgan_dist.model.exported",
}

__all__ = [
    "Config",
    "ConfigError",
    "Refiner",
    "__version__",
    "evaluate_digits",
    "export_refiner",
    "load_config",
    "load_refiner",
    "read_exported",
    "refine_corpus",
    "train_refiner",
]
assert set(__all__) == {"__version__", *_EXPORTS}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simgan_dist' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
