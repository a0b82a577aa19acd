"""`simgan bench resume`: its output fields, through the CLI (not its speed)."""

from __future__ import annotations

import json

from simgan_dist.cli import main


def test_bench_resume_command_prints_each_point(tmp_path, capsys) -> None:
    out = tmp_path / "resume.json"
    main(["bench", "resume", "--nimg", "0,160,480", "--num-shards", "6",
          "--samples-per-shard", "40", "--preset", "debug", "--num-loader-workers", "1",
          "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    batch = result["batch_size"]
    points = result["points"]
    assert [p["nimg"] for p in points] == [n // batch * batch for n in (0, 160, 480)]
    finished = [p["num_finished_shards"] for p in points]
    assert finished == sorted(finished) and finished[-1] > finished[0]
    assert all(p["resume_s"] > 0 and p["replay_s"] > 0 for p in points)
    assert result["all_exact"] and all(p["exact"] for p in points)
    assert {"resume_s_per_1000_shards", "replay_s_per_1000_shards"} <= set(result)
    assert printed.count("| yes |") == 3 and "slope, s per 1,000 finished shards" in printed
