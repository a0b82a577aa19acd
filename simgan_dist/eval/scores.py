"""Label-free quality scores of a refiner on held-out images: realism, fidelity, and their mix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from simgan_dist.config import Config
from simgan_dist.data.catalog import data_location
from simgan_dist.data.reader import load_batch
from simgan_dist.errors import InputError
from simgan_dist.eval.classifier import (
    accuracy,
    class_labels,
    labeled_tensors,
    steps_for_epochs,
    train_classifier,
)

REFINE_CHUNK = 256  # images per refiner forward while scoring: bounds memory on big images


class TwoSampleClassifier(nn.Module):
    """A small CNN that tells refined from real. Deliberately weak next to D, and trained from
    scratch each time: it measures how separable the two sets are now, not what D memorized."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4),  # any image size (digits, gaze, hand) -> 32x4x4 features
            nn.Flatten(),
            nn.Linear(32 * 16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def two_sample_accuracy(
    first: torch.Tensor, second: torch.Tensor, steps: int, seed: int, batch_size: int = 64
) -> float:
    """Held-out accuracy of a fresh classifier trained to tell `first` (label 1) from `second`
    (label 0). Each set's first half trains it, the second half tests it; 0.5 = indistinguishable.
    Runs under its own RNG so that scoring never shifts the training run's random stream."""
    n = min(len(first), len(second)) // 2
    if n < 2:
        raise InputError(f"two_sample_accuracy: need at least 4 images per set, got {2 * n}")
    x_train = torch.cat([first[:n], second[:n]]).float()
    y_train = torch.cat([torch.ones(n), torch.zeros(n)])
    x_test = torch.cat([first[n : 2 * n], second[n : 2 * n]]).float()
    y_test = torch.cat([torch.ones(n), torch.zeros(n)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TwoSampleClassifier(first.shape[1]).to(first.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x_train), (batch_size,), generator=generator)
            logits = model(x_train[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, y_train[idx].to(logits.device)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = (model(x_test) > 0).float().cpu()
    return float((predicted == y_test).float().mean())


def realism(two_sample_acc: float) -> float:
    """1 when refined and real are indistinguishable (accuracy 0.5), 0 when perfectly separable.
    Accuracy below 0.5 is sampling noise around chance, so it counts as chance."""
    return 2.0 * (1.0 - max(two_sample_acc, 0.5))


def fidelity_l1(refined: torch.Tensor, synthetic: torch.Tensor) -> float:
    """Mean |R(x) - x| per pixel in [-1, 1] units: how far refinement moved the image, hence how
    much of what the annotation describes it may have changed. Always on raw pixels (psi =
    identity), so trials that search over psi are compared on the same scale."""
    return float((refined.float() - synthetic.float()).abs().mean())


def _tensors(location: str, limit: int, cfg: Config) -> tuple[torch.Tensor, list[dict]]:
    model = cfg.model
    return load_batch(
        data_location(cfg, location),
        image_shape=(model.image_channels, model.image_height, model.image_width),
        allow_pipe=cfg.data.allow_pipe_urls,
        limit=limit,
    )


@dataclass
class Scorer:
    """Held-out images loaded once; call it with the refiner's forward to get the scores.

    objective = realism - fidelity_weight * fidelity_l1 (higher is better), or, with
    score.objective "downstream", the accuracy on score.real_labeled of a digit classifier
    trained on the refined held-out synthetic images and their synthetic labels.
    """

    cfg: Config
    synthetic: torch.Tensor
    real: torch.Tensor
    synthetic_labels: torch.Tensor | None = None
    labeled_real: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device) -> Scorer:
        score = cfg.score
        synthetic, metas = _tensors(score.synthetic or cfg.data.synthetic, score.num_images, cfg)
        real, _ = _tensors(score.real or cfg.data.real, score.num_images, cfg)
        labels = labeled_real = None
        if score.objective == "downstream":
            try:
                labels = class_labels(metas)
            except ValueError as err:
                raise InputError(f"score.objective downstream: held-out synthetic {err}") from None
            x_val, y_val, _ = labeled_tensors(score.real_labeled)
            labeled_real = (x_val, y_val)
        return cls(cfg, synthetic.to(device), real.to(device), labels, labeled_real)

    @torch.no_grad()
    def refine(self, refine_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [
                refine_fn(self.synthetic[i : i + REFINE_CHUNK]).float()
                for i in range(0, len(self.synthetic), REFINE_CHUNK)
            ]
        )

    def __call__(self, refine_fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        score = self.cfg.score
        refined = self.refine(refine_fn)
        acc = two_sample_accuracy(refined, self.real, score.classifier_steps, self.cfg.run.seed)
        scores = {
            "realism_acc": acc,
            "realism": realism(acc),
            "fidelity_l1": fidelity_l1(refined, self.synthetic),
        }
        scores["objective"] = scores["realism"] - score.fidelity_weight * scores["fidelity_l1"]
        if self.labeled_real is not None and self.synthetic_labels is not None:
            with torch.random.fork_rng(devices=[]):
                steps = steps_for_epochs(len(refined), score.downstream_epochs)
                model = train_classifier(
                    refined.cpu(), self.synthetic_labels, self.cfg.run.seed, steps
                )
            scores["downstream_acc"] = accuracy(model, *self.labeled_real)
            scores["objective"] = scores["downstream_acc"]
        return scores
