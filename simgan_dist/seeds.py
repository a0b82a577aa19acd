"""seed_for(*parts): the one seed recipe of simgan-dist, for every draw a run makes.

A seed is a hash of what the draw is for, e.g. seed_for(run_seed, "iteration", rank, cur_nimg):
draws are a function of where the run is (a resumed run draws what an unbroken one would, with no
RNG state saved), distinct parts give unrelated streams (no arithmetic that two parts could
collide on), and the value fits every seeding call (torch takes < 2**64, numpy and random any).
Costs one SHA-256 of a short string (~1 us), so it is fine per iteration.
"""

from __future__ import annotations

import hashlib


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed from the parts, in order ("a", 1 and "a/1" give the same: parts are joined
    with "/", so a part should not itself hold one)."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
