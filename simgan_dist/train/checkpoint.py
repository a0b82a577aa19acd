"""Training checkpoints as plain state_dicts + JSON/YAML (no pickled code), loaded with weights_only=True."""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from simgan_dist.config import Config, from_dict, save_config
from simgan_dist.data.catalog import CATALOG_FILE, ShardSource
from simgan_dist.errors import InputError
from simgan_dist.io.location import Location
from simgan_dist.model.history import History
from simgan_dist.model.networks import Refiner, build_refiner
from simgan_dist.train import dist
from simgan_dist.train.engine import Updater
from simgan_dist.train.loop import LoopState

log = logging.getLogger(__name__)

NETWORKS_FILE = "networks.pt"  # R and D weights (identical on every rank)
STATE_FILE = "state.json"  # loop counters, world size, and the resolved config
CONFIG_FILE = "config.yaml"  # the same config, for people and for `simgan train --config`
FORMAT_VERSION = 1


class CheckpointError(InputError):
    """A checkpoint file that cannot be read as tensors: cut short, corrupt, or holding code."""


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only=True, its failures as one CheckpointError naming the file.
    A pickle that would run code is refused, never loaded (torch's hint to pass
    weights_only=False is not advice to follow for a file from elsewhere)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects beyond tensors, which are not loaded"
        raise CheckpointError(f"{path}: refused: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable (truncated or corrupt?): {reason}") from None


def rank_file(rank: int) -> str:
    """Per-rank state (optimizer states or their ZeRO partitions, buffer slice, RNG, data
    position): every rank writes its own file into the same checkpoint."""
    return f"rank-{rank:04d}.pt"


def checkpoint_name(cur_nimg: int) -> str:
    return f"checkpoint-{cur_nimg:012d}"


