"""Screening one setting fast: Algorithm 1 in one process (no Ray, no DeepSpeed), the synthetic
corpus refined in memory, then the S+U protocol on a labeled *validation* split.

This is how docs/results.md's ablation table is made: `simgan screen` runs the very loop, networks
and losses that `simgan train` runs on its workers (train.loop with plain PyTorch updaters, as in
the unit tests), on the whole global batch in one process. What it leaves out is what the
distributed path adds: sharded streaming, DeepSpeed, checkpoints. Its numbers choose settings; a
setting is then trained for real and reported on the held-out eval digits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch

from simgan_dist.config import Config, config_to_yaml
from simgan_dist.data.catalog import data_location
from simgan_dist.data.reader import load_arrays, load_batch
from simgan_dist.errors import InputError
from simgan_dist.eval.protocol import evaluate_digits
from simgan_dist.io.sample_fields import kept_annotations
from simgan_dist.io.shardio import write_shards
from simgan_dist.model.networks import Refiner
from simgan_dist.model.pixels import to_uint8
from simgan_dist.refine.shard import noise_seed, variant_key
from simgan_dist.seeds import seed_for
from simgan_dist.train.loop import LoopState, Phase, phases_for
from simgan_dist.train.session import TrainingSession

REFINE_BATCH = 500  # images per forward when refining the corpus in memory


class MemoryBatchSource:
    """Uniform draws with replacement from in-memory corpora (one seeded generator): the
    in-process stand-in for the shard streams, which draw without replacement per epoch."""

    def __init__(self, synthetic: torch.Tensor, real: torch.Tensor, batch: int, seed: int) -> None:
        self.synthetic, self.real, self.batch = synthetic, real, batch
        self.gen = torch.Generator().manual_seed(seed_for(seed, "memory-batches"))

    def _draw(self, pool: torch.Tensor) -> torch.Tensor:
        return pool[torch.randint(len(pool), (self.batch,), generator=self.gen)]

    def next_synthetic(self) -> torch.Tensor:
        return self._draw(self.synthetic)

    def next_real(self) -> torch.Tensor:
        return self._draw(self.real)


def _images(location: str, cfg: Config) -> tuple[torch.Tensor, list[dict]]:
    return load_batch(
        data_location(cfg, location),
        allow_pipe=cfg.data.allow_pipe_urls,
        on_bad_sample=cfg.data.on_bad_sample,
    )


RefineFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _refined_samples(
    refine: RefineFn, x_syn: torch.Tensor, metas: list[dict], num_variants: int
) -> Iterator[tuple[str, Any, dict]]:
    """(key, uint8 image, json) of every refined copy, as `simgan refine --variants` names them."""
    for variant in range(num_variants):
        generator = torch.Generator().manual_seed(noise_seed("screen", variant))
        refined = to_uint8(refine(x_syn, generator))
        for meta, img in zip(metas, refined, strict=True):
            key = meta["__key__"]
            annotations = kept_annotations(meta)
            if num_variants > 1:
                annotations["lineage"] = {"source_key": key, "variant": variant}
            yield variant_key(key, variant, num_variants), img, annotations


def _check_images(x_syn: torch.Tensor, cfg: Config) -> None:
    shape = tuple(x_syn.shape[1:])
    if shape != (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width):
        raise InputError(f"{cfg.data.synthetic}: images are {shape}, the model expects otherwise")


def _schedule_images(cfg: Config) -> int:
    return sum(phase.num_images for phase in phases_for(cfg.schedule))


def _train_refiner(
    cfg: Config, x_syn: torch.Tensor, x_real: torch.Tensor, say: Callable[[str], None]
) -> Refiner:
    """R and D trained on cfg in this process (plain PyTorch updaters); returns R."""
    batch_source = MemoryBatchSource(x_syn, x_real, cfg.schedule.batch_size, cfg.run.seed)
    # The same initial weights, optimizers and buffer as a Ray run of this config.
    session = TrainingSession.build(cfg, batch_source=batch_source)
    total = _schedule_images(cfg)
    next_line = [0]

    def log(state: LoopState, phase: Phase, metrics: dict[str, float]) -> None:
        if state.cur_nimg >= next_line[0]:
            next_line[0] += max(total // 20, 1)
            shown = " ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
            say(f"{phase.name} {state.cur_nimg}/{total} images: {shown}")

    session.train(after_iteration=log)
    return cast("Refiner", session.refiner.module)


def split_validation(validation: str, out_dir: Path) -> tuple[str, str]:
    """The labeled validation corpus cut in two by sample order: (oracle half, scoring half),
    written under out_dir. The real-data oracle trains on the first half and every arm is
    scored on the second, so gap closed has an oracle that never saw the images it is scored on
    (the eval set stays unread)."""
    images, metas = load_arrays(validation)
    half = len(metas) // 2
    if half < 10:
        raise InputError(f"{validation}: {len(metas)} samples are too few to split for an oracle")
    parts = []
    for name, lo, hi in (("validation-oracle", 0, half), ("validation-test", half, len(metas))):
        samples = (
            (m["__key__"], img, kept_annotations(m))
            for img, m in zip(images[lo:hi], metas[lo:hi], strict=True)
        )
        write_shards(samples, out_dir / name, "val", samples_per_shard=5000)
        parts.append(str(out_dir / name))
    return parts[0], parts[1]


def screen(
    cfg: Config,
    validation: str,
    out_dir: str | Path,
    num_seeds: int = 3,
    epochs: int = 4,
    progress: Callable[[str], None] | None = None,
    num_variants: int = 1,
    *,
    randomized: str | None = None,
    ceiling: str | None = None,
    with_oracle: bool = False,
) -> dict[str, Any]:
    """Train R and D on cfg in this process, refine cfg.data.synthetic, and score it against
    `validation` (labeled real images that are not the eval set). Writes out_dir/config.yaml,
    out_dir/refined/ (shards with the synthetic keys and labels; num_variants copies of each
    from R's noise input, named as `simgan refine --variants` names them) and the eval report.
    randomized / ceiling: comparison arms (eval.protocol); with_oracle: split_validation."""
    if num_variants > 1 and cfg.model.refiner_noise_channels == 0:
        raise InputError("variants > 1 needs model.refiner_noise_channels > 0")
    say = progress or (lambda _: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config_to_yaml(cfg))
    x_syn, metas = _images(cfg.data.synthetic, cfg)
    x_real, _ = _images(cfg.data.real, cfg)
    _check_images(x_syn, cfg)

    started = time.perf_counter()
    r_net = _train_refiner(cfg, x_syn, x_real, say)
    train_s = time.perf_counter() - started

    say(f"trained in {train_s:.0f} s; refining {len(x_syn)} images x {num_variants}")
    refine: RefineFn = lambda x, g: r_net.refine(x, g, REFINE_BATCH)  # noqa: E731
    samples = _refined_samples(refine, x_syn, metas, num_variants)
    write_shards(samples, out_dir / "refined", "refined", samples_per_shard=5000)
    scored_on, oracle = validation, None
    if with_oracle:
        oracle, scored_on = split_validation(validation, out_dir)
    report = evaluate_digits(
        cfg.data.synthetic,
        str(out_dir / "refined"),
        scored_on,
        out_dir,
        real_train_labeled=oracle,
        seed=cfg.run.seed,
        epochs=epochs,
        num_seeds=num_seeds,
        progress=say,
        real_eval_role="validation",
        randomized=randomized,
        ceiling=ceiling,
    )
    report["screen"] = {"train_s": round(train_s, 1), "num_images": _schedule_images(cfg),
                        "num_variants": num_variants}  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report
