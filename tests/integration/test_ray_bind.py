"""A local Ray started by simgan-dist listens on loopback only (GCS, raylet, workers, agents, metrics).

Run in a process of its own with a private RAY_TMPDIR: the pytest session's Ray (`ray_local`) is
left alone, and the process tree of that child is exactly the new instance's processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

_PROBE = textwrap.dedent(
    """
    import json, time
    import psutil, ray
    from simgan_dist.train.ray_start import ensure_ray

    ensure_ray(num_cpus=1)

    @ray.remote
    class Echo:
        def ping(self):
            return 1

    @ray.remote
    def square(x):
        return x * x

    assert ray.get(square.remote(3)) == 9
    echo = Echo.remote()
    assert ray.get(echo.ping.remote()) == 1
    time.sleep(3)  # the agents open their ports a moment after the node is up
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            listening.append([conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()])
    print("RESULT " + json.dumps({"listening": listening, "node_ip": ray.util.get_node_ip_address()}))
    ray.shutdown()
    """
)


def test_local_ray_listens_on_loopback_only() -> None:
    with tempfile.TemporaryDirectory(prefix="rb-", dir="/tmp") as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(RAY_TMPDIR=root, RAY_USAGE_STATS_ENABLED="0")
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
            timeout=180, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["node_ip"] == "127.0.0.1"
    names = {name for _, _, name in result["listening"]}
    # The instance did start its services: GCS and raylet at least are in the listing.
    assert {"gcs_server", "raylet"} <= names, result["listening"]
    beyond = [entry for entry in result["listening"] if entry[0] not in LOOPBACK]
    assert not beyond, f"listening beyond loopback: {beyond}"
