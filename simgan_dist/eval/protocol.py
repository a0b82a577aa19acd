"""The S+U protocol on digits: one classifier trained on synthetic, refined, other image arms and
real-labeled images at equal steps, tested on labeled real digits that no training reads."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from simgan_dist.errors import InputError
from simgan_dist.eval.arms import Arm, arm_corpora, check_shapes, load_arms
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
GRID_IMAGES = 16  # images per grid row: the first synthetic samples, the same keys in every arm
# Preservation judges: the arm whose classifiers read the labels -> (report key for the refined
# images, report key for the judge's own images). Two judges, because on an appearance-gap
# target a classifier trained on white-on-black digits fails on any realistic image whatever its
# label: its figure mixes appearance with label change. The randomized arm's classifier has seen
# every colour and texture, so it reads only the digit.
JUDGES = {
    "synthetic": ("refined", "synthetic"),
    "randomized": ("refined_by_randomized", "randomized"),
}
# Judges trained apart from the arms, for JUDGE_EPOCH_FACTOR times the arms' epochs (one
# classifier, the first seed): the randomized arm's own classifiers (4 epochs) misread ~4% of
# the very images they trained on (low-contrast draws), so they cannot tell 97% kept labels
# from 99%; at 24 epochs the judge reads 99.9% of its own images. Costs as much as 6 fits. The
# synthetic arm's classifiers already read 99.8% of theirs and stay per-seed judges.
CONVERGED_JUDGES = ("randomized",)
JUDGE_EPOCH_FACTOR = 6

Progress = Callable[[str], None]


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
    *,
    randomized: str | None = None,
    ceiling: str | None = None,
    arms: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The image arms (synthetic, refined and, when given, randomized: the simulator's
    domain-randomized mode, ceiling: the synthetic digits composited on the target's own
    photographs, any extra `arms`, name -> corpus, and with randomized the mixed arm: half
    the samples refined, half randomized, arms.mixed_arm) and, with real_train_labeled, the
    real-data oracle: num_seeds classifiers each, seed i of every arm starting from the same
    weights, all trained for the synthetic arm's step count. Every arm but synthetic must hold
    copies of the synthetic samples (same keys, labels kept). Writes report.json, report.md,
    grid.png (synthetic | refined | real) and grid_<arm>.png per arm (and grid_real.png).

    Beside accuracy on real_eval: the paired differences refined - synthetic, refined - randomized
    and mixed - randomized with their 95% intervals, each arm's share of the oracle gap, annotation
    preservation and realism (two-sample accuracy against real images: the labeled real training
    images when given, else the eval images' pixels; their labels are never used for it) of every
    image arm. Preservation is read by two judges: the synthetic arm's classifiers on the refined
    images against their kept labels (as always), and, with a randomized corpus, one classifier
    trained on it for 6x the epochs (it reads ~99.9% of its own images; the arm's own classifiers
    ~96%). On an appearance-gap target (digits on photographs) a classifier trained on
    white-on-black digits fails on any realistic image whatever its label, so the first figure
    conflates appearance with label change; the randomized classifier has seen every colour and
    texture and reads only the digit. real_eval_role "validation" says in the report that real_eval
    is a validation split (simgan screen), not the eval set."""
    if num_seeds < 2:
        raise InputError(f"num_seeds must be >= 2 for a confidence interval, got {num_seeds}")
    say = progress or (lambda _: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_arms = load_arms(arm_corpora(synthetic, refined, randomized, ceiling, arms))
    syn, ref = image_arms["synthetic"], image_arms["refined"]
    x_real, y_real, _ = labeled_tensors(real_eval)
    oracle_data = labeled_tensors(real_train_labeled) if real_train_labeled else None
    check_shapes(
        {a.location: a.train_x for a in image_arms.values()}
        | {real_eval: x_real}
        | ({real_train_labeled: oracle_data[0]} if oracle_data and real_train_labeled else {})
    )

    num_steps = steps_for_epochs(len(syn.train_x), epochs)
    seeds = [seed + i for i in range(num_seeds)]
    acc: dict[str, list[float]] = {name: [] for name in [*image_arms, "oracle"]}
    judges = {j: keys for j, keys in JUDGES.items() if j in image_arms}
    preserved: dict[str, list[float]] = {key: [] for keys in judges.values() for key in keys}
    converged = [j for j in CONVERGED_JUDGES if j in judges]
    # Classifier fits, each about as long: one per arm (and the oracle) per seed, one realism
    # classifier per image arm, and a converged judge as JUDGE_EPOCH_FACTOR of them.
    num_fits = num_seeds * (len(image_arms) + (oracle_data is not None)) + len(image_arms)
    num_fits += len(converged) * JUDGE_EPOCH_FACTOR
    with progress_bar(num_fits, "eval", unit="fit") as bar:
        for i, s in enumerate(seeds):
            for arm in image_arms.values():
                say(f"classifier seed {s} ({i + 1}/{num_seeds}): {arm.name}")
                model = train_classifier(arm.train_x, arm.train_y, s, num_steps)
                acc[arm.name].append(accuracy(model, x_real, y_real))
                if arm.name in judges and arm.name not in converged:
                    _judge(model, judges[arm.name], arm, ref, syn.train_y, preserved)
                bar.update(1)
            if oracle_data is not None:
                say(f"classifier seed {s} ({i + 1}/{num_seeds}): real-data oracle")
                x_o, y_o, _ = oracle_data
                oracle = train_classifier(x_o, y_o, s, num_steps)
                acc["oracle"].append(accuracy(oracle, x_real, y_real))
                bar.update(1)

        for name in converged:
            say(f"preservation judge: {name} classifier, {JUDGE_EPOCH_FACTOR * epochs} epochs")
            arm = image_arms[name]
            judge_steps = steps_for_epochs(len(arm.train_x), JUDGE_EPOCH_FACTOR * epochs)
            model = train_classifier(arm.train_x, arm.train_y, seeds[0], judge_steps)
            _judge(model, judges[name], arm, ref, syn.train_y, preserved)
            bar.update(JUDGE_EPOCH_FACTOR)

        say("realism: two-sample classifiers")
        real_pixels = oracle_data[0] if oracle_data is not None else x_real
        real_sample = _subsample(real_pixels, REALISM_IMAGES, seed)
        realism = {}
        for arm in image_arms.values():
            x_sample = _subsample(arm.first, REALISM_IMAGES, seed)
            realism[f"{arm.name}_vs_real"] = two_sample_accuracy(
                x_sample, real_sample, REALISM_STEPS, seed
            )
            bar.update(1)
    report = _report(acc, preserved, image_arms)
    report |= {
        "realism_acc": realism,
        "seeds": seeds,
        "num_steps": num_steps,
        "epochs": epochs,
        # the judges trained apart from the arms (one classifier each, seed `seeds[0]`)
        "converged_judges": {name: JUDGE_EPOCH_FACTOR * epochs for name in converged},
        "num_train": len(syn.train_y),
        "num_refined_train": len(ref.train_y),  # > num_train with `refine --variants K`
        "num_arm_train": {name: len(arm.train_y) for name, arm in image_arms.items()},
        "num_oracle_train": len(oracle_data[1]) if oracle_data is not None else 0,
        "num_real_eval": len(x_real),
        "synthetic": synthetic,
        "refined": refined,
        "arms": {name: arm.location for name, arm in image_arms.items()},
        "real_eval": real_eval,
        "real_train_labeled": real_train_labeled or "",
        "real_eval_role": real_eval_role,
    }
    report |= _grids(image_arms, x_real, out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(markdown_report(report))
    return report


def _judge(
    model: torch.nn.Module,
    keys: tuple[str, str],
    own: Arm,
    refined: Arm,
    labels: torch.Tensor,
    preserved: dict[str, list[float]],
) -> None:
    """Append the judge's share of kept labels on the refined images and on its own images."""
    on_refined, on_own = keys
    preserved[on_refined].append(accuracy(model, refined.first, labels))
    preserved[on_own].append(accuracy(model, own.first, labels))


def _report(
    acc: dict[str, list[float]], preserved: dict[str, list[float]], image_arms: dict[str, Arm]
) -> dict[str, Any]:
    """Accuracy per arm, the paired differences, gap closed and preservation, as report keys."""
    minus_synthetic = {
        name: paired_difference(acc["synthetic"], acc[name])
        for name in image_arms
        if name != "synthetic"
    }
    gaps: dict[str, Any] = {name: None for name in minus_synthetic}
    if acc["oracle"]:
        syn_mean, ora_mean = statistics.mean(acc["synthetic"]), statistics.mean(acc["oracle"])
        for name, diff in minus_synthetic.items():
            gaps[name] = gap_closed(syn_mean, statistics.mean(acc[name]), ora_mean, diff)
    report: dict[str, Any] = {
        "accuracy": {name: _arm(v) for name, v in acc.items() if v},
        "refined_minus_synthetic": minus_synthetic["refined"].to_dict(),
        "gap_closed": gaps["refined"],
        "arm_minus_synthetic": {name: d.to_dict() for name, d in minus_synthetic.items()},
        "gap_closed_by_arm": gaps,
        "preservation": {
            **{key: statistics.mean(values) for key, values in preserved.items()},
            "per_seed": preserved,
        },
    }
    if "randomized" in image_arms:
        diff = paired_difference(acc["randomized"], acc["refined"])
        report["refined_minus_randomized"] = diff.to_dict()
    if "mixed" in image_arms:
        diff = paired_difference(acc["randomized"], acc["mixed"])
        report["mixed_minus_randomized"] = diff.to_dict()
    return report


def _grids(image_arms: dict[str, Arm], x_real: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """grid.png (rows synthetic | refined | real, as always) and one row per arm, grid_<arm>.png,
    of the same synthetic samples, so the arms compare image by image."""
    rows = {name: arm.first[:GRID_IMAGES] for name, arm in image_arms.items()}
    rows["real"] = x_real[:GRID_IMAGES]
    grid = save_grid([rows["synthetic"], rows["refined"], rows["real"]], out_dir / "grid.png", 3)
    grids = {
        name: str(save_grid([row], out_dir / f"grid_{name}.png", 3)) for name, row in rows.items()
    }
    return {"grid": str(grid), "grids": grids}
