"""An elastic debug-preset run (run.min_workers=1, run.num_workers=2) on a simulated 2-node Ray
cluster (ray.cluster_utils.Cluster, one CPU per node): once it has trained on both nodes, the
worker node is removed (the run must go on with one worker), then a node is added back (the run
must grow back to two). Run by tests/integration/test_cluster.py in a process of its own, as
_two_node_cluster.py is, with RAY_TMPDIR private.

    python tests/integration/_elastic_cluster.py SYNTHETIC REAL STORAGE_PATH RUN_NAME

Prints one line `RESULT {json}`: the worker counts of the run's metrics rows, in order, and its
resume events. The schedule is longer than the test: once the run has trained on two workers again
the cluster is shut down (how long each step takes depends on the machine's load, not the run).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _two_node_cluster import one_cpu_head

DEADLINE_S = 300.0


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _registered_workers(run_dir: Path) -> list[float]:
    """The worker counts of the checkpoints Ray Train has registered (its snapshot file): a
    checkpoint counts for a restart only once the controller has taken its report."""
    path = run_dir / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(path.read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []
    return [r["metrics"].get("num_workers") for r in results]


def _wait_for(run_dir: Path, test, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not test(_rows(run_dir), _registered_workers(run_dir)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} within {DEADLINE_S} s")
        time.sleep(0.5)


def _fit(address: str, cfg_dict: dict, run_dir: str) -> None:
    """The run, as its own driver process: the script stops it by killing this process."""
    import ray

    from simgan_dist.config import from_dict
    from simgan_dist.train.ray_train import run_training

    ray.init(address=address)
    run_training(from_dict(cfg_dict), Path(run_dir))


def main(synthetic: str, real: str, storage_path: str, run_name: str) -> int:
    import multiprocessing

    import ray

    from simgan_dist.config import load_config
    from simgan_dist.train.runs import start_run

    # Right after a node is lost Ray still counts its CPUs: its first try to restart on two
    # workers waits this long before the elastic policy sees one (60 s by default).
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "30"
    cluster = one_cpu_head()
    fit = None
    try:
        # Connected before the worker node exists, so the driver's node is the head: Ray refuses
        # to remove the node a driver is connected to (both nodes share this host's address).
        ray.init(address=cluster.address)
        worker_node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = load_config(
            preset="debug",
            overrides=[
                f"data.synthetic={synthetic}",
                f"data.real={real}",
                f"run.storage_path={storage_path}",
                f"run.name={run_name}",
                "run.num_workers=2",
                "run.min_workers=1",
                "run.elastic_resize_every_s=2",
                "run.threads_per_worker=1",
                "run.max_failures=10",  # the lost node and each start that waits on it
                "run.log_every_nimg=16",
                "run.checkpoint_every_nimg=32",
                "schedule.adversarial_nimg=10000000",
            ],
        )
        cfg, run_dir = start_run(cfg)
        # The run is longer than the test, so it is stopped, not finished. In a thread of this
        # process it would go on touching Ray during ray.shutdown(), and Ray ends a process that
        # does so with exit code 1 after a correct RESULT: a driver process of its own is killed
        # first instead, and Ray cleans up what it owned.
        fit = multiprocessing.get_context("spawn").Process(
            target=_fit, args=(cluster.address, cfg.to_dict(), str(run_dir))
        )
        fit.start()
        # Once a checkpoint of the two workers is registered, so the run resumes from it.
        _wait_for(run_dir, lambda rows, saved: 2 in saved, "checkpointed on 2")
        cluster.remove_node(worker_node)
        _wait_for(run_dir, lambda rows, saved: rows and rows[-1].get("num_workers") == 1, "on 1")
        cluster.add_node(num_cpus=1)
        _wait_for(run_dir, lambda rows, saved: rows[-1].get("num_workers") == 2, "back on 2")
        # A run that ended early (an error) is a dead driver before the test's end.
        error = None if fit.is_alive() else f"the run ended early, exit code {fit.exitcode}"
        fit.kill()
        fit.join()
        rows = _rows(run_dir)
        counts = [r["num_workers"] for r in rows if "num_workers" in r]
        report = {
            "error": error,
            "num_workers": [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]],
            "resumed_at": [r["cur_nimg"] for r in rows if r.get("event") == "resumed"],
        }
        print("RESULT " + json.dumps(report), flush=True)
        return 0
    finally:
        if fit is not None and fit.is_alive():  # the test failed before it stopped the run
            fit.kill()
            fit.join()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
