"""A run on a bucket publishes its outputs on a time interval (run.publish_every_s), not only at
checkpoints (issue 29 item 4): metrics.jsonl reaches the bucket before the first checkpoint."""

from __future__ import annotations

from pathlib import Path

from simgan_dist.config import load_config
from simgan_dist.train.hooks import LocalLink, TrainingHooks
from simgan_dist.train.run_outputs import RunOutputs
from simgan_dist.train.session import TrainingSession


def test_outputs_reach_the_bucket_between_checkpoints(
    s3_server, s3_bucket, digit_shards, tmp_path: Path
) -> None:
    cfg = load_config(
        preset="debug",
        overrides=[
            "run.num_workers=1",
            f"data.synthetic={digit_shards['synthetic']}",
            f"data.real={digit_shards['real']}",
            "run.storage_path=s3://simgan-test/runs",
            "run.name=published",
            f"run.storage_options={{endpoint_url: '{s3_server}'}}",
            "run.checkpoint_every_nimg=1000000",  # no checkpoint before the end
            "run.publish_every_s=0.001",
        ],
    )
    session = TrainingSession.build(cfg)
    link = LocalLink()
    hooks = TrainingHooks(
        session, tmp_path / "staging", link, RunOutputs(cfg, tmp_path / "staging", 0)
    )
    seen_before_checkpoint: list[bool] = []

    def after_iteration(state, phase, metrics) -> None:
        hooks(state, phase, metrics)
        if state.cur_nimg >= cfg.run.log_every_nimg * 2 and not seen_before_checkpoint:
            listed = s3_bucket.list_objects_v2(Bucket="simgan-test", Prefix="runs/published/")
            keys = {obj["Key"] for obj in listed.get("Contents", [])}
            seen_before_checkpoint.append("runs/published/metrics.jsonl" in keys)
            assert not any(name for _, name in link.reports), "a checkpoint was taken already"

    session.train(after_iteration=after_iteration)
    assert seen_before_checkpoint == [True]
