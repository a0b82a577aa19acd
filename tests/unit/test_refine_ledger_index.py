"""The done-ledger's index: the listing of done/ decides what is done, the index only saves GETs."""

from __future__ import annotations

import json
from pathlib import Path

from simgan_dist.refine import ledger
from simgan_dist.refine.plan import input_shards, plan_job
from simgan_dist.refine.shard import ShardResult

LINEAGE = {"checkpoint_id": "c1"}


def _record(name: str, num_samples: int = 3) -> dict:
    shard = {"name": name, "num_samples": num_samples, "sha256": "0" * 64, "num_bytes": 5}
    return ShardResult(f"/in/{name}", name, num_samples, shard=shard, lineage=LINEAGE).to_dict()


def _segments(out: Path) -> list[Path]:
    return sorted((out / ledger.INDEX_DIR).glob("*.jsonl"))


def test_records_come_from_the_index_and_the_listing_decides(tmp_path: Path) -> None:
    out = str(tmp_path)
    records = [_record(f"s{i}.tar") for i in range(4)]
    for r in records:
        ledger.write_done(out, r)
    ledger.write_index(out, records[:2])
    ledger.write_index(out, [_record("s0.tar", num_samples=7)])  # a later copy wins
    ledger.write_index(out, [_record("gone.tar")])  # indexed, but its record is deleted
    # The record bodies under done/ are changed: what read_done returns for s0, s1 is the index's.
    for name in ("s0.tar", "s1.tar"):
        (tmp_path / ledger.DONE_DIR / f"{name}.json").write_text(json.dumps(_record(name, 99)))
    got = ledger.read_done(out)
    assert set(got) == {"s0.tar", "s1.tar", "s2.tar", "s3.tar"}
    assert [got[n]["num_samples"] for n in ("s0.tar", "s1.tar", "s2.tar")] == [7, 3, 3]
    assert len(_segments(tmp_path)) == 3  # read-only without compact


def test_compacting_leaves_one_segment_with_every_listed_record(tmp_path: Path) -> None:
    out = str(tmp_path)
    records = [_record(f"s{i}.tar") for i in range(5)]
    for r in records:
        ledger.write_done(out, r)
    ledger.write_index(out, records[:2])
    ledger.write_index(out, records[2:3])
    first = ledger.read_done(out, compact=True)
    (segment,) = _segments(tmp_path)
    lines = [json.loads(line) for line in segment.read_text().splitlines()]
    assert sorted(r["name"] for r in lines) == sorted(first) == [r["name"] for r in records]
    # Once compact, a read fetches nothing: done/ bodies are not looked at.
    for r in records:
        (tmp_path / ledger.DONE_DIR / f"{r['name']}.json").write_text("not json")
    assert ledger.read_done(out, compact=True) == first
    assert _segments(tmp_path) == [segment]


def test_plan_counts_a_record_done_only_with_its_published_shard(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(4):
        (inputs / f"s{i}.tar").write_bytes(b"")
    for name in ("s0.tar", "s1.tar"):
        ledger.write_done(str(out), _record(name))
    ledger.write_index(str(out), [_record("s0.tar"), _record("s1.tar")])
    (out / "s0.tar").write_bytes(b"12345")  # the size its record gives; s1's shard is missing
    sources, names = input_shards(str(inputs), str(out), False)
    assert names == ["s0.tar", "s1.tar", "s2.tar", "s3.tar"]
    job = plan_job(str(inputs), sources, names, str(out), LINEAGE)
    assert job.done == {"s0.tar"}
    assert [Path(s).name for s in job.todo] == ["s1.tar", "s2.tar", "s3.tar"]
    assert job.counts is None  # no input manifest