class Stateful(Protocol):
    """A part of a checkpoint: plain values and tensors out, the same back in."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class OptimizerState:
    """An updater's optimizer state (under ZeRO 1/2 this rank's partition) as a checkpoint part."""

    def __init__(self, updater: Updater) -> None:
        self.updater = updater

    def state_dict(self) -> dict[str, Any]:
        return self.updater.optimizer_state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updater.load_optimizer_state_dict(state)

    def load_resized_state_dict(self, state: dict[str, Any]) -> bool:
        """Rank 0's state on another worker count: usable only unsharded (ZeRO 0, the same on
        every rank). Returns whether it was loaded."""
        if state["zero_stage"] != 0:
            return False
        self.updater.load_optimizer_state_dict(state)
        return True


class CatalogRecord:
    """The corpora's record of finished shards as a checkpoint part (catalog.json). Saved by
    rank 0 after the checkpoint's barrier, when every rank's finished shards are recorded;
    restored before the streams are built, since they are dealt from it. A shared catalog (one
    actor for every rank) is restored by rank 0; per-rank catalogs by each rank."""

    def __init__(
        self, catalogs: Mapping[str, ShardSource], cfg: Config, rank: int, world_size: int
    ) -> None:
        self.catalogs, self.cfg, self.rank, self.world_size = catalogs, cfg, rank, world_size

    def state_dict(self) -> dict[str, Any]:
        return {corpus: catalog.state_dict() for corpus, catalog in self.catalogs.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for corpus, catalog in self.catalogs.items():
            if self.rank == 0 or not catalog.shared:
                catalog.load_state_dict(state[corpus], self.world_size)

    def save_to(self, directory: Path) -> None:
        """Every rank calls this (a barrier); rank 0 writes."""
        dist.barrier()  # every rank's finished shards are recorded by now
        if self.rank == 0:
            (directory / CATALOG_FILE).write_text(json.dumps(self.state_dict()))

    def fit_world_size(self) -> None:
        """A run that starts on another worker count than its catalogs were dealt for (an
        elastic run below run.num_workers) re-deals them over the ranks it has, as a resume on
        another count does. Every rank calls this (it ends with a barrier)."""
        self.load_state_dict(self.state_dict())
        dist.barrier()

    def load_from(self, directory: Path) -> None:
        """Every rank calls this (it ends with a barrier). A checkpoint without a record (saved
        by a run with in-memory batches) leaves the catalogs as they are."""
        path = directory / CATALOG_FILE
        if path.exists():
            self.load_state_dict(json.loads(path.read_text()))
        dist.barrier()


class TrainingCheckpoint:
    """Everything a training checkpoint holds, saved and restored by name (as EDM2's
    CheckpointIO): `networks` (the same on every rank) go to networks.pt from rank 0, `per_rank`
    parts (optimizer partitions, buffer slice, data position) to rank-NNNN.pt from each rank,
    the loop counters with the config to state.json, and the `catalogs` record to catalog.json
    (CatalogRecord). No RNG state is saved: the loop seeds each iteration from (seed, rank,
    cur_nimg) (loop.iteration_seed). The order of restoring is session.TrainingSession.build's:
    the catalogs before the streams exist, then the weights before the optimizer states (ZeRO
    copies the weights into its fp32 partition), as load() does. Per-rank parts are restored only
    on the same worker count; on another, a part with load_resized_state_dict gets rank 0's
    state and the rest start fresh."""

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        networks: Mapping[str, Stateful],
        per_rank: Mapping[str, Stateful],
        loop: LoopState,
        catalogs: CatalogRecord | None = None,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.networks, self.per_rank, self.loop = dict(networks), dict(per_rank), loop
        self.catalogs = catalogs

    @classmethod
    def of_training(
        cls,
        *,
        rank: int,
        world_size: int,
        refiner: Updater,
        disc: Updater,
        buffer: History | None,
        loop: LoopState,
        data: Stateful | None = None,
        catalogs: CatalogRecord | None = None,
    ) -> TrainingCheckpoint:
        """The parts of a SimGAN training run, by the names its files use."""
        per_rank: dict[str, Stateful] = {
            "refiner_optim": OptimizerState(refiner),
            "disc_optim": OptimizerState(disc),
        }
        if buffer is not None:
            per_rank["buffer"] = buffer
        if data is not None:
            per_rank["data_position"] = data
        networks = {"refiner": refiner.module, "disc": disc.module}
        return cls(
            rank=rank, world_size=world_size, networks=networks, per_rank=per_rank, loop=loop,
            catalogs=catalogs,
        )  # fmt: skip

    def save(self, directory: str | Path, cfg: Config) -> None:
        """Write this rank's part of a checkpoint; rank 0 also writes the shared part."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            nets = {name: part.state_dict() for name, part in self.networks.items()}
            torch.save(nets, directory / NETWORKS_FILE)
            meta = {
                "format": FORMAT_VERSION,
                "world_size": self.world_size,
                "loop": self.loop.state_dict(),
                "config": cfg.to_dict(),
            }
            (directory / STATE_FILE).write_text(json.dumps(meta, indent=1))
            save_config(cfg, directory / CONFIG_FILE)
        parts = {name: part.state_dict() for name, part in self.per_rank.items()}
        torch.save(parts, directory / rank_file(self.rank))
        if self.catalogs is not None:
            self.catalogs.save_to(directory)

    def load(self, directory: str | Path) -> None:
        """Restore the weights, loop counters and per-rank parts from a checkpoint directory, by
        name (the catalogs' record is restored earlier: CatalogRecord.load_from)."""
        directory = Path(directory)
        meta = read_state(directory)
        nets = load_tensors(directory / NETWORKS_FILE)
        for name, part in self.networks.items():
            part.load_state_dict(_part(nets, name, directory / NETWORKS_FILE))
        self.loop.load_state_dict(meta["loop"])
        per_rank = directory / rank_file(self.rank)
        if meta["world_size"] == self.world_size and per_rank.exists():
            saved = load_tensors(per_rank)
            for name, part in self.per_rank.items():
                part.load_state_dict(_part(saved, name, per_rank))
            return
        # Another worker count: slices, ZeRO partitions and stream splits differ.
        rank0_file = directory / rank_file(0)
        rank0 = load_tensors(rank0_file)
        kept = [
            name
            for name, part in self.per_rank.items()
            if hasattr(part, "load_resized_state_dict")
            and part.load_resized_state_dict(_part(rank0, name, rank0_file))
        ]
        log.warning(
            "%s: saved with %d workers, resumed with %d: kept %s; the rest (history buffer, data "
            "position, ZeRO-sharded optimizer state) starts fresh",
            directory,
            meta["world_size"],
            self.world_size,
            ", ".join(kept) or "nothing per rank",
        )


def _part(saved: Any, name: str, path: Path) -> Any:
    if not isinstance(saved, dict) or name not in saved:
        raise CheckpointError(f"{path}: has no part {name!r}")
    return saved[name]


def parse_state(blob: bytes | str, where: str | Path) -> dict:
    """A state.json's content; one CheckpointError naming the file when it does not parse (cut
    short by a full disk or a crash), is of another format, or lacks the world size."""
    try:
        meta = json.loads(blob)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(f"{where}: unreadable (truncated or corrupt?): {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: unreadable: not a JSON object")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format {meta.get('format')}, this version reads {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("world_size"), int) or meta["world_size"] < 1:
        raise CheckpointError(f"{where}: unreadable: no valid world_size")
    return meta


