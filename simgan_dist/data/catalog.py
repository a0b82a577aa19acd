"""Shard catalog: which shards each training worker reads in each epoch, and what it has finished.

One catalog per corpus (synthetic, real) lists the shards once (one listing of the bucket, not one
per worker) and deals them to the data-parallel ranks. The deal is a pure function of
(shard list, seed, epoch, world size): shuffled by (seed, epoch), then each shard goes to the rank
with the fewest samples so far, so ranks get disjoint sets balanced by sample count (within one
shard). Because it is pure, DataLoader processes compute their rank's list themselves and a
resumed run redraws the same epochs. With fewer shards than ranks (a small real corpus) every rank
reads every shard and keeps sample positions pos % W == rank. Streams are endless epochs, so a
small real corpus is simply re-read (resampled) as often as the synthetic one needs.

Workers report each shard they have read to the end; the record is saved in checkpoints. When a
run resumes with another worker count (a worker was lost for good), the shards of the current
epoch that no rank finished are re-dealt over the ranks that remain, and the epoch goes on.

No ray here: ray_train runs ShardCatalog as an actor (ray.remote(ShardCatalog)).
"""

from __future__ import annotations

import functools
import heapq
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simgan_dist.io import urls as urlmod
from simgan_dist.io.location import Location, on_store
from simgan_dist.io.shardio import MANIFEST_NAME, read_manifest, resolve_shard_urls
from simgan_dist.seeds import seed_for

if TYPE_CHECKING:
    from simgan_dist.config import Config


@dataclass(frozen=True)
class RankShards:
    """What one rank reads in one epoch: these shards, keeping positions pos % stride == offset."""

    urls: tuple[str, ...]
    stride: int = 1
    offset: int = 0


def deal(
    urls: list[str], counts: list[int], world_size: int, rng: random.Random
) -> list[list[str]]:
    """Shuffle, then give each shard to the rank with the fewest samples so far (ties: low rank)."""
    order = list(range(len(urls)))
    rng.shuffle(order)
    loads = [(0, rank) for rank in range(world_size)]
    dealt: list[list[str]] = [[] for _ in range(world_size)]
    for i in order:
        load, rank = heapq.heappop(loads)
        dealt[rank].append(urls[i])
        heapq.heappush(loads, (load + counts[i], rank))
    return dealt


