"""The cluster paths: `ray job submit` against a real `ray start --head`, and a 2-node cluster.

Both clusters live beside the session's in-process Ray (`ray_local`) without touching it:
- each gets a private RAY_TMPDIR/--temp-dir, so its `ray_current_cluster` address file is not the
  one a plain `ray.init()` on this machine reads, and explicit free ports (the dashboard agent's
  default 52365 would clash with any other Ray here);
- the head is stopped by killing the processes of the `ray start --block` we launched, never with
  `ray stop`, which stops every Ray on the machine;
- each uses its own token for Ray 2.60's token auth (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH),
  not ~/.ray/auth_token, and the Job SDK sends it as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import yaml

from simgan_dist.train.dist import free_ports

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 300
HEAD_START_TIMEOUT_S = 120


def _private_ray_env(root: Path) -> dict[str, str]:
    """Environment for a Ray that must not meet any other Ray on this machine, with its own token.

    `python` on PATH is this venv's: a job's entrypoint runs the cluster's `python`."""
    token_path = root / "auth_token"
    token_path.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    token_path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_"))}
    env.update(
        RAY_TMPDIR=str(root),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _short_tmpdir(prefix: str) -> Path:
    # Ray puts Unix sockets under its temp dir: keep the path far below the 107-byte limit.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Head:
    url: str
    headers: dict[str, str]
    log: Path


def _kill_tree(root: psutil.Process, grace_s: float) -> list[psutil.Process]:
    """SIGTERM `ray start --block` (it then stops what it started), SIGKILL what is left of its
    process tree after grace_s. Returns the processes still alive after that."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    with contextlib.suppress(psutil.NoSuchProcess):
        root.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:  # workers and agents started after we listed the tree are its descendants
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.extend(proc.children(recursive=True))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(procs, timeout=10)
    return alive


@contextlib.contextmanager
def local_head(num_cpus: int = 2) -> Iterator[Head]:
    """A real `ray start --head` on 127.0.0.1, private to this test; stopped on exit."""
    from ray.job_submission import JobSubmissionClient

    root = _short_tmpdir("simgan-head-")
    env = _private_ray_env(root)
    headers = {"Authorization": f"Bearer {Path(env['RAY_AUTH_TOKEN_PATH']).read_text()}"}
    gcs, dashboard, agent, agent_grpc, env_agent, metrics, client = free_ports(7)
    log = root / "ray-start.log"
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
        f"--num-cpus={num_cpus}", "--disable-usage-stats", f"--temp-dir={root}",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    head = psutil.Process(proc.pid)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()}")
            try:
                JobSubmissionClient(url, headers=headers).list_jobs()
                break
            except Exception as exc:  # not up yet: connection refused, 503...
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"head not up after {HEAD_START_TIMEOUT_S}s ({exc}):\n{log.read_text()}"
                    )
                time.sleep(1)
        yield Head(url, headers, log)
    finally:
        survivors = _kill_tree(head, grace_s=15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"head processes survived: {survivors}"


def _job_runtime_env() -> dict:
    """cluster/runtime_env.yaml with the repository as working_dir.

    Its `pip` section (install the uploaded project into a virtualenv over the cluster's Python) is
    dropped here unless SIMGAN_TEST_JOB_PIP=1: this head's Python is the test venv, which has every
    dependency already, and Ray would clone the 2 GB venv for it (about 40 s more, 1.7 GB of disk)."""
    runtime_env = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    # The pinned dependencies, then the uploaded project (tests/unit/test_cluster_env.py).
    assert runtime_env["pip"]["packages"][-1] == "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
    if os.environ.get("SIMGAN_TEST_JOB_PIP") != "1":
        del runtime_env["pip"]
    runtime_env["working_dir"] = str(REPO)
    return runtime_env


def _submit_job(client: Any, entrypoint: str) -> str:
    # The dashboard answers before its job agent has registered; on a loaded machine that
    # takes a while ("No available agent to submit job"): retry that one answer.
    agent_deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=_job_runtime_env())
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > agent_deadline:
                raise
            time.sleep(1.0)


def _wait_job(client: Any, job_id: str) -> Any:
    """The job's terminal status (it is stopped after JOB_TIMEOUT_S)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job_id)
        time.sleep(1)
    return status


def _fail_job(client: Any, job_id: str, head: Head) -> None:
    info = client.get_job_info(job_id)
    pytest.fail(
        f"job {job_id}: {info.status} ({info.message})\n--- job logs ---\n"
        f"{client.get_job_logs(job_id)[-20000:]}\n--- ray start ---\n{head.log.read_text()[-5000:]}"
    )


# The job first reports where it runs from, then trains. `-P` keeps the cwd off sys.path, so the
# import resolves as in `python jobs/train.py`: through the PYTHONPATH that working_dir sets.
PROBE = (
    "python -P -c 'import json, os, simgan_dist; "
    'print("PROBE " + json.dumps({"module": simgan_dist.__file__, "cwd": os.getcwd(), '
    '"entries": sorted(os.listdir())}))\''
)


@pytest.mark.ray
def test_ray_job_submit_to_local_head(ray_local, digit_shards, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    overrides = {
        "data.synthetic": digit_shards["synthetic"],
        "data.real": digit_shards["real"],
        "run.storage_path": tmp_path,
        "run.name": "job-test",
    }
    entrypoint = "python jobs/train.py --preset debug " + " ".join(
        f"--set {key}={value}" for key, value in overrides.items()
    )
    with local_head() as head:
        client = JobSubmissionClient(head.url, headers=head.headers)
        job_id = _submit_job(client, f"{PROBE} && {entrypoint}")
        status = _wait_job(client, job_id)
        logs = client.get_job_logs(job_id)
        if status != JobStatus.SUCCEEDED:
            _fail_job(client, job_id, head)

    probe = json.loads(next(line for line in logs.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["module"].startswith(probe["cwd"]), probe  # the uploaded working dir
    assert not Path(probe["cwd"]).is_relative_to(REPO), probe
    assert {"jobs", "simgan_dist", "cluster"} <= set(probe["entries"]), probe
    assert not {".venv", ".git", "runs"} & set(probe["entries"]), probe  # the excludes
    assert list((tmp_path / "job-test").glob("checkpoint-*/state.json")), logs[-5000:]

    # Stopping that head left the session's in-process Ray alone.
    assert ray_local.is_initialized()
    assert ray_local.get(ray_local.remote(lambda: 42).remote(), timeout=60) == 42


@pytest.mark.ray
def test_a_killed_job_submitted_again_continues_its_run(
    ray_local, digit_shards, tmp_path: Path
) -> None:
    """The job itself (driver and workers) is stopped after its first checkpoint; the same
    command submitted again continues the run (jobs/train.py adds --resume-if-exists) and ends
    with the image count and weights of an uninterrupted run."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from simgan_dist.config import load_config
    from simgan_dist.train.checkpoint import NETWORKS_FILE, find_latest_checkpoint
    from simgan_dist.train.ray_train import run_training
    from simgan_dist.train.runs import start_run

    overrides = {
        "data.synthetic": digit_shards["synthetic"],
        "data.real": digit_shards["real"],
        "run.storage_path": tmp_path,
        "schedule.adversarial_nimg": 2400,
        "run.checkpoint_every_nimg": 480,
        "run.log_every_nimg": 480,
        "run.grid_every_nimg": 2400,
        "optim.optimizer": "adam",
    }
    cfg, run_dir = start_run(load_config(preset="debug", overrides=[
        f"{k}={v}" for k, v in {**overrides, "run.name": "straight"}.items()
    ]))  # fmt: skip
    straight = Path(run_training(cfg, run_dir).checkpoint.path)

    run_dir = tmp_path / "resubmitted"
    entrypoint = "python jobs/train.py --preset debug --set run.name=resubmitted " + " ".join(
        f"--set {key}={value}" for key, value in overrides.items()
    )
    with local_head() as head:
        client = JobSubmissionClient(head.url, headers=head.headers)
        first = _submit_job(client, entrypoint)
        # Ray writes its snapshot once a reported checkpoint is registered: resumable from then.
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not (run_dir / "checkpoint_manager_snapshot.json").exists():
            if client.get_job_status(first).is_terminal() or time.monotonic() > deadline:
                _fail_job(client, first, head)
            time.sleep(0.2)
        client.stop_job(first)
        if _wait_job(client, first) != JobStatus.STOPPED:
            _fail_job(client, first, head)  # it finished before the stop: lengthen the run
        stopped_at = find_latest_checkpoint(run_dir).name
        assert stopped_at < straight.name, stopped_at
        second = _submit_job(client, entrypoint)
        if _wait_job(client, second) != JobStatus.SUCCEEDED:
            _fail_job(client, second, head)

    resumed = find_latest_checkpoint(run_dir)
    assert resumed.name == straight.name == "checkpoint-000000002448"
    a, b = (torch.load(p / NETWORKS_FILE, weights_only=True) for p in (straight, resumed))
    for part in ("refiner", "disc"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=0, atol=1e-6, msg=key)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumes = [r["cur_nimg"] for r in rows if r.get("event") == "resumed"]
    assert len(resumes) == 1 and resumes[0] > 0, resumes  # continued, not started again


def _cluster_script(
    script: str, digit_shards: dict[str, Path], tmp_path: Path, run_name: str, timeout_s: int
) -> tuple[dict, str]:
    """Run a simulated-cluster script of tests/integration in a process of its own with a private
    Ray; (its RESULT, its output), after checking that it exited 0 with no run error."""
    root = _short_tmpdir("simgan-cluster-")
    try:
        proc = subprocess.run(
            [
                sys.executable, str(REPO / "tests" / "integration" / script),
                str(digit_shards["synthetic"]), str(digit_shards["real"]), str(tmp_path), run_name,
            ],
            cwd=REPO, env=_private_ray_env(root), capture_output=True, text=True,
            timeout=timeout_s,
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    result = json.loads(
        next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:]
    )
    assert result["error"] is None, output[-20000:]
    return result, output


@pytest.mark.ray
def test_two_workers_on_two_nodes(digit_shards, tmp_path: Path) -> None:
    result, output = _cluster_script(
        "_two_node_cluster.py", digit_shards, tmp_path, "two-nodes", 300
    )
    assert len(result["nodes"]) == 2, result
    assert len(set(result["worker_nodes"])) == 2, result  # one DeepSpeed rank per node
    assert set(result["worker_nodes"]) == set(result["nodes"]), result
    checkpoints = sorted((tmp_path / "two-nodes").glob("checkpoint-*/state.json"))
    assert checkpoints, output[-5000:]
    assert {p.name for p in checkpoints[-1].parent.iterdir()} >= {"rank-0000.pt", "rank-0001.pt"}


@pytest.mark.ray
@pytest.mark.slow
def test_an_elastic_run_goes_on_without_a_lost_node_and_grows_back(
    digit_shards, tmp_path: Path
) -> None:
    """run.min_workers (issue 29 item 3): a node removed mid-run leaves the run on one worker,
    resumed from its checkpoint; a node added back brings it to two again, resumed again."""
    result, _ = _cluster_script("_elastic_cluster.py", digit_shards, tmp_path, "elastic", 600)
    assert result["num_workers"] == [2.0, 1.0, 2.0], result
    assert len(result["resumed_at"]) == 2 and 32 <= result["resumed_at"][0], result


def test_cluster_files_are_valid(tmp_path: Path) -> None:
    """The cluster files parse as the tools that consume them would: Ray's own launcher schema for
    gpu-cluster.yaml, RuntimeEnv for both runtime envs, our config loader for the RayJob's config."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    from ray.runtime_env import RuntimeEnv

    from simgan_dist.config import load_config

    cluster = REPO / "cluster"
    runtime_env = yaml.safe_load((cluster / "runtime_env.yaml").read_text())
    RuntimeEnv(**runtime_env)
    assert {"/.venv", "/.git", "/runs", "/shards/*"} <= set(runtime_env["excludes"])

    launcher = prepare_config(yaml.safe_load((cluster / "gpu-cluster.yaml").read_text()))
    validate_config(launcher)
    workers = [t for name, t in launcher["available_node_types"].items() if name != "head"]
    assert launcher["head_node_type"] == "head" and len(workers) == 1
    assert workers[0]["min_workers"] >= 1 and workers[0]["max_workers"] >= workers[0]["min_workers"]
    assert any("simgan-dist" in command for command in launcher["setup_commands"])
    for command in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]:
        assert "ray stop" in command or "RAY_AUTH_MODE=token ray start" in command, command

    config_map, job = yaml.safe_load_all((cluster / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python jobs/train.py --config /etc/simgan/")
    assert "--resume-if-exists" in spec["entrypoint"] and spec["backoffLimit"] > 0
    job_env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**job_env)
    assert job_env["pip"] == runtime_env["pip"]
    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["authOptions"] == {"mode": "token"}
    assert cluster_spec["headGroupSpec"]["template"]["spec"]["containers"]
    (gpu_group,) = cluster_spec["workerGroupSpecs"]
    limits = gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    config_file = tmp_path / "train.yaml"
    config_file.write_text(config_map["data"]["train.yaml"])
    cfg = load_config(config_file)
    assert cfg.run.use_gpu and cfg.run.num_workers == gpu_group["replicas"]
