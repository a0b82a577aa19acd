"""The cluster environment is the tested one: the image, the node pins and the runtime envs all
come from .ci/constraints.txt, and the cluster files keep the conventions docs/cluster.md names."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from simgan_dist.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DOCKERFILE = CLUSTER / "Dockerfile"
WORKING_DIR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
GPU_PRESETS = ("gaze", "hand")  # the paper's settings, sized for GPUs
# Dockerfile instructions (https://docs.docker.com/reference/dockerfile/).
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL"}  # fmt: skip


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cluster_requirements", CLUSTER / "requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    """Canonical name -> version of a file of name==version lines (comments skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"{path.name}: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _constraints() -> dict[str, str]:
    return _pins(ROOT / ".ci" / "constraints.txt")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dependency_names() -> list[str]:
    return [
        re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]).lower()
        for r in _project()["dependencies"]
    ]


# --- requirements-cluster.txt and the runtime envs' pins --------------------------------------


def test_cluster_requirements_agree_with_ci_constraints() -> None:
    cluster, ci = _pins(ROOT / "requirements-cluster.txt"), _constraints()
    differ = {n: (v, ci.get(n)) for n, v in cluster.items() if ci.get(n) != v}
    assert not differ, f"requirements-cluster.txt vs .ci/constraints.txt: {differ}"
    missing = [n for n in _dependency_names() if n not in cluster]
    assert not missing, f"runtime dependencies without a pin in requirements-cluster.txt: {missing}"
    # Runtime only: no test or lint tool rides along to the cluster.
    assert not {"pytest", "ruff", "mypy", "moto", "import-linter"} & set(cluster)


def test_generated_files_are_current() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in _generator().expected().items()
        if path.read_text() != text
    ]
    assert not stale, f"stale: {stale}; run .venv/bin/python cluster/requirements.py"


def _runtime_envs() -> tuple[dict, dict]:
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    _, job = yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text())
    return runtime_env, yaml.safe_load(job["spec"]["runtimeEnvYAML"])


def test_runtime_env_spec_changes_with_the_dependencies() -> None:
    """Ray reuses a node's virtualenv while the pip spec's text is unchanged: the spec pins every
    direct dependency but ray, so adding or bumping one makes a new virtualenv."""
    runtime_env, job_env = _runtime_envs()
    packages = runtime_env["pip"]["packages"]
    assert packages[-1] == WORKING_DIR
    pinned = {re.sub(r"[-_.]+", "-", p.split("==")[0]).lower(): p.split("==")[1]
              for p in packages[:-1]}  # fmt: skip
    ci = _constraints()
    assert pinned == {n: ci[n] for n in _dependency_names() if n != "ray"}
    assert job_env["pip"] == runtime_env["pip"]


def test_rays_venv_key_changes_with_the_dependencies() -> None:
    """What the pins are for, by Ray's own cache key (pip://<hash of the spec>, computed where
    the job is submitted): the project line alone keys every job the same whatever
    pyproject.toml says; with the pins, adding a dependency or bumping one changes the key."""
    from ray._private.runtime_env.pip import get_uri  # Ray 2.60's key (a test-only private use)

    runtime_env, _ = _runtime_envs()
    packages = runtime_env["pip"]["packages"]
    key = get_uri({"pip": {"packages": packages}})
    assert key == get_uri({"pip": {"packages": list(packages)}})
    assert get_uri({"pip": {"packages": [WORKING_DIR]}}) != key
    generator = _generator()
    pins = generator.constraints()
    assert generator.runtime_env_pins(pins) == packages[:-1]
    pins["numpy"] = ("numpy", "9.9.9")  # a bumped pin
    assert get_uri({"pip": {"packages": [*generator.runtime_env_pins(pins), WORKING_DIR]}}) != key
    added = [*packages[:-1], "einops==0.8.2", WORKING_DIR]  # an added dependency
    assert get_uri({"pip": {"packages": added}}) != key


def test_runtime_envs_hold_no_credentials() -> None:
    """env_vars of a runtime env show on the dashboard's job page: no secrets there."""
    for env in _runtime_envs():
        for key in env.get("env_vars", {}):
            assert not re.search(r"secret|key|token|password|credential", key, re.I), key


# --- pyproject.toml --------------------------------------------------------------------------


def test_gcs_extra() -> None:
    """gs:// is advertised: its fsspec backend is one extra away."""
    assert any(r.startswith("gcsfs") for r in _project()["optional-dependencies"]["gcs"])


