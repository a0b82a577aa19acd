"""Bookkeeping of a refine output: per-shard done-records, the write probe, manifest and report.

Layout under the output location (a directory or bucket prefix):
    <name>.tar                 refined shards, one per input shard, published atomically
    _refine/done/<name>.json   one done-record per finished input shard, written after its shard
    _refine/index/<seq>.jsonl  copies of done-records, written by the job's driver in batches
    _refine/report.json        the last run's report (counts, skipped samples, error if any)
    manifest.json              assembled from the done-records once every input shard is done

A shard counts as done only when its done-record exists and the published shard has the size the
record gives; anything else is redone (and overwritten, never duplicated). Records are small
objects rather than one shared file, so workers never contend for a read-modify-write.

The index makes planning a large job cheap: reading 50,000 records one GET each takes minutes on
an object store, a listing of done/ and one GET per index segment takes seconds. The listing
stays the truth of which records exist (a record deleted by hand is not done, whatever the index
says); the index only saves fetching their bodies. A record listed but missing from the index
(its driver died before writing the segment) is fetched. Only the job holding the output's lease
writes or compacts the index.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from simgan_dist.errors import InputError
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import Manifest, ShardInfo, write_manifest

log = logging.getLogger(__name__)

LEDGER_DIR = "_refine"
DONE_DIR = f"{LEDGER_DIR}/done"
INDEX_DIR = f"{LEDGER_DIR}/index"
REPORT_NAME = f"{LEDGER_DIR}/report.json"
TEMPORARY_MARK = ".tmp-"  # Location.atomic_write names its temporaries <name>.tmp-<hex>


def done_location(output: Location, name: str) -> Location:
    return output.join(DONE_DIR, f"{name}.json")


def record_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=1).encode()


def index_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def index_name() -> str:
    """A new segment's name: in name order, a later copy of a record wins."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"


def write_done(output: Location | str, record: dict[str, Any]) -> None:
    """Record one input shard as finished; call only after its output shard is published."""
    done_location(Location.of(output), record["name"]).publish_bytes(record_bytes(record))


def probe_writable(output: Location) -> None:
    """Write and delete a small object under output, so a read-only or missing location stops
    the job before any shard is refined."""
    probe = output.join(LEDGER_DIR, f"probe-{uuid.uuid4().hex[:12]}")
    try:
        with probe.atomic_write() as f:
            f.write(b"simgan refine write probe\n")
        fs, path = probe.filesystem()
        fs.rm(path)
    except Exception as err:
        raise OSError(f"refine output cannot be written: {output.describe_failure(err)}") from err


def _listing(location: Location) -> tuple[Any, list[dict]]:
    """(filesystem, fresh file entries with name and size) of one directory or prefix."""
    fs, path = location.filesystem()
    fs.invalidate_cache(path)  # s3fs caches listings; other processes wrote since
    if not fs.exists(path):
        return fs, []
    return fs, [e for e in fs.ls(path, detail=True) if e["type"] == "file"]


def _fetch(fs: Any, paths: list[str]) -> list[bytes]:
    return list(fs.cat(paths).values()) if paths else []  # concurrent GETs on s3fs


def read_done(output: Location | str, *, compact: bool = False) -> dict[str, dict[str, Any]]:
    """Every done-record under output, by output shard name: the listing of done/ says which
    exist, the index gives their bodies, the rest are fetched. compact (the lease holder only):
    afterwards, rewrite the index as one segment when it took more than one read or fetch."""
    output = Location.of(output)
    fs, entries = _listing(output.join(DONE_DIR))
    listed = {
        urls.basename(e["name"])[: -len(".json")]: e["name"]
        for e in entries
        if e["name"].endswith(".json") and TEMPORARY_MARK not in urls.basename(e["name"])
    }
    if not listed:
        return {}
    index_fs, segments = _listing(output.join(INDEX_DIR))
    segment_paths = sorted(
        e["name"] for e in segments if TEMPORARY_MARK not in urls.basename(e["name"])
    )
    indexed: dict[str, dict[str, Any]] = {}
    for blob in _fetch(index_fs, segment_paths):  # sorted by name: later segments win
        for line in blob.decode().splitlines():
            record = json.loads(line)
            indexed[record["name"]] = record
    records = {name: indexed[name] for name in listed if name in indexed}
    missing = [path for name, path in listed.items() if name not in records]
    for blob in _fetch(fs, missing):
        record = json.loads(blob)
        records[record["name"]] = record
    if compact and (len(segment_paths) > 1 or missing):
        write_index(output, list(records.values()))
        for path in segment_paths:
            index_fs.rm(path)
    return records


def write_index(output: Location | str, records: list[dict[str, Any]]) -> None:
    """One index segment with copies of these done-records (already written under done/)."""
    if not records:
        return
    Location.of(output).join(INDEX_DIR, index_name()).publish_bytes(index_bytes(records))


def published_sizes(output: Location) -> dict[str, int]:
    """Byte sizes of the files directly under output, by name (temporaries excluded)."""
    _, entries = _listing(output)
    return {
        urls.basename(e["name"]): int(e["size"])
        for e in entries
        if TEMPORARY_MARK not in urls.basename(e["name"])
    }


def check_lineage(records: dict[str, dict], lineage: dict[str, str], output: Location) -> None:
    """Refuse to add shards from another checkpoint or refiner config to a half-done output."""
    for name, record in records.items():
        theirs = {k: record["lineage"].get(k) for k in lineage}
        if theirs != lineage:
            raise InputError(
                f"{output}: shard {name} was refined with {theirs}, this run uses {lineage}; "
                "give a new --output (or delete the old one) to refine with another checkpoint"
            )


def finished(records: dict[str, dict], sizes: dict[str, int], names: list[str]) -> set[str]:
    """Names among `names` that are done: a record, and its shard published at the right size."""
    done = set()
    for name in names:
        record = records.get(name)
        if record is None:
            continue
        shard = record["shard"]
        if shard is None or sizes.get(name) == shard["num_bytes"]:
            done.add(name)
        else:
            log.warning("%s: done-record without its published shard; refining it again", name)
    return done


def assemble_manifest(
    output: Location, names: list[str], records: dict[str, dict], image_shape: tuple[int, int, int]
) -> Manifest:
    """manifest.json over the shards of `names` (input order) that have a done-record."""
    shards = tuple(
        ShardInfo(**records[n]["shard"]) for n in names if n in records and records[n]["shard"]
    )
    manifest = Manifest(output.name, shards, image_shape, has_labels=True)
    write_manifest(output, manifest)
    return manifest


def remove_temporaries(output: Location) -> int:
    """Delete what killed writers left behind (<name>.tmp-<hex>); readers never list them, so
    this only saves space. Run it when the job is done: one job per output at a time."""
    removed = 0
    for location in (output, output.join(DONE_DIR), output.join(INDEX_DIR)):
        fs, entries = _listing(location)
        stale = [e["name"] for e in entries if TEMPORARY_MARK in urls.basename(e["name"])]
        for path in stale:
            fs.rm(path)
        removed += len(stale)
    return removed


def write_report(output: Location, report: dict[str, Any]) -> str:
    location = output.join(REPORT_NAME)
    location.write_text(json.dumps(report, indent=1))
    return location.url
