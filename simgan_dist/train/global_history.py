"""The history buffer spread over W data-parallel ranks, sampled and refreshed over the whole of it.

Each rank keeps a slice of B/W slots (a HistoryBuffer). Every rank holds the same "shared"
generator (same seed, same calls in the same order), so all ranks compute the same global
decisions (which slots to draw, which to replace) without exchanging them; only images move.
Slices fill at the same rate on every rank, so the global fill is W times a slice's.

Communication per D step, with n = this rank's history images per step (b_global * f / W) and
an image of C*H*W float32 values (4*C*H*W bytes):
- sample: one all_gather of at most max-per-owner drawn images, about n images from each rank,
  so each rank receives ~ W*n = b_global*f images (worst case W*n from each rank when all draws
  land on one slice);
- push: one all_gather of the n new refined images: each rank receives W*n = b_global*f images.
For the gaze preset (1x35x55, 7.7 KB per image) with b=512, f=0.5 that is 256 images, about 2 MB
per all_gather. It grows with the batch b, never with the buffer size B.

With W=1 use HistoryBuffer itself: it is exactly the paper's buffer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from simgan_dist.errors import InputError
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.seeds import seed_for

AllGather = Callable[[Tensor], Tensor]  # (n, ...) on every rank -> (W, n, ...), rank order


class GlobalHistoryBuffer:
    """B slots over W ranks; draws are uniform over all filled slots of all ranks, and new
    images from every rank land in slices across ranks (no slice only ever sees its own rank's
    images). Every method must be called on all ranks in the same order (it is collective)."""

    def __init__(
        self,
        capacity: int,
        image_shape: tuple[int, int, int],
        seed: int,
        rank: int,
        world_size: int,
        all_gather: AllGather,
    ) -> None:
        if capacity < world_size:
            raise InputError(f"capacity {capacity} is smaller than world_size {world_size}")
        self.rank, self.world_size, self.all_gather = rank, world_size, all_gather
        self.slice = HistoryBuffer(
            capacity // world_size, image_shape, seed=seed_for(seed, "history", rank)
        )
        self.capacity = self.slice.capacity * world_size
        self.shared = torch.Generator().manual_seed(seed_for(seed, "history", "global"))
        self.num_pushes = 0

    @property
    def num_filled(self) -> int:
        return self.slice.num_filled * self.world_size

    def _draw(self, num: int, population: int) -> Tensor:
        if num <= population:
            return torch.randperm(population, generator=self.shared)[:num]
        return torch.randint(0, population, (num,), generator=self.shared)

    def sample(self, num_images: int) -> Tensor:
        """num_images for this rank, drawn with every rank's draws from the whole buffer."""
        per_slice = self.slice.num_filled
        if per_slice == 0:
            raise RuntimeError("cannot sample from an empty history buffer")
        draws = self._draw(num_images * self.world_size, self.num_filled)
        owner, slot = draws // per_slice, draws % per_slice
        # Each owner serves its drawn slots in draw order; pad to the largest share so one
        # all_gather of equal-sized tensors moves them all.
        counts = torch.bincount(owner, minlength=self.world_size)
        served = torch.zeros((int(counts.max()), *self.slice.image_shape))
        mine = slot[owner == self.rank]
        served[: len(mine)] = self.slice.read(mine)
        gathered = self.all_gather(served)  # (W, max_count, C, H, W)
        one_hot = torch.nn.functional.one_hot(owner, self.world_size)
        position = (one_hot.cumsum(0) - 1).gather(1, owner[:, None]).squeeze(1)
        images = gathered[owner, position]
        lo = self.rank * num_images
        return images[lo : lo + num_images]

    def push(self, images: Tensor) -> None:
        """Store every rank's new images: while filling, this slice takes another rank's batch
        in turn; once full, W*n distinct global slots are replaced."""
        gathered = self.all_gather(images.detach().to("cpu", torch.float32).contiguous())
        if self.slice.num_filled < self.slice.capacity:
            source = (self.rank + self.num_pushes) % self.world_size
            self.slice.push(gathered[source])
        else:
            new = gathered.reshape(-1, *self.slice.image_shape)
            slots = self._draw(len(new), self.capacity)[: self.capacity]
            owner, slot = slots // self.slice.capacity, slots % self.slice.capacity
            mine = owner == self.rank
            self.slice.write(slot[mine], new[: len(slots)][mine])
        self.num_pushes += 1

    def state_dict(self) -> dict[str, Tensor | int | dict]:
        return {
            "slice": self.slice.state_dict(),
            "shared_generator": self.shared.get_state(),
            "num_pushes": self.num_pushes,
        }

    def load_state_dict(self, state: dict) -> None:
        self.slice.load_state_dict(state["slice"])
        self.shared.set_state(state["shared_generator"])
        self.num_pushes = int(state["num_pushes"])