@dataclass(frozen=True)
class EpochPlan:
    """The corpus and the rules; picklable, so loader processes carry their own copy.

    redealt[epoch] overrides the deal of one epoch (the unfinished shards after a resize).
    """

    urls: tuple[str, ...]
    counts: tuple[int, ...]
    seed: int
    world_size: int
    start_epoch: int = 0
    redealt: dict[int, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def for_rank(self, epoch: int, rank: int) -> RankShards:
        if epoch in self.redealt:
            return RankShards(self.redealt[epoch][rank])
        rng = random.Random(seed_for(self.seed, "catalog", epoch))
        if len(self.urls) < self.world_size:
            order = list(self.urls)
            rng.shuffle(order)
            return RankShards(tuple(order), self.world_size, rank)
        return RankShards(
            tuple(deal(list(self.urls), list(self.counts), self.world_size, rng)[rank])
        )

    @functools.cached_property
    def _count_of(self) -> dict[str, int]:
        return dict(zip(self.urls, self.counts, strict=True))

    def num_samples(self, url: str) -> int:
        # A dict, not urls.index: a re-deal asks for every unfinished shard (O(N^2) at 100k).
        return self._count_of[url]


def shard_counts(shard_urls: list[str], store: Location | None = None) -> list[int]:
    """Samples per shard from the manifest beside each shard; 1 each where there is none (the
    deal then balances shard counts instead of sample counts). store: where the shards are."""
    by_url: dict[str, int] = {}
    for parent in dict.fromkeys(u.rsplit("/", 1)[0] for u in shard_urls):
        try:
            manifest = read_manifest(on_store(parent, store).join(MANIFEST_NAME))
        except (FileNotFoundError, ValueError):
            continue
        by_url.update({urlmod.join(parent, s.name): s.num_samples for s in manifest.shards})
    return [by_url.get(u, 1) for u in shard_urls]


class ShardCatalog:
    """The catalog of one corpus: its plan, and per epoch which ranks finished which shards."""

    shared = False  # in-process: each rank holds (and restores) its own

    def __init__(self, location: str, plan: EpochPlan) -> None:
        self.location = location
        self._plan = plan
        self.finished: dict[int, dict[int, list[str]]] = {}  # epoch -> rank -> urls, in order

    @classmethod
    def open(
        cls,
        location: Location | str,
        seed: int,
        world_size: int,
        *,
        allow_pipe: bool = False,
    ) -> ShardCatalog:
        """List a corpus (the one listing of the run) and read its manifests' sample counts."""
        corpus = Location.of(location)
        shard_urls = resolve_shard_urls(corpus, allow_pipe)
        counts = shard_counts(shard_urls, corpus)
        return cls(corpus.url, EpochPlan(tuple(shard_urls), tuple(counts), seed, world_size))

    def plan(self) -> EpochPlan:
        return self._plan

    def record_finished(self, epoch: int, rank: int, url: str) -> None:
        self.finished.setdefault(epoch, {}).setdefault(rank, []).append(url)

    def current_epoch(self) -> int:
        return max(self.finished, default=self._plan.start_epoch)

    def unfinished(self, epoch: int) -> list[str]:
        """Shards of an epoch that no rank has read to the end, in catalog order."""
        done = {u for urls in self.finished.get(epoch, {}).values() for u in urls}
        if len(self._plan.urls) < self._plan.world_size:
            return [] if done else list(self._plan.urls)  # strided: everyone reads everything
        return [u for u in self._plan.urls if u not in done]

    def progress(self) -> dict[str, Any]:
        epoch = self.current_epoch()
        return {
            "corpus": self.location,
            "epoch": epoch,
            "num_shards": len(self._plan.urls),
            "num_finished": len(self._plan.urls) - len(self.unfinished(epoch)),
            "finished_per_rank": {r: len(u) for r, u in self.finished.get(epoch, {}).items()},
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: goes into the training checkpoint."""
        return {
            "location": self.location,
            "world_size": self._plan.world_size,
            "start_epoch": self._plan.start_epoch,
            "redealt": {str(e): [list(r) for r in d] for e, d in self._plan.redealt.items()},
            "finished": {
                str(e): {str(r): list(u) for r, u in ranks.items()}
                for e, ranks in self.finished.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any], world_size: int) -> EpochPlan:
        """Restore a checkpoint's record. With the same world size the plan is unchanged (the
        streams fast-forward to their saved positions); with another one, the current epoch's
        unfinished shards are re-dealt over the new ranks and the plan starts at that epoch."""
        self.finished = {
            int(e): {int(r): list(u) for r, u in ranks.items()}
            for e, ranks in state["finished"].items()
        }
        redealt = {int(e): tuple(tuple(r) for r in d) for e, d in state["redealt"].items()}
        plan = EpochPlan(
            self._plan.urls, self._plan.counts, self._plan.seed, state["world_size"],
            state["start_epoch"], redealt,
        )  # fmt: skip
        if world_size != plan.world_size:
            epoch = self.current_epoch()
            left = self.unfinished(epoch)
            rng = random.Random(seed_for(plan.seed, "catalog", epoch, "redeal", world_size))
            counts = [plan.num_samples(u) for u in left]
            # Ranks left without a shard this epoch (fewer left than ranks) go on to the next.
            parts = deal(left, counts, world_size, rng) if left else [[]] * world_size
            plan = EpochPlan(
                plan.urls, plan.counts, plan.seed, world_size, epoch,
                {epoch: tuple(tuple(p) for p in parts)},
            )  # fmt: skip
        self._plan = plan
        return plan


CATALOG_FILE = "catalog.json"  # in a checkpoint: {"synthetic": state, "real": state}
CORPORA = ("synthetic", "real")


def stream_seed(cfg: Config, corpus: str) -> int:
    """Seed of a corpus's stream and plan (seeds.seed_for: one per run seed and corpus)."""
    return seed_for(cfg.run.seed, "stream", corpus)


class ShardSource(Protocol):
    """What a rank's stream needs of a corpus's catalog: a local ShardCatalog, or the Ray
    adapter's client of a shared catalog actor (train.ray_catalog.CatalogClient)."""

    shared: bool  # one catalog for every rank (an actor), or one per rank

    def plan(self) -> EpochPlan: ...

    def record_finished(self, epoch: int, rank: int, url: str) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], world_size: int) -> EpochPlan: ...


def open_catalog(cfg: Config, corpus: str, num_workers: int) -> ShardCatalog:
    """A corpus's catalog for a run of num_workers ranks: listed once, seeded by run.seed."""
    return ShardCatalog.open(
        data_location(cfg, getattr(cfg.data, corpus)),
        stream_seed(cfg, corpus),
        num_workers,
        allow_pipe=cfg.data.allow_pipe_urls,
    )


def data_location(cfg: Config, url: str) -> Location:
    """A data URL (a corpus, an eval set) with data.storage_options, the options of its store."""
    return Location(url, cfg.data.storage_options)


def local_catalogs(cfg: Config, num_workers: int) -> dict[str, ShardCatalog]:
    """One in-process catalog per corpus (a run without shared catalog actors: each rank
    keeps its own record, with the same plan on every rank)."""
    return {corpus: open_catalog(cfg, corpus, num_workers) for corpus in CORPORA}
