"""`simgan demo`: the main job on the embedded default (local Ray, local shards, CPU), end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simgan_dist.config import load_config
from simgan_dist.data.build import ensure_digit_shards, ensure_photo_digit_shards
from simgan_dist.errors import InputError

NUM_SYNTHETIC = 20_000
SAMPLES_PER_SHARD = 2_000


@dataclass(frozen=True)
class DemoTarget:
    """A bundled S+U task: its preset, the builder of its corpora and their common prefix."""

    preset: str
    prefix: str  # corpora are <prefix>-synth, <prefix>-real-train, <prefix>-real-eval, ...
    ensure_shards: Callable[[Path, int, int, int], None]
    # Comparison arms the builder writes beside the synthetic corpus (same keys and labels).
    randomized: str = ""
    ceiling: str = ""
    what: str = ""


TARGETS = {
    # The appearance gap SimGAN is built for: simulator digits -> real digits on photographs.
    "digits-photo": DemoTarget(
        "digits-photo",
        "digits-photo",
        ensure_photo_digit_shards,
        randomized="digits-photo-synth-randomized",
        ceiling="digits-photo-ceiling",
        what="real digits on photographs",
    ),
    # The documented shape-gap case (docs/shape-gap-digits.md).
    "digits": DemoTarget("digits", "digits", ensure_digit_shards, what="real digits"),
}


def run_demo(
    out: Path,
    shards_root: Path,
    seed: int = 0,
    overrides: list[str] | None = None,
    target: str = "digits-photo",
    preset: str | None = None,
) -> dict:
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.eval.report import headline
    from simgan_dist.refine.ray_pool import refine_shards
    from simgan_dist.train.ray_train import TrainingError, run_training
    from simgan_dist.train.runs import new_run_name, start_run

    if target not in TARGETS:
        raise InputError(f"demo target must be one of {', '.join(TARGETS)}, got {target!r}")
    task = TARGETS[target]
    started = time.perf_counter()
    out = out.resolve()
    shards_root = shards_root.resolve()

    def corpus(suffix: str) -> str:
        return str(shards_root / f"{task.prefix}-{suffix}")

    print(f"[demo] 1/4 {target} shards under {shards_root}", flush=True)
    task.ensure_shards(shards_root, seed, NUM_SYNTHETIC, SAMPLES_PER_SHARD)

    cfg = load_config(
        preset=preset or task.preset,
        overrides=[
            f"data.synthetic={corpus('synth')}",
            f"data.real={corpus('real-train')}",
            f"run.storage_path={out}",
            f"run.name={new_run_name('demo')}",
            f"run.seed={seed}",
            *(overrides or []),
        ],
    )
    cfg, run_dir = start_run(cfg)
    print(
        f"[demo] 2/4 training: {cfg.run.num_workers} DeepSpeed workers on local Ray, "
        f"run directory {run_dir}",
        flush=True,
    )
    try:
        result = run_training(cfg, run_dir)
    except TrainingError as err:
        raise SystemExit(f"[demo] training failed: {err}") from None
    assert result.checkpoint is not None  # a run without error ends with one
    checkpoint = Path(result.checkpoint.path)

    refined_dir = run_dir / "refined"
    print(f"[demo] 3/4 refining {cfg.data.synthetic} -> {refined_dir}", flush=True)
    summary = refine_shards(checkpoint, cfg.data.synthetic, refined_dir)
    print(
        f"[demo]     {summary['num_images']} images at {summary['images_per_s']} images/s",
        flush=True,
    )

    print(f"[demo] 4/4 evaluating on the labeled {task.what} (never used in training)", flush=True)
    report = evaluate_digits(
        cfg.data.synthetic,
        str(refined_dir),
        corpus("real-eval"),
        run_dir / "eval",
        real_train_labeled=corpus("real-train-labeled"),
        seed=seed,
        progress=lambda line: print(f"[demo]     {line}", flush=True),
        randomized=str(shards_root / task.randomized) if task.randomized else None,
        ceiling=str(shards_root / task.ceiling) if task.ceiling else None,
    )
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\n[demo] {headline(report)}  (seed {seed}, {minutes:.1f} min)\n"
        f"[demo] report: {run_dir / 'eval' / 'report.md'}\n"
        f"[demo] grid:   {report['grid']}\n"
        f"[demo] training grids: {run_dir / 'grids'}",
        flush=True,
    )
    return report
