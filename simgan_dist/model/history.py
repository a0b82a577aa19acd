"""The paper's history buffer of earlier refined images, and D's mixed fake mini-batch."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from simgan_dist.errors import InputError


class History(Protocol):
    """What the loop needs of a history buffer: HistoryBuffer (one rank's), or the buffer spread
    over all ranks (train.global_history.GlobalHistoryBuffer), which has the same methods."""

    @property
    def num_filled(self) -> int: ...

    def sample(self, num_images: int) -> Tensor: ...

    def push(self, images: Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class HistoryBuffer:
    """Fixed-capacity store of refined images that D keeps seeing after R has moved on.

    Showing D old refinements stops R and D from chasing each other (R re-introducing artifacts
    D has forgotten). Semantics, all randomness from one seeded torch.Generator:

    - push: while not full, images go into the next free slots, in order; once full, each
      further image replaces a random slot, the slots of one push distinct and uniform (the
      paper's "b/2 random buffer slots replaced"). Two public implementations never filled
      their buffer (an np.append result was discarded); tests check this one does.
    - sample: uniform over the filled slots, without replacement within one draw when
      num_images <= num_filled, with replacement otherwise.

    Storage is preallocated on CPU as float32 (capacity, C, H, W): capacity * C * H * W * 4
    bytes, e.g. 197 MB for B = 25,600 gaze images (1x35x55), 5 GB for the hand preset (224x224).
    In data-parallel training each rank holds its own buffer (its share of B, its own seed).
    """

    def __init__(self, capacity: int, image_shape: tuple[int, int, int], seed: int) -> None:
        if capacity < 1:
            raise InputError(f"capacity must be >= 1 (pass no buffer to disable), got {capacity}")
        if len(image_shape) != 3:
            raise InputError(f"image_shape must be (C, H, W), got {image_shape}")
        self.capacity = capacity
        self.image_shape = tuple(image_shape)
        self._storage = torch.zeros((capacity, *self.image_shape), dtype=torch.float32)
        self._num_filled = 0
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def num_filled(self) -> int:
        return self._num_filled

    def sample(self, num_images: int) -> Tensor:
        """num_images images (a new CPU tensor), uniform over the filled slots."""
        if self._num_filled == 0:
            raise RuntimeError("cannot sample from an empty history buffer")
        if num_images <= self._num_filled:
            idx = torch.randperm(self._num_filled, generator=self._gen)[:num_images]
        else:
            idx = torch.randint(0, self._num_filled, (num_images,), generator=self._gen)
        return self._storage[idx]  # advanced indexing copies: callers cannot alias the buffer

    def push(self, images: Tensor) -> None:
        """Store a detached CPU float32 copy of images (N, C, H, W); see the class doc."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise InputError(
                f"expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(images.shape)}"
            )
        images = images.detach().to("cpu", torch.float32)
        num_free = self.capacity - self._num_filled
        fill = min(num_free, images.shape[0])
        self._storage[self._num_filled : self._num_filled + fill] = images[:fill]
        self._num_filled += fill
        rest = images[fill:]
        if rest.shape[0] == 0:
            return
        # Full: replace distinct random slots. Images past `capacity` in one push are dropped
        # (they would overwrite each other); slots just filled above may be replaced too.
        rest = rest[: self.capacity]
        slots = torch.randperm(self.capacity, generator=self._gen)[: rest.shape[0]]
        self._storage[slots] = rest

    def read(self, slots: Tensor) -> Tensor:
        """Copies of the images in `slots` (for a caller that chose the slots itself)."""
        return self._storage[slots]

    def write(self, slots: Tensor, images: Tensor) -> None:
        """Overwrite filled `slots` with images (a caller that chose the slots itself)."""
        if len(slots) and int(slots.max()) >= self._num_filled:
            raise IndexError(f"slot {int(slots.max())} is not filled ({self._num_filled} are)")
        self._storage[slots] = images.detach().to("cpu", torch.float32)

    def state_dict(self) -> dict[str, Tensor | int]:
        """Filled images, counts and RNG state; only tensors and ints (weights_only-loadable)."""
        return {
            "storage": self._storage[: self._num_filled].clone(),
            "num_filled": self._num_filled,
            "capacity": self.capacity,  # informational; load_state_dict accepts another
            "generator_state": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(). Same capacity: the run continues exactly as if never stopped.

        A different capacity (training resumed on another number of workers, so another share
        of B per rank) is accepted: the first min(num_filled, capacity) stored images are kept
        and later pushes follow this buffer's capacity; sampling is no longer bit-identical.
        """
        storage = state["storage"]
        num_filled = int(state["num_filled"])
        if tuple(storage.shape) != (num_filled, *self.image_shape):
            raise InputError(
                f"stored images {tuple(storage.shape)} do not match num_filled={num_filled} "
                f"and image shape {self.image_shape}"
            )
        keep = min(num_filled, self.capacity)
        self._storage.zero_()
        self._storage[:keep] = storage[:keep]
        self._num_filled = keep
        self._gen.set_state(state["generator_state"])


def history_count(batch_size: int, history_fraction: float) -> int:
    """n_hist = round(f * b) with halves rounded up (not round-half-to-even): b=3, f=0.5 -> 2."""
    if not 0.0 <= history_fraction <= 1.0:
        raise InputError(f"history_fraction must be in [0, 1], got {history_fraction}")
    # The 1e-9 keeps a product meant to be x.5 but computed as x.4999999999999999 rounding up.
    return min(batch_size, math.floor(history_fraction * batch_size + 0.5 + 1e-9))


def mix_fake_batch(current: Tensor, buffer: History | None, history_fraction: float) -> Tensor:
    """D's fake mini-batch: b - n_hist current refined images, then n_hist from the buffer.

    b = len(current), n_hist = history_count(b, f) (f = 0.5 in the paper). The result has the
    size, dtype and device of `current`: current[:b - k] followed by buffer.sample(k), where
    k = min(n_hist, buffer.num_filled) -- while the buffer holds fewer than n_hist images the
    missing history images are current ones instead. With no buffer, an empty one or f == 0,
    `current` is returned unchanged. Pass detached refined images so D's loss does not reach R.

    This does NOT push. The training loop's order, so that the current images are never drawn
    back as "history" in the same step:

        fake = mix_fake_batch(refined, buf, f)    # 1. mix
        ...D step on real and fake...             # 2. train D
        buf.push(refined[:n_hist])                # 3. then store n_hist new refined images

    Cost: one CPU->device copy of k images per D step.
    """
    if buffer is None or buffer.num_filled == 0 or history_fraction == 0:
        return current
    b = current.shape[0]
    k = min(history_count(b, history_fraction), buffer.num_filled)
    if k == 0:
        return current
    old = buffer.sample(k).to(device=current.device, dtype=current.dtype)
    return torch.cat([current[: b - k], old], dim=0)
