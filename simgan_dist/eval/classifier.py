"""The downstream digit classifier of the S+U protocol: labeled corpora, training by steps, accuracy."""

from __future__ import annotations

import torch
from torch import nn

from simgan_dist.data.reader import load_batch
from simgan_dist.errors import InputError

NUM_CLASSES = 10
BATCH_SIZE = 128


class DigitClassifier(nn.Module):
    """LeNet-sized on purpose: the comparison is between training sets, not architectures, and
    it trains in seconds on a CPU core. in_channels: 1 for grey digits, 3 for colour ones; the
    rest of the net is the same for both."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5),
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


def source_key(meta: dict) -> str:
    """The synthetic sample a refined copy came from (lineage.source_key, written by
    `simgan refine --variants K`); any other sample is its own source."""
    lineage = meta.get("lineage")
    if isinstance(lineage, dict) and isinstance(lineage.get("source_key"), str):
        return lineage["source_key"]
    return meta.get("__key__", "")


def class_labels(metas: list[dict]) -> torch.Tensor:
    """Each sample's "label" as a class index; a ValueError naming the shard URL and key of the
    first sample whose label is missing or not an integer in 0..NUM_CLASSES-1 (a label of 42
    or [3] would index past the classifier's outputs)."""
    for meta in metas:
        label = meta.get("label")
        if type(label) is not int or not 0 <= label < NUM_CLASSES:  # bool is no label
            where = f"{meta.get('__url__', '?')} key {meta.get('__key__', '?')}"
            found = "no 'label'" if "label" not in meta else f"label {label!r}"
            raise InputError(f"{where}: {found}, need an integer class 0..{NUM_CLASSES - 1}")
    return torch.tensor([meta["label"] for meta in metas])


def labeled_tensors(
    location: str, by_source: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images in [-1, 1], labels from each sample's json, and keys, for a labeled corpus;
    by_source=True: each sample's source_key instead of its own key."""
    x, metas = load_batch(location)
    y = class_labels(metas)
    keys = [source_key(m) if by_source else m.get("__key__", "") for m in metas]
    return x, y, keys


def steps_for_epochs(num_images: int, epochs: int, batch_size: int = BATCH_SIZE) -> int:
    """Optimizer steps of `epochs` passes over num_images (the last batch of a pass may be short)."""
    return epochs * -(-num_images // batch_size)


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, seed: int, num_steps: int, batch_size: int = BATCH_SIZE
) -> DigitClassifier:
    """Adam 1e-3 for num_steps steps over reshuffled passes of (x, y), a (N, C, 28, 28) batch of
    any channel count. Counted in steps, not epochs, so arms of different sizes (20,000
    synthetic, 3,000 real) train equally long."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier(x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    step = 0
    while step < num_steps:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == num_steps:
                break
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())
