"""The S+U protocol on digits: one classifier trained on synthetic, refined and real-labeled
images at equal steps, tested on labeled real digits that no training reads."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from simgan_dist.eval.classifier import (
    accuracy,
    labeled_tensors,
    steps_for_epochs,
    train_classifier,
)
from simgan_dist.eval.grids import save_grid
from simgan_dist.eval.paired import gap_closed, mean_interval, paired_difference
from simgan_dist.eval.report import markdown_report
from simgan_dist.eval.scores import two_sample_accuracy
from simgan_dist.io.progress import progress_bar

REALISM_STEPS = 400  # Adam steps of each two-sample classifier (batch 64)
REALISM_IMAGES = 2000  # per set, at most; half train the two-sample classifier, half test it

Progress = Callable[[str], None]


def _aligned_refined(
    refined: str, keys_syn: list[str], y_syn: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first refined copy of each synthetic sample in the synthetic corpus's order, every
    refined copy, their labels): every synthetic key at least once and every label kept. A
    corpus from `refine --variants K` has K copies of each; others have one."""
    x_all, y_all, sources = labeled_tensors(refined, by_source=True)
    syn_index = {k: i for i, k in enumerate(keys_syn)}
    first: dict[str, int] = {}
    for i, k in enumerate(sources):
        first.setdefault(k, i)
    missing = [k for k in keys_syn if k not in first]
    if missing:
        raise ValueError(
            f"{refined}: {len(missing)} of {len(keys_syn)} synthetic samples have "
            f"no refined copy (first key: {missing[0]})"
        )
    strangers = [k for k in sources if k not in syn_index]
    if strangers:
        raise ValueError(
            f"{refined}: {len(strangers)} refined samples come from no synthetic sample "
            f"(first key: {strangers[0]})"
        )
    expected = y_syn[[syn_index[k] for k in sources]]
    changed = (expected != y_all).nonzero().flatten().tolist()
    if changed:
        raise ValueError(
            f"{refined}: {len(changed)} refined samples changed their label "
            f"(first key: {sources[changed[0]]}); annotations must be kept"
        )
    return x_all[[first[k] for k in keys_syn]], x_all, y_all


def _arm(values: list[float]) -> dict[str, Any]:
    return {"per_seed": values, **mean_interval(values)}


def _subsample(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order[:limit]]


def evaluate_digits(
    synthetic: str,
    refined: str,
    real_eval: str,
    out_dir: str | Path,
    real_train_labeled: str | None = None,
    seed: int = 0,
    epochs: int = 4,
    num_seeds: int = 5,
    progress: Progress | None = None,
    real_eval_role: str = "eval",
) -> dict[str, Any]:
    """Synthetic, refined (same keys, labels kept) and, with real_train_labeled, the real-data
    oracle: num_seeds classifiers each, seed i of every arm starting from the same weights, all
    trained for the synthetic arm's step count. Writes report.json, report.md and grid.png.

    Beside accuracy on real_eval: the paired refined-minus-synthetic difference with its 95%
    interval, gap closed against the oracle, annotation preservation (the synthetic arm's
    classifiers on the refined images against their kept labels) and realism (two-sample
    accuracy against real images: the labeled real training images when given, else the
    eval images' pixels; their labels are never used for it). real_eval_role "validation" says
    in the report that real_eval is a validation split (simgan screen), not the eval set."""
    if num_seeds < 2:
        raise ValueError(f"num_seeds must be >= 2 for a confidence interval, got {num_seeds}")
    say = progress or (lambda _: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_syn, y_syn, keys_syn = labeled_tensors(synthetic)
    x_ref, x_ref_all, y_ref_all = _aligned_refined(refined, keys_syn, y_syn)
    x_real, y_real, _ = labeled_tensors(real_eval)
    oracle_data = labeled_tensors(real_train_labeled) if real_train_labeled else None

    num_steps = steps_for_epochs(len(x_syn), epochs)
    seeds = [seed + i for i in range(num_seeds)]
    acc: dict[str, list[float]] = {"synthetic": [], "refined": [], "oracle": []}
    preserved: dict[str, list[float]] = {"refined": [], "synthetic": []}
    # Classifier fits, each about as long: 2 or 3 arms per seed, then 2 realism classifiers.
    num_fits = num_seeds * (3 if oracle_data is not None else 2) + 2
    with progress_bar(num_fits, "eval", unit="fit") as bar:
        for i, s in enumerate(seeds):
            say(f"classifier seed {s} ({i + 1}/{num_seeds}): synthetic")
            model = train_classifier(x_syn, y_syn, s, num_steps)
            acc["synthetic"].append(accuracy(model, x_real, y_real))
            preserved["refined"].append(accuracy(model, x_ref, y_syn))
            preserved["synthetic"].append(accuracy(model, x_syn, y_syn))
            bar.update(1)
            say(f"classifier seed {s} ({i + 1}/{num_seeds}): refined")
            acc["refined"].append(
                accuracy(train_classifier(x_ref_all, y_ref_all, s, num_steps), x_real, y_real)
            )
            bar.update(1)
            if oracle_data is not None:
                say(f"classifier seed {s} ({i + 1}/{num_seeds}): real-data oracle")
                x_o, y_o, _ = oracle_data
                oracle = train_classifier(x_o, y_o, s, num_steps)
                acc["oracle"].append(accuracy(oracle, x_real, y_real))
                bar.update(1)

        say("realism: two-sample classifiers")
        real_pixels = oracle_data[0] if oracle_data is not None else x_real
        real_sample = _subsample(real_pixels, REALISM_IMAGES, seed)
        realism = {}
        for name, x in (("synthetic_vs_real", x_syn), ("refined_vs_real", x_ref)):
            x_sample = _subsample(x, REALISM_IMAGES, seed)
            realism[name] = two_sample_accuracy(x_sample, real_sample, REALISM_STEPS, seed)
            bar.update(1)
    difference = paired_difference(acc["synthetic"], acc["refined"])
    report: dict[str, Any] = {
        "accuracy": {name: _arm(v) for name, v in acc.items() if v},
        "refined_minus_synthetic": difference.to_dict(),
        "gap_closed": None,
        "preservation": {
            "refined": statistics.mean(preserved["refined"]),
            "synthetic": statistics.mean(preserved["synthetic"]),
            "per_seed": preserved,
        },
        "realism_acc": realism,
        "seeds": seeds,
        "num_steps": num_steps,
        "epochs": epochs,
        "num_train": len(keys_syn),
        "num_refined_train": len(y_ref_all),  # > num_train with `refine --variants K`
        "num_oracle_train": len(oracle_data[1]) if oracle_data is not None else 0,
        "num_real_eval": len(x_real),
        "synthetic": synthetic,
        "refined": refined,
        "real_eval": real_eval,
        "real_train_labeled": real_train_labeled or "",
        "real_eval_role": real_eval_role,
    }
    if acc["oracle"]:
        syn, ref, ora = (statistics.mean(acc[k]) for k in ("synthetic", "refined", "oracle"))
        report["gap_closed"] = gap_closed(syn, ref, ora, difference)
    grid = save_grid([x_syn[:16], x_ref[:16], x_real[:16]], out_dir / "grid.png", scale=3)
    report["grid"] = str(grid)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(markdown_report(report))
    return report
