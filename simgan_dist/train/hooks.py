"""What runs between training iterations: metrics, grids, scores and checkpoints, and their reports."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Protocol, cast

import torch

from simgan_dist.config import config_to_yaml
from simgan_dist.data.streams import grid_images
from simgan_dist.eval.grids import grid_array, save_grid
from simgan_dist.eval.scores import Scorer
from simgan_dist.train import dist
from simgan_dist.train.checkpoint import checkpoint_name
from simgan_dist.train.loop import LoopState, Phase, phases_for
from simgan_dist.train.progress import progress_text
from simgan_dist.train.run_log import RunLog
from simgan_dist.train.run_outputs import RunOutputs
from simgan_dist.train.session import TrainingSession
from simgan_dist.train.stats import check_finite


class TrainerLink(Protocol):
    """What the hooks need of the trainer that runs them (ray_train.RayTrainLink for Ray Train;
    tests pass their own): reports, a dashboard sink, and drain notices."""

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        checkpoint_dir_name: str | None = None,
    ) -> None:
        """Metrics, with a checkpoint directory or none (for Ray Train: a barrier, every rank
        reports)."""
        ...

    def observe(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        """A metrics row, on rank 0, for dashboards (Ray's metrics)."""
        ...

    def draining(self) -> bool:
        """Whether a node of this run is about to be reclaimed (a collective: every rank calls
        it at the same iterations, and every rank gets the same answer)."""
        ...


class LocalLink:
    """A link for in-process runs (tests, benches): reports are kept, nothing drains."""

    def __init__(self) -> None:
        self.reports: list[tuple[dict[str, float], str | None]] = []

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        checkpoint_dir_name: str | None = None,
    ) -> None:
        self.reports.append((dict(metrics), checkpoint_dir_name))

    def observe(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        pass

    def draining(self) -> bool:
        return False


def _crossed(prev_nimg: int, cur_nimg: int, every: int) -> bool:
    return cur_nimg // every > prev_nimg // every


class TrainingHooks:
    """After each iteration: metric averages, console/JSONL/TensorBoard lines and grids on rank 0,
    checkpoints that every rank reports through the link (to Ray Train: a barrier), and a
    just-in-time checkpoint when the link says a node is draining."""

    def __init__(
        self,
        session: TrainingSession,
        run_dir: Path,
        link: TrainerLink,
        outputs: RunOutputs | None = None,
    ) -> None:
        cfg, rank = session.cfg, session.rank
        self.session, self.cfg, self.rank, self.link = session, cfg, rank, link
        self.run_dir = run_dir
        self.outputs = outputs  # copied to an object-store run location (publish_outputs)
        self.published_at = time.monotonic()
        self.drain_checkpointed = False  # one just-in-time checkpoint per drain notice
        self.log = RunLog(run_dir, enabled=rank == 0)
        self.phases = phases_for(cfg.schedule)
        # The run's one metric channel: the loop reports every step there; a log line pops it.
        self.collector = session.metrics
        start_nimg = session.state.cur_nimg
        self.prev_nimg = start_nimg
        self.last_checkpoint_nimg = start_nimg
        self.last_metrics: dict[str, float] = {}
        if start_nimg > 0:
            self.log.event("resumed", start_nimg)
        self.log.config(cfg.to_dict(), config_to_yaml(cfg))
        self.grid_synthetic = self.grid_real = None
        if rank == 0:
            self.grid_synthetic = grid_images(cfg.data.synthetic, cfg).to(session.device)
            self.grid_real = grid_images(cfg.data.real, cfg).to(session.device)
        # Label-free scores (score.every_nimg > 0): held-out images live on rank 0 only.
        self.scorer = None
        if rank == 0 and cfg.score.every_nimg:
            self.scorer = Scorer.from_config(cfg, session.device)
        self.scored_nimg = -1
        self.grid_nimg = -1

    def __call__(self, state: LoopState, phase: Phase, metrics: dict[str, float]) -> None:
        """The loop's StepHook. `metrics` (the iteration's own means) is not used: log lines take
        the interval's means from the metric channel (session.metrics)."""
        run = self.cfg.run
        scores = {}
        # score.every_nimg is a multiple of log_every_nimg: a score always joins a metrics row.
        if self.cfg.score.every_nimg and _crossed(
            self.prev_nimg, state.cur_nimg, self.cfg.score.every_nimg
        ):
            scores = self.score(state)
        if _crossed(self.prev_nimg, state.cur_nimg, run.log_every_nimg):
            self.write_metrics(state, phase.name, scores)
        if _crossed(self.prev_nimg, state.cur_nimg, run.grid_every_nimg):
            self.save_grid(state)
        if _crossed(self.prev_nimg, state.cur_nimg, run.checkpoint_every_nimg) or self.drained(
            state
        ):
            self.checkpoint(state)
        elif scores:
            self.report_scores(state)
        if time.monotonic() - self.published_at >= self.cfg.run.publish_every_s:
            self.publish_outputs()
        self.prev_nimg = state.cur_nimg

    def write_metrics(
        self, state: LoopState, phase_name: str, scores: dict[str, float] | None = None
    ) -> None:
        means = self.collector.pop()
        means["num_skipped_samples"] = float(self.session.stream_stats.num_skipped)
        # A collective over the names: every rank runs the same steps, so every rank's collector
        # holds the same names here, and the all-reduced vector lines up (dist.mean_over_ranks).
        means = dist.mean_over_ranks(means)
        check_finite(means, self._where(state))
        means["num_skipped_samples"] *= self.session.world_size  # a total over ranks, not a mean
        means["num_workers"] = float(self.session.world_size)  # an elastic run's changes
        self.last_metrics = self.log.write(
            state.cur_nimg,
            phase_name,
            {**means, **(scores or {})},
            progress=lambda images_per_s: progress_text(self.phases, state, images_per_s),
        )
        if self.rank == 0:
            self.link.observe(state.cur_nimg, self.last_metrics)

    def drained(self, state: LoopState) -> bool:
        """Every run.drain_check_every_nimg images, ask the link whether a node is draining; on
        the first yes, a checkpoint now: the restarted run resumes from it and repeats no image
        (a collective: every rank asks at the same iterations)."""
        every = self.cfg.run.drain_check_every_nimg
        if (
            not every
            or self.drain_checkpointed
            or not _crossed(self.prev_nimg, state.cur_nimg, every)
        ):
            return False
        self.drain_checkpointed = self.link.draining()
        if self.drain_checkpointed:
            self.log.event("drain notice: just-in-time checkpoint", state.cur_nimg)
        return self.drain_checkpointed

    def score(self, state: LoopState) -> dict[str, float]:
        """Rank 0 scores R on its held-out images; the broadcast gives every rank the same values
        (a collective: every rank calls this at the same iterations)."""
        refiner = self.session.refiner
        scores = self.scorer(refiner.frozen_forward) if self.scorer is not None else None
        self.scored_nimg = state.cur_nimg
        return cast("dict[str, float]", dist.broadcast_object(scores))  # rank 0's, on every rank

    def report_scores(self, state: LoopState) -> None:
        """Scores with no checkpoint due: Ray Train keeps no metrics without a checkpoint, but
        Tune's TuneReportCallback sees every report. A barrier: every rank reports."""
        self.link.report({"cur_nimg": state.cur_nimg, **self.last_metrics})

    def save_grid(self, state: LoopState) -> None:
        if self.rank != 0 or self.grid_nimg == state.cur_nimg:  # the end may fall on an interval
            return
        self.grid_nimg = state.cur_nimg
        assert self.grid_synthetic is not None and self.grid_real is not None  # read on rank 0
        with torch.no_grad():
            refined = self.session.refiner.frozen_forward(self.grid_synthetic).float()
        grid = grid_array([self.grid_synthetic, refined, self.grid_real], scale=3)
        save_grid(grid, self.run_dir / "grids" / f"grid-{state.cur_nimg:012d}.png")
        self.log.image("grid synthetic | refined | real", grid, state.cur_nimg)

    def _where(self, state: LoopState) -> str:
        return f"in {phases_for(self.cfg.schedule)[state.phase_index].name} by cur_nimg {state.cur_nimg}"

    def checkpoint(self, state: LoopState) -> None:
        if self.collector:  # steps since the last log line: never publish weights they broke
            check_finite(dist.mean_over_ranks(self.collector.means()), self._where(state))
        metrics = {"cur_nimg": state.cur_nimg, **self.last_metrics}
        with tempfile.TemporaryDirectory(prefix="simgan-ckpt-") as tmp:
            self.session.checkpoint().save(tmp, self.cfg)  # a barrier: every rank saves
            self.link.report(metrics, tmp, checkpoint_name(state.cur_nimg))
        self.last_checkpoint_nimg = state.cur_nimg
        self.publish_outputs()

    def publish_outputs(self) -> None:
        """Copy this rank's outputs to the run location (not a collective: each rank's own)."""
        self.published_at = time.monotonic()
        if self.outputs is not None:
            self.log.flush()
            self.outputs.publish()

    def finish(self, state: LoopState) -> None:
        scores = {}
        if self.cfg.score.every_nimg and self.scored_nimg != state.cur_nimg:
            scores = self.score(state)  # the final scores: what a search compares trials on
        if self.collector or scores:
            self.write_metrics(state, "done", scores)
        self.save_grid(state)
        if state.cur_nimg != self.last_checkpoint_nimg:
            self.checkpoint(state)
        elif scores:
            self.report_scores(state)
        self.log.close()
        self.publish_outputs()
