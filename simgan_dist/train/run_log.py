"""Run outputs on rank 0: metrics as JSONL, TensorBoard scalars, grids and hparams, console lines."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config dict as TensorBoard hparams: dotted names, scalars kept, the rest as text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:  # tuples, lists, empty mappings
            flat[name] = json.dumps(value)
    return flat


class RunLog:
    """metrics.jsonl + TensorBoard event files under `directory`, plus console lines."""

    def __init__(self, directory: str | Path, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.last_time = time.perf_counter()
        self.last_nimg: int | None = None
        if enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.jsonl = (self.directory / "metrics.jsonl").open("a", buffering=1)
            self.tb = SummaryWriter(str(self.directory / "tensorboard"))

    def write(
        self,
        cur_nimg: int,
        phase: str,
        metrics: dict[str, float],
        progress: Callable[[float | None], str] | None = None,
    ) -> dict[str, float]:
        """Record one interval; images/s is measured since the previous call (or since start).
        progress(images_per_s) gives the console line's head (phase, share done, ETA)."""
        now = time.perf_counter()
        row = dict(metrics)
        if self.last_nimg is not None and now > self.last_time:
            row["images_per_s"] = (cur_nimg - self.last_nimg) / (now - self.last_time)
        self.last_time, self.last_nimg = now, cur_nimg
        if not self.enabled:
            return row
        # "time" (Unix seconds) lines rows up with other records, such as the bench's CPU samples.
        stamped = {"cur_nimg": cur_nimg, "phase": phase, "time": round(time.time(), 3), **row}
        # NaN/inf become null: bare NaN is not JSON, and strict parsers (jq, browsers) reject it.
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in stamped.items()}  # fmt: skip
        self.jsonl.write(json.dumps(strict, allow_nan=False) + "\n")
        for key, value in row.items():
            self.tb.add_scalar(key, value, global_step=cur_nimg)
        parts = [f"{k} {v:.4g}" for k, v in sorted(row.items())]
        head = (
            progress(row.get("images_per_s")) if progress else f"kimg {cur_nimg / 1000:.1f} {phase}"
        )
        # sys.stdout.write, not print: Ray Train patches print to tee into its logger as well,
        # which would show every line twice.
        sys.stdout.write(f"[simgan] {head} | " + "  ".join(parts) + "\n")
        sys.stdout.flush()
        return row

    def config(self, config: dict[str, Any], text: str) -> None:
        """The resolved config: TensorBoard hparams (dotted names) and its YAML as text."""
        if self.enabled:
            # run_name=".": the same event directory as the scalars, not a timestamped subfolder.
            self.tb.add_hparams(flat_hparams(config), {}, run_name=".")
            self.tb.add_text("config", "```yaml\n" + text + "```")

    def image(self, tag: str, array: np.ndarray, cur_nimg: int) -> None:
        """A uint8 (H,W) or (H,W,C) image, such as a grid, at this image count."""
        if self.enabled:
            formats = "HW" if array.ndim == 2 else "HWC"
            self.tb.add_image(tag, array, global_step=cur_nimg, dataformats=formats)

    def event(self, name: str, cur_nimg: int) -> None:
        """A one-off row such as {"event": "resumed", "cur_nimg": ...}."""
        if self.enabled:
            self.jsonl.write(json.dumps({"event": name, "cur_nimg": cur_nimg}) + "\n")
            sys.stdout.write(f"[simgan] {name} at kimg {cur_nimg / 1000:.1f}\n")
        self.last_time, self.last_nimg = time.perf_counter(), cur_nimg

    def flush(self) -> None:
        """Everything written so far on disk (before the files are copied to run storage)."""
        if self.enabled and not self.jsonl.closed:
            self.jsonl.flush()
            self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
