"""Planning a refine job: its input shards, which are done already (the ledger), which to do.

No Ray and no model here, so `simgan bench control` times the very planning `simgan refine` does,
on a job of any size, without refining anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from simgan_dist.errors import InputError
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import plain_tar_name, read_manifest, resolve_shard_urls
from simgan_dist.refine import ledger as refine_ledger

log = logging.getLogger(__name__)


@dataclass
class JobPlan:
    """What a (re)started job finds: every input, the records already written, what is left."""

    sources: list[str]  # input shard URLs, in input order
    names: list[str]  # their output names (the inputs' base names, .tar for a .tar.gz)
    records: dict[str, dict[str, Any]]  # done-records by name
    done: set[str]  # names whose record and published shard agree
    todo: list[str]  # sources still to refine, in input order
    counts: dict[str, int] | None  # samples per input shard from its manifest (None: no manifest)


def input_shards(
    input_location: Location | str, output: Location | str, allow_pipe: bool
) -> tuple[list[str], list[str]]:
    """(source URLs, output names) of a job, refused if outputs would overwrite inputs or clash."""
    input_location, output = Location.of(input_location), Location.of(output)
    found = resolve_shard_urls(input_location, allow_pipe)
    # Per folder, not per shard: resolving 100,000 local paths one by one takes seconds.
    folders = {f: urls.absolute(f) for f in dict.fromkeys(s.rsplit("/", 1)[0] for s in found)}
    sources = [f"{folders[s.rsplit('/', 1)[0]]}/{urls.basename(s)}" for s in found]
    names = [plain_tar_name(urls.basename(s)) for s in sources]  # refined copies: plain tars
    clash = next((f for f in folders.values() if urls.nested(f, output.url)), None)
    if clash is not None:
        # Refined copies keep their input's name: they would overwrite the corpus they come from.
        raise InputError(
            f"output {output} overlaps the input ({clash}): refined shards would overwrite or "
            "mix with their sources; choose an output outside the input folder"
        )
    if len(set(names)) != len(names):
        raise InputError(f"{input_location}: input shards share base names; outputs would clash")
    nested = next((n for n in expected_counts(input_location) or {} if "/" in n), None)
    if nested is not None:
        # Refined shards keep their input's base name in one output folder, and the ledger and
        # the output manifest know shards by that name alone.
        folder = next(s for s in sources if s.endswith(f"/{nested}")).rsplit("/", 1)[0]
        raise InputError(
            f"{input_location}: its manifest names shard {nested} in a subfolder, which refine "
            f"does not write; refine that folder as its own input ({folder})"
        )
    return sources, names


def plan_job(
    input_location: Location | str,
    sources: list[str],
    names: list[str],
    output: Location | str,
    lineage: dict[str, str],
) -> JobPlan:
    """Read the output's ledger (call while holding its lease: this compacts the index) and
    split the inputs into done and to do. Costs a listing of done/, of the output and of the
    index, one GET per index segment and per record the index lacks, and the input manifest."""
    input_location, output = Location.of(input_location), Location.of(output)
    records = refine_ledger.read_done(output, compact=True)
    refine_ledger.check_lineage(records, lineage, output)
    done = refine_ledger.finished(records, refine_ledger.published_sizes(output), names)
    todo = [s for s, n in zip(sources, names, strict=True) if n not in done]
    log.info(
        "refine: %d input shards, %d already done, %d to do", len(sources), len(done), len(todo)
    )
    return JobPlan(sources, names, records, done, todo, expected_counts(input_location))


def expected_counts(location: Location) -> dict[str, int] | None:
    """Samples per input shard from the input's manifest (for the ETA); None without one."""
    try:
        return {s.name: s.num_samples for s in read_manifest(location).shards}
    except (FileNotFoundError, ValueError, OSError):
        return None
