"""Debug-preset training on a simulated 2-node Ray cluster (ray.cluster_utils.Cluster).

Run by tests/test_cluster.py in a process of its own, so that the pytest session's in-process Ray
(the `ray_local` fixture) is left alone: a process can hold one Ray connection only. The caller sets
RAY_TMPDIR to a private directory, so this cluster's address file and sockets never reach a
concurrent `ray.init()` on the machine, and RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH to a private token.

    python tests/integration/_two_node_cluster.py SYNTHETIC REAL STORAGE_PATH RUN_NAME

Prints one line `RESULT {json}` with the worker placement and the final checkpoint.
"""

from __future__ import annotations

import json
import sys

from simgan_dist.train.dist import free_ports


def one_cpu_head():
    """A simulated cluster's head of one CPU, its dashboard and agent on free loopback ports."""
    from ray.cluster_utils import Cluster

    dashboard_port, agent_port = free_ports(2)
    return Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": agent_port,
        },
    )


def main(synthetic: str, real: str, storage_path: str, run_name: str) -> int:
    import ray
    from ray.util.state import list_actors

    from simgan_dist.config import load_config
    from simgan_dist.train.ray_train import run_training
    from simgan_dist.train.runs import start_run

    # One CPU per node and one CPU per Ray Train worker: the two workers cannot share a node.
    cluster = one_cpu_head()
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        cfg = load_config(
            preset="debug",
            overrides=[
                f"data.synthetic={synthetic}",
                f"data.real={real}",
                f"run.storage_path={storage_path}",
                f"run.name={run_name}",
                "run.num_workers=2",
                "run.threads_per_worker=1",
            ],
        )
        cfg, run_dir = start_run(cfg)
        result = run_training(cfg, run_dir)
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)
        report = {
            "nodes": nodes,
            "worker_nodes": sorted(actor.node_id for actor in workers),
            "error": None if result.error is None else repr(result.error),
            "checkpoint": None if result.checkpoint is None else result.checkpoint.path,
            "run_dir": str(run_dir),
        }
        print("RESULT " + json.dumps(report), flush=True)
        return 0 if result.error is None else 1
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