def read_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: not a simgan-dist checkpoint (no {STATE_FILE})")
    return parse_state(path.read_bytes(), path)


def _is_complete(names: set[str], state: bytes | None, where: str = STATE_FILE) -> bool:
    """Every file a checkpoint of its world size needs is there. Ray Train copies a checkpoint
    file by file; one cut short by a crash lacks files and is never picked. A state.json that
    does not parse makes a checkpoint incomplete too, with a warning naming it (where)."""
    if state is None or NETWORKS_FILE not in names:
        return False
    try:
        world_size = parse_state(state, where)["world_size"]
    except CheckpointError as err:
        log.warning("%s; skipping that checkpoint", err)
        return False
    return all(rank_file(r) in names for r in range(world_size))


def complete_checkpoints(run: Location | str | Path) -> list[Location]:
    """The complete checkpoint-* of a run (a local directory or a URI), newest first; an
    incomplete one (files missing, a state.json that does not parse) is left out."""
    location = Location.of(run)
    found = []
    for name in sorted(location.list(), reverse=True):
        if not name.startswith("checkpoint-"):
            continue
        candidate = location.join(name)
        files = set(candidate.list())
        state_location = candidate.join(STATE_FILE)
        state = state_location.read_bytes() if STATE_FILE in files else None
        if _is_complete(files, state, state_location.url):
            found.append(candidate)
    return found


def _check_direct(location: Location) -> None:
    """A checkpoint named on its own is used as it is or refused, never substituted: its
    state.json must parse (else one line naming it) and its files must all be there."""
    state_location = location.join(STATE_FILE)
    meta = parse_state(state_location.read_bytes(), state_location.url)
    names = set(location.list())
    needed = [NETWORKS_FILE] + [rank_file(r) for r in range(meta["world_size"])]
    missing = [name for name in needed if name not in names]
    if missing:
        raise FileNotFoundError(f"{location}: incomplete checkpoint (missing {', '.join(missing)})")


def find_latest_checkpoint(location: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete checkpoint-* in a run directory."""
    location = Path(location)
    if (location / STATE_FILE).exists():
        _check_direct(Location(str(location)))
        return location
    found = complete_checkpoints(location)
    if found:
        return found[0].local_path()
    raise FileNotFoundError(
        f"{location}: no complete checkpoint (expected {STATE_FILE}, {NETWORKS_FILE} and the "
        "rank files, or checkpoint-*/ holding them)"
    )


def fetch_checkpoint(location: Location) -> Path:
    """The newest complete checkpoint of a run or checkpoint URI, copied to a local cache."""
    if STATE_FILE in location.list():
        _check_direct(location)
        return location.fetch_cached()
    found = complete_checkpoints(location)
    if found:
        return found[0].fetch_cached()
    raise FileNotFoundError(f"{location}: no complete checkpoint found")


def load_latest(location: Location | str | Path) -> Path:
    """The newest complete checkpoint of a run or checkpoint location, as a local directory: a
    local one in place, a remote one (a URI, reached with the location's options) copied to a
    cache."""
    where = Location.of(location)
    if not where.is_local:
        return fetch_checkpoint(where)
    return find_latest_checkpoint(where.url)


def load_refiner(
    location: Location | str | Path,
    device: str = "cpu",
    storage_options: dict[str, Any] | None = None,
) -> tuple[Refiner, Config, Path]:
    """The trained refiner (eval mode), its config and the checkpoint directory it came from.
    location: a checkpoint or run directory, or the same on an object store (a URI, reached
    with storage_options when given, or a Location with its options)."""
    where = Location.of(location, storage_options)
    if not where.is_local or (Path(where.url) / STATE_FILE).exists():
        directories = [load_latest(where)]
    else:  # a run directory: the newest complete checkpoint that loads, older ones if it does not
        directories = [c.local_path() for c in complete_checkpoints(where)]
        if not directories:
            find_latest_checkpoint(where.url)  # raises the error that says what is missing
    errors = []
    for directory in directories:
        try:
            nets = load_tensors(directory / NETWORKS_FILE)
        except CheckpointError as err:
            if len(directories) == 1:
                raise
            log.warning("%s; trying the previous checkpoint", err)
            errors.append(str(err))
            continue
        meta = read_state(directory)
        cfg = from_dict(meta["config"], source=str(directory / STATE_FILE))
        refiner = build_refiner(cfg.model)
        refiner.load_state_dict(nets["refiner"])
        return refiner.to(device).eval(), cfg, directory
    raise CheckpointError(f"{location}: no checkpoint loads ({'; '.join(errors)})")
