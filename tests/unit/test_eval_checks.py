"""Refusals without Ray: eval on missing or relabeled refined samples, incomplete checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from simgan_dist.data.reader import read_samples
from simgan_dist.io.shardio import resolve_shard_urls


def test_eval_refuses_missing_or_relabeled_samples(digit_shards, tmp_path) -> None:
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.io.shardio import write_shards

    synthetic, real_eval = str(digit_shards["synthetic"]), str(digit_shards["real_eval"])
    with pytest.raises(ValueError, match="no refined copy"):
        evaluate_digits(synthetic, real_eval, real_eval, tmp_path / "eval", epochs=1, num_seeds=2)

    samples = list(read_samples(resolve_shard_urls(synthetic)))
    relabeled = [
        (k, img, {**m, "label": (m["label"] + 1) % 10} if i == 7 else m)
        for i, (k, img, m, _) in enumerate(samples)
    ]
    write_shards(relabeled, tmp_path / "relabeled", "synth", 100)
    with pytest.raises(ValueError, match="changed their label"):
        evaluate_digits(
            synthetic,
            str(tmp_path / "relabeled"),
            real_eval,
            tmp_path / "eval",
            epochs=1,
            num_seeds=2,
        )


def test_incomplete_checkpoint_is_never_picked(checkpoint: Path) -> None:
    """A checkpoint cut short by a crash (a rank file or the weights missing) does not load."""
    import shutil

    from simgan_dist.train.checkpoint import find_latest_checkpoint

    run = checkpoint.parent
    newer = run / "checkpoint-000000000192"
    shutil.copytree(checkpoint, newer)
    assert find_latest_checkpoint(run) == newer
    (newer / "rank-0000.pt").unlink()
    assert find_latest_checkpoint(run) == checkpoint
    (checkpoint / "networks.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_latest_checkpoint(run)
