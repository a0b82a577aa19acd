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
from simgan_dist.io import storage, urls
from simgan_dist.model.history import History
from simgan_dist.model.networks import Refiner, build_discriminator, build_refiner
from simgan_dist.train.engine import TorchUpdater, Updater, make_optimizer
from simgan_dist.train.loop import LoopState

log = logging.getLogger(__name__)

NETWORKS_FILE = "networks.pt"  # R and D weights (identical on every rank)
STATE_FILE = "state.json"  # loop counters, world size, and the resolved config
CONFIG_FILE = "config.yaml"  # the same config, for people and for `simgan train --config`
FORMAT_VERSION = 1


class CheckpointError(ValueError):
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


class TrainingCheckpoint:
    """Everything a training checkpoint holds, saved and restored by name (as EDM2's
    CheckpointIO): `networks` (the same on every rank) go to networks.pt from rank 0, `per_rank`
    parts (optimizer partitions, buffer slice, data position) to rank-NNNN.pt from each rank,
    and the loop counters with the config to state.json. No RNG state is saved: the loop seeds
    each iteration from (seed, rank, cur_nimg) (loop.iteration_seed), so the order in which parts
    are restored does not matter. Per-rank parts are restored only on the same worker count; on
    another, a part with load_resized_state_dict gets rank 0's state and the rest start fresh.
    The shard catalogs' record is saved by rank 0 after the checkpoint barrier
    (catalog.save_catalogs) and restored before the streams are built (ray_catalog)."""

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        networks: Mapping[str, Stateful],
        per_rank: Mapping[str, Stateful],
        loop: LoopState,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.networks, self.per_rank, self.loop = dict(networks), dict(per_rank), loop

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
            rank=rank, world_size=world_size, networks=networks, per_rank=per_rank, loop=loop
        )

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

    def load(self, directory: str | Path) -> None:
        """Restore every part from a checkpoint directory, by name."""
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


def read_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: not a simgan-dist checkpoint (no {STATE_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {meta.get('format')}, this version reads {FORMAT_VERSION}"
        )
    return meta


def _is_complete(names: set[str], state_text: str | None) -> bool:
    """Every file a checkpoint of its world size needs is there. Ray Train copies a checkpoint
    file by file; one cut short by a crash lacks files and is never picked."""
    if state_text is None or NETWORKS_FILE not in names:
        return False
    world_size = json.loads(state_text)["world_size"]
    return all(rank_file(r) in names for r in range(world_size))


def find_latest_checkpoint(location: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete checkpoint-* in a run directory."""
    location = Path(location)
    candidates = (
        [location]
        if (location / STATE_FILE).exists()
        else sorted(location.glob("checkpoint-*"), reverse=True)
    )
    for candidate in candidates:
        state = candidate / STATE_FILE
        names = {p.name for p in candidate.iterdir()} if candidate.is_dir() else set()
        if _is_complete(names, state.read_text() if state.exists() else None):
            return candidate
    raise FileNotFoundError(
        f"{location}: no complete checkpoint (expected {STATE_FILE}, {NETWORKS_FILE} and the "
        "rank files, or checkpoint-*/ holding them)"
    )


def fetch_checkpoint(location: str, storage_options: dict[str, Any] | None = None) -> Path:
    """The newest complete checkpoint of a run or checkpoint URI, copied to a local cache.
    storage_options: fsspec options for the store (endpoint_url, ...), as for shards."""
    names = storage.list_names(location, storage_options)
    candidates = (
        [location]
        if STATE_FILE in names
        else [
            urls.join(location, n)
            for n in sorted(names, reverse=True)
            if n.startswith("checkpoint-")
        ]
    )
    for candidate in candidates:
        files = set(storage.list_names(candidate, storage_options))
        state_location = urls.join(candidate, STATE_FILE)
        state = storage.read_text(state_location, storage_options) if STATE_FILE in files else None
        if _is_complete(files, state):
            return storage.fetch_cached(candidate, storage_options)
    raise FileNotFoundError(f"{location}: no complete checkpoint found")


def load_refiner(
    location: str | Path, device: str = "cpu", storage_options: dict[str, Any] | None = None
) -> tuple[Refiner, Config, Path]:
    """The trained refiner (eval mode), its config and the checkpoint directory it came from.
    location: a checkpoint or run directory, or the same on an object store (a URI, reached
    with storage_options when given)."""
    if urls.is_remote(str(location)):
        directories = [fetch_checkpoint(str(location), storage_options)]
    elif (Path(location) / STATE_FILE).exists():
        directories = [Path(location)]
    else:  # a run directory: the newest checkpoint that loads, older ones if it does not
        find_latest_checkpoint(location)  # a clear error when none is complete
        directories = sorted(Path(location).glob("checkpoint-*"), reverse=True)
    errors = []
    for directory in directories:
        names = {p.name for p in directory.iterdir()}
        state = directory / STATE_FILE
        if not _is_complete(names, state.read_text() if state.exists() else None):
            continue
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


def save_initial_checkpoint(cfg: Config, directory: str | Path, seed: int = 0) -> Path:
    """A freshly initialised R and D saved the way training saves a checkpoint (rank 0 of 1),
    for benchmarks, scale checks and tests that need a refiner but not a trained one."""
    torch.manual_seed(seed)
    r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
    directory = Path(directory)
    TrainingCheckpoint.of_training(
        rank=0,
        world_size=1,
        refiner=TorchUpdater(r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.1)),
        disc=TorchUpdater(d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.1)),
        buffer=None,
        loop=LoopState(cur_nimg=0),
    ).save(directory, cfg)
    return directory
