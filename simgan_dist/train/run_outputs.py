"""What a run writes besides checkpoints, kept in its run storage when that is an object store.

Workers write metrics.jsonl, TensorBoard events, grids and key logs to a staging directory on
their own node (runs.output_dir) and copy them to the run location at every checkpoint and at
the end, so a cluster that deletes its pods after the job (a KubeRay RayJob) loses nothing. For a
local run the staging directory is the run directory itself and nothing is copied. What a copy
costs: the files changed since the last one (metrics.jsonl whole, new event and grid files).
"""

from __future__ import annotations

import logging
from pathlib import Path

from simgan_dist.config import Config
from simgan_dist.train.runs import run_location

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
RANK0_OUTPUTS = [METRICS_FILE, "tensorboard", "grids"]


def key_log_name(rank: int) -> str:
    return f"keys/rank-{rank:04d}.jsonl"


class RunOutputs:
    """One worker's outputs: restored into its staging directory on resume, published to the
    run location (no-op for local runs)."""

    def __init__(self, cfg: Config, run_dir: Path, rank: int) -> None:
        self.run_dir, self.rank = run_dir, rank
        self.location = run_location(cfg)
        self.remote = not self.location.is_local
        self.names = RANK0_OUTPUTS if rank == 0 else []
        if cfg.data.record_keys:
            self.names = [*self.names, key_log_name(rank)]
        self.uploaded: dict[str, tuple[int, int]] = {}

    def restore(self) -> None:
        """Before logging resumes: the append-only files of earlier attempts (this node's staging
        copy may be gone, e.g. a new pod) come back from the store, so appends continue them."""
        if not self.remote:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in [n for n in self.names if n.endswith(".jsonl")]:
            remote = self.location.join(name)
            if remote.exists():
                local = self.run_dir / name
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(remote.read_bytes())

    def publish(self) -> None:
        """Copy what changed since the last call to the run location."""
        if self.remote and self.names:
            num_copied = self.location.upload_dir(self.run_dir, self.names, self.uploaded)
            log.debug("rank %d: %d output files copied to %s", self.rank, num_copied, self.location)
