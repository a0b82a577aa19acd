"""Training checkpoints as plain state_dicts + JSON/YAML (no pickled code), loaded with weights_only=True."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from simgan_dist.config import Config, from_dict, save_config
from simgan_dist.io import storage
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


def save_training_state(
    directory: str | Path,
    *,
    rank: int,
    world_size: int,
    refiner: Updater,
    disc: Updater,
    buffer: History | None,
    state: LoopState,
    cfg: Config,
    data_position: dict[str, int] | None = None,
) -> None:
    """Write this rank's part of a checkpoint. Rank 0 writes the shared part."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        torch.save(
            {
                "refiner": refiner.module.state_dict(),
                "disc": disc.module.state_dict(),
            },
            directory / NETWORKS_FILE,
        )
        meta = {
            "format": FORMAT_VERSION,
            "world_size": world_size,
            "loop": state.to_dict(),
            "config": cfg.to_dict(),
        }
        (directory / STATE_FILE).write_text(json.dumps(meta, indent=1))
        save_config(cfg, directory / CONFIG_FILE)
    torch.save(
        {
            "refiner_optim": refiner.optimizer_state_dict(),
            "disc_optim": disc.optimizer_state_dict(),
            "buffer": buffer.state_dict() if buffer is not None else {},
            "torch_rng": torch.get_rng_state(),
            "data_position": data_position or {},
        },
        directory / rank_file(rank),
    )


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


def load_training_state(
    directory: str | Path,
    *,
    rank: int,
    world_size: int,
    refiner: Updater,
    disc: Updater,
    buffer: History | None,
) -> tuple[LoopState, dict[str, int]]:
    """Restore networks, optimizers, this rank's buffer slice and RNG; return the loop counters
    and this rank's data position ({} when it is unknown)."""
    directory = Path(directory)
    meta = read_state(directory)
    nets = load_tensors(directory / NETWORKS_FILE)
    refiner.module.load_state_dict(nets["refiner"])
    disc.module.load_state_dict(nets["disc"])
    per_rank = directory / rank_file(rank)
    data_position: dict[str, int] = {}
    same_world = meta["world_size"] == world_size
    if per_rank.exists() and same_world:
        rank_state = load_tensors(per_rank)
        refiner.load_optimizer_state_dict(rank_state["refiner_optim"])
        disc.load_optimizer_state_dict(rank_state["disc_optim"])
        if buffer is not None and rank_state["buffer"]:
            buffer.load_state_dict(rank_state["buffer"])
        torch.set_rng_state(rank_state["torch_rng"])
        data_position = rank_state["data_position"]
        return LoopState(**meta["loop"]), data_position
    # Another worker count: slices, ZeRO partitions and stream splits differ. Unsharded
    # optimizer state (ZeRO 0, the same on every rank) is reused; the buffer and the data
    # streams start fresh.
    rank0_state = load_tensors(directory / rank_file(0))
    for updater, key in ((refiner, "refiner_optim"), (disc, "disc_optim")):
        if rank0_state[key]["zero_stage"] == 0:
            updater.load_optimizer_state_dict(rank0_state[key])
    log.warning(
        "%s: saved with %d workers, resumed with %d: history buffer, data position and any "
        "ZeRO-sharded optimizer state start fresh",
        directory,
        meta["world_size"],
        world_size,
    )
    return LoopState(**meta["loop"]), data_position


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
            storage.join(location, n)
            for n in sorted(names, reverse=True)
            if n.startswith("checkpoint-")
        ]
    )
    endpoint = str((storage_options or {}).get("endpoint_url", ""))
    for candidate in candidates:
        files = set(storage.list_names(candidate, storage_options))
        state_location = storage.join(candidate, STATE_FILE)
        state = storage.read_text(state_location, storage_options) if STATE_FILE in files else None
        if _is_complete(files, state):
            # One cache entry per store and path: two endpoints may hold the same bucket name.
            digest = hashlib.sha256(f"{endpoint} {candidate}".encode()).hexdigest()[:16]
            cache = Path(tempfile.gettempdir()) / "simgan-checkpoints" / digest
            return storage.fetch_dir(
                candidate, cache / storage.split(candidate)[1], storage_options
            )
    raise FileNotFoundError(f"{location}: no complete checkpoint found")


def load_refiner(
    location: str | Path, device: str = "cpu", storage_options: dict[str, Any] | None = None
) -> tuple[Refiner, Config, Path]:
    """The trained refiner (eval mode), its config and the checkpoint directory it came from.
    location: a checkpoint or run directory, or the same on an object store (a URI, reached
    with storage_options when given)."""
    if storage.is_uri(str(location)):
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
    save_training_state(
        directory,
        rank=0,
        world_size=1,
        refiner=TorchUpdater(r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.1)),
        disc=TorchUpdater(d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.1)),
        buffer=None,
        state=LoopState(cur_nimg=0),
        cfg=cfg,
    )
    return directory