# --- the Dockerfile --------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    found, pending = [], ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        keyword, _, arguments = text.partition(" ")
        assert keyword.upper() in INSTRUCTIONS, f"{path.name}:{number}: unknown {keyword!r}"
        assert keyword == keyword.upper(), f"{path.name}:{number}: write {keyword.upper()}"
        found.append((keyword, arguments.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    return found


def test_dockerfile_parses_and_starts_from_the_pinned_ray_image() -> None:
    instructions = _instructions(DOCKERFILE)
    assert instructions[0][0] == "FROM", "the first instruction must be FROM"
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    python = re.search(r">=\s*3\.(\d+)", _project()["requires-python"]).group(1)  # type: ignore[union-attr]
    assert froms == [f"rayproject/ray:{_constraints()['ray']}-py3{python}-gpu"], froms
    text = DOCKERFILE.read_text()
    assert not re.search(r":latest\b", text), "no moving tags"
    assert not re.search(r"(?m)^\s*(ARG|ENV)\b.*\bray\b", text), "Ray's version is in FROM only"


def test_dockerfile_installs_the_pins_in_order() -> None:
    instructions = _instructions(DOCKERFILE)
    copies = [i for i, (k, a) in enumerate(instructions) if k == "COPY"]
    runs = [(i, a) for i, (k, a) in enumerate(instructions) if k == "RUN"]
    first_copy = instructions[copies[0]][1].split()
    assert "requirements-cluster.txt" in first_copy, "the pins come first (their own layer)"
    installs = [
        command.strip()
        for _, args in runs
        for command in args.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    assert installs, "no pip install"
    for command in installs:
        words = shlex.split(command)
        constrained = any(
            a in ("-c", "-r") and b == "requirements-cluster.txt"
            for a, b in zip(words, words[1:], strict=False)
        )
        assert constrained or "--no-deps" in words, f"unpinned install: {command}"
    torch, deepspeed = (
        next(i for i, c in enumerate(installs) if c.endswith(f" {name}"))
        for name in ("torch", "deepspeed")
    )
    assert torch < deepspeed and "--no-build-isolation" in installs[deepspeed]


def test_dockerfile_copies_exist_and_pass_its_dockerignore() -> None:
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, args in _instructions(DOCKERFILE):
        if keyword != "COPY":
            continue
        sources = [w for w in args.split() if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by the dockerignore"


def _docker_daemon() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _docker_daemon(), reason="no reachable Docker daemon")
def test_dockerfile_passes_docker_build_check() -> None:
    """Where Docker runs: BuildKit's own parser and linter, without building anything."""
    result = subprocess.run(
        ["docker", "build", "--check", "--file", str(DOCKERFILE), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_script_is_valid_bash() -> None:
    script = CLUSTER / "build-image.sh"
    assert script.stat().st_mode & 0o111, "build-image.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


# --- cluster conventions ---------------------------------------------------------------------


def test_heads_take_no_cpu_work() -> None:
    launcher = yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())
    assert launcher["available_node_types"][launcher["head_node_type"]]["resources"] == {"CPU": 0}
    _, job = yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text())
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_gpu_configs_train_in_bf16(tmp_path: Path) -> None:
    for name in GPU_PRESETS:
        assert load_config(preset=name).engine.precision == "bf16", name
    config_map, _ = yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text())
    config_file = tmp_path / "train.yaml"
    config_file.write_text(config_map["data"]["train.yaml"])
    cfg = load_config(config_file)
    assert cfg.run.use_gpu and cfg.engine.precision == "bf16"


def test_collective_timeout_is_a_checked_field() -> None:
    assert load_config(preset="debug").run.collective_timeout_s == 1800
    assert load_config(overrides=["run.collective_timeout_s=60"]).run.collective_timeout_s == 60
    with pytest.raises(ConfigError, match="collective_timeout_s"):
        load_config(overrides=["run.collective_timeout_s=0"])


def test_collective_timeout_reaches_ray_trains_torch_config() -> None:
    """run_training hands the field to TorchConfig(timeout_s=...), the process group's timeout
    (read from the source: running it needs Ray)."""
    source = (ROOT / "simgan_dist" / "train" / "ray_train.py").read_text()
    function = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "run_training"
    )
    calls = {
        ast.unparse(call.func): call for call in ast.walk(function) if isinstance(call, ast.Call)
    }
    keywords = {k.arg: ast.unparse(k.value) for k in calls["TorchTrainer"].keywords}
    assert keywords.get("torch_config", "").startswith("TorchConfig("), keywords
    timeout = {k.arg: ast.unparse(k.value) for k in calls["TorchConfig"].keywords}
    assert timeout == {"timeout_s": "cfg.run.collective_timeout_s"}
