"""The S+U protocol on digits: the same classifier trained on synthetic vs refined, tested on real."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simgan_dist.data.reader import load_arrays
from simgan_dist.eval.grids import save_grid
from simgan_dist.model.pixels import to_batch

NUM_CLASSES = 10


class DigitClassifier(nn.Module):
    """LeNet-sized on purpose: the comparison is between training sets, not architectures, and
    it trains in seconds on a CPU core."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def labeled_tensors(location: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images in [-1, 1], labels from each sample's json, and keys, for a labeled corpus."""
    images, metas = load_arrays(location)
    missing = [m.get("__key__", "?") for m in metas if "label" not in m]
    if missing:
        raise ValueError(
            f"{location}: {len(missing)} samples have no 'label' (first: {missing[0]})"
        )
    x = to_batch(images)
    y = torch.tensor([int(m["label"]) for m in metas])
    return x, y, [m.get("__key__", "") for m in metas]


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, batch_size: int = 128
) -> DigitClassifier:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum(
        int((model(x[i : i + 512]).argmax(1) == y[i : i + 512]).sum())
        for i in range(0, len(x), 512)
    )
    return correct / len(x)


def evaluate_digits(
    synthetic: str,
    refined: str,
    real_eval: str,
    out_dir: str | Path,
    seed: int = 0,
    epochs: int = 4,
    num_seeds: int = 3,
) -> dict[str, Any]:
    """Train on synthetic and on refined (same keys and labels), report accuracy on real digits.
    num_seeds classifiers per training set: the mean is what the report compares."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_syn, y_syn, keys_syn = labeled_tensors(synthetic)
    x_ref, y_ref, keys_ref = labeled_tensors(refined)
    x_real, y_real, _ = labeled_tensors(real_eval)
    # Refined shards keep keys and labels; align by key so both sets hold the same samples.
    position = {k: i for i, k in enumerate(keys_ref)}
    missing = [k for k in keys_syn if k not in position]
    if missing:
        raise ValueError(
            f"{refined}: {len(missing)} of {len(keys_syn)} synthetic samples have "
            f"no refined copy (first key: {missing[0]})"
        )
    order = [position[k] for k in keys_syn]
    x_ref, y_ref = x_ref[order], y_ref[order]
    changed = (y_syn != y_ref).nonzero().flatten().tolist()
    if changed:
        raise ValueError(
            f"{refined}: {len(changed)} refined samples changed their label "
            f"(first key: {keys_syn[changed[0]]}); annotations must be kept"
        )

    seeds = [seed + i for i in range(num_seeds)]
    acc_syn = [accuracy(train_classifier(x_syn, y_syn, s, epochs), x_real, y_real) for s in seeds]
    acc_ref = [accuracy(train_classifier(x_ref, y_ref, s, epochs), x_real, y_real) for s in seeds]
    grid = save_grid([x_syn[:16], x_ref[:16], x_real[:16]], out_dir / "grid.png", scale=3)
    report = {
        "synthetic_accuracy": statistics.mean(acc_syn),
        "refined_accuracy": statistics.mean(acc_ref),
        "synthetic_accuracy_per_seed": acc_syn,
        "refined_accuracy_per_seed": acc_ref,
        "seeds": seeds,
        "epochs": epochs,
        "num_train": len(keys_syn),
        "num_real_eval": len(x_real),
        "synthetic": synthetic,
        "refined": refined,
        "real_eval": real_eval,
        "grid": str(grid),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    def fmt(values: list[float]) -> str:
        spread = np.std(values) if len(values) > 1 else 0.0
        return f"{100 * np.mean(values):.2f}% (± {100 * spread:.2f}, {len(values)} seeds)"

    delta = 100 * (report["refined_accuracy"] - report["synthetic_accuracy"])
    return (
        "# S+U evaluation: digits\n\n"
        "A digit classifier trained on each set, tested on labeled real digits no training "
        "run ever read.\n\n"
        "| trained on | accuracy on real |\n|---|---|\n"
        f"| synthetic | {fmt(report['synthetic_accuracy_per_seed'])} |\n"
        f"| refined | {fmt(report['refined_accuracy_per_seed'])} |\n\n"
        f"Refined minus synthetic: {delta:+.2f} points. Training images: {report['num_train']}; "
        f"real evaluation images: {report['num_real_eval']}; epochs: {report['epochs']}.\n\n"
        "Rows: synthetic, refined, real.\n\n![grid](grid.png)\n"
    )
