"""Run outputs on rank 0: metrics as JSONL and TensorBoard scalars, and a console line per interval."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


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

    def write(self, cur_nimg: int, phase: str, metrics: dict[str, float]) -> dict[str, float]:
        """Record one interval; images/s is measured since the previous call (or since start)."""
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
        # sys.stdout.write, not print: Ray Train patches print to tee into its logger as well,
        # which would show every line twice.
        sys.stdout.write(
            f"[simgan] kimg {cur_nimg / 1000:9.1f}  {phase:<16} " + "  ".join(parts) + "\n"
        )
        sys.stdout.flush()
        return row

    def event(self, name: str, cur_nimg: int) -> None:
        """A one-off row such as {"event": "resumed", "cur_nimg": ...}."""
        if self.enabled:
            self.jsonl.write(json.dumps({"event": name, "cur_nimg": cur_nimg}) + "\n")
            sys.stdout.write(f"[simgan] {name} at kimg {cur_nimg / 1000:.1f}\n")
        self.last_time, self.last_nimg = time.perf_counter(), cur_nimg

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
