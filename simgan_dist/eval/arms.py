"""The image arms of the S+U protocol as data: corpora aligned with the synthetic one, loaded and checked."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from simgan_dist.errors import InputError
from simgan_dist.eval.classifier import labeled_tensors

# The arms evaluate_digits names itself, in report order; extra arms follow in the order given,
# then mixed, which load_arms builds from the refined and randomized arms (no corpus of its own).
NAMED_ARMS = ("synthetic", "refined", "randomized", "ceiling", "mixed")
# Names a report already uses for something that is not an image arm.
RESERVED = ("oracle", "real")
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # becomes grid_<name>.png and report keys
# What each arm is, for the report's tables; an extra arm is described by its name alone.
DESCRIPTIONS = {
    "synthetic": "synthetic (the simulator's output)",
    "refined": "refined (the synthetic images through R)",
    "randomized": "randomized (the simulator's domain-randomized mode)",
    "ceiling": "ceiling (synthetic digits on the target's own photographs)",
    "mixed": "mixed (half the samples refined, half randomized)",
}


@dataclass(frozen=True)
class Arm:
    """One training set of the protocol. Its images carry the synthetic samples' labels: an arm
    other than synthetic holds copies of the synthetic samples (same keys, labels kept)."""

    name: str
    location: str
    first: torch.Tensor  # one copy per synthetic sample, in the synthetic corpus's order
    train_x: torch.Tensor  # every copy: K per sample for a corpus from `refine --variants K`
    train_y: torch.Tensor


def arm_corpora(
    synthetic: str,
    refined: str,
    randomized: str | None = None,
    ceiling: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Arm name -> corpus location, the named arms first; refuses an extra arm whose name is
    taken, reserved or unusable in a file name."""
    corpora = {"synthetic": synthetic, "refined": refined}
    corpora |= {"randomized": randomized} if randomized else {}
    corpora |= {"ceiling": ceiling} if ceiling else {}
    for name, location in (extra or {}).items():
        if name in NAMED_ARMS or name in RESERVED:
            raise InputError(f"arm {name!r}: that name is taken (named arms: {NAMED_ARMS})")
        if not _NAME.fullmatch(name):
            raise InputError(f"arm {name!r}: use lowercase letters, digits and '_' (a file name)")
        corpora[name] = location
    return corpora


def synthetic_arm(location: str) -> tuple[Arm, list[str]]:
    """The synthetic arm and its keys, which every other arm must cover."""
    x, y, keys = labeled_tensors(location)
    return Arm("synthetic", location, x, x, y), keys


def aligned_arm(name: str, location: str, keys_syn: list[str], y_syn: torch.Tensor) -> Arm:
    """An arm of copies of the synthetic samples: every synthetic key at least once, no other
    key, and every label kept, else a ValueError naming the first offending key. Copies are
    matched by lineage.source_key when they have one (`refine --variants K`), else by key."""
    x_all, y_all, sources = labeled_tensors(location, by_source=True)
    syn_index = {k: i for i, k in enumerate(keys_syn)}
    first: dict[str, int] = {}
    for i, k in enumerate(sources):
        first.setdefault(k, i)
    missing = [k for k in keys_syn if k not in first]
    if missing:
        raise InputError(
            f"{location}: {len(missing)} of {len(keys_syn)} synthetic samples have "
            f"no {name} copy (first key: {missing[0]})"
        )
    strangers = [k for k in sources if k not in syn_index]
    if strangers:
        raise InputError(
            f"{location}: {len(strangers)} {name} samples come from no synthetic sample "
            f"(first key: {strangers[0]})"
        )
    expected = y_syn[[syn_index[k] for k in sources]]
    changed = (expected != y_all).nonzero().flatten().tolist()
    if changed:
        raise InputError(
            f"{location}: {len(changed)} {name} samples changed their label "
            f"(first key: {sources[changed[0]]}); annotations must be kept"
        )
    return Arm(name, location, x_all[[first[k] for k in keys_syn]], x_all, y_all)


def takes_refined(key: str) -> bool:
    """Whether the mixed arm takes a synthetic sample's refined copy (else its randomized one):
    half the keys, by a hash of the key alone, so every run and seed mixes the same samples."""
    return zlib.crc32(key.encode()) % 2 == 1


def mixed_arm(refined: Arm, randomized: Arm, keys: list[str], labels: torch.Tensor) -> Arm:
    """The mixed arm: one copy per synthetic sample (as many images as the synthetic arm), the
    refined copy for the keys takes_refined picks, the randomized copy for the others. What a
    user with both a refiner and a randomizing simulator could train on."""
    check_shapes({refined.location: refined.first, randomized.location: randomized.first})
    pick = torch.tensor([takes_refined(k) for k in keys])[:, None, None, None]
    images = torch.where(pick, refined.first, randomized.first)
    return Arm("mixed", f"{refined.location} + {randomized.location}", images, images, labels)


def load_arms(corpora: Mapping[str, str]) -> dict[str, Arm]:
    """Every arm of arm_corpora's mapping, the non-synthetic ones checked against synthetic;
    with a randomized arm also the mixed arm of refined and randomized copies."""
    synthetic, keys = synthetic_arm(corpora["synthetic"])
    arms = {"synthetic": synthetic}
    for name, location in corpora.items():
        if name != "synthetic":
            arms[name] = aligned_arm(name, location, keys, synthetic.train_y)
    if "randomized" in arms:
        arms["mixed"] = mixed_arm(arms["refined"], arms["randomized"], keys, synthetic.train_y)
    return arms


def check_shapes(images: Mapping[str, torch.Tensor]) -> None:
    """Every set one (C, H, W): a classifier trained on one is tested on the others. The one
    line names both corpora, e.g. a grey synthetic corpus beside a colour real one."""
    shapes = {location: tuple(x.shape[1:]) for location, x in images.items()}
    first, shape = next(iter(shapes.items()))
    for location, other in shapes.items():
        if other != shape:
            raise InputError(
                f"{location} holds {_describe(other)} images, {first} {_describe(shape)} ones: "
                "every arm and the real sets must share one image shape"
            )


def _describe(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{channels}-channel {height}x{width}"
