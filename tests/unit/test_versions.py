"""Private APIs of our dependencies: each is listed in train/versions.py, checked before use, and
pyproject.toml's bounds are the tested ranges."""

from __future__ import annotations

import ast
import re
import tomllib
import warnings
from pathlib import Path

import pytest

from simgan_dist.train import versions

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "simgan_dist"
# Python's own dunder names (the data model): reading them reaches into nothing private. A
# dunder a library invents (deepspeed.ops.__compatible_ops__) is private and must be listed.
PUBLIC_DUNDERS = {"__name__", "__qualname__", "__module__", "__class__", "__dict__", "__doc__",
                  "__file__", "__version__", "__init__", "__annotations__", "__cause__",
                  "__context__", "__traceback__", "__wrapped__", "__func__", "__self__",
                  "__mro__", "__bases__", "__path__", "__spec__", "__code__", "__defaults__",
                  "__kwdefaults__", "__slots__", "__enter__", "__exit__", "__call__"}  # fmt: skip
API_BY_CONSTANT = {
    name: value for name, value in vars(versions).items() if isinstance(value, versions.PrivateAPI)
}


def _private_accesses() -> list[tuple[str, int, str, ast.AST | None]]:
    """(module, line, private name, enclosing function) of every reach into another package's
    private names: an import of a module or name starting with "_", and `x._name` where x is
    not self or cls (our own private attributes stay ours)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

        def enclosing(node: ast.AST, parents: dict[ast.AST, ast.AST] = parents) -> ast.AST | None:
            while node in parents:
                node = parents[node]
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    return node
            return None

        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] not in ("simgan_dist", "__future__"):
                    if any(p.startswith("_") for p in node.module.split(".")):
                        names = [node.module]  # one access: a private module
                    else:
                        names = [a.name for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                names = [p for a in node.names for p in a.name.split(".") if p.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if not own and node.attr not in PUBLIC_DUNDERS:
                    names = [node.attr]
            found += [(module, node.lineno, name, enclosing(node)) for name in names]
    return found


def _required_in(function: ast.AST) -> set[str]:
    """Names X of the versions.require(versions.X) calls in a function."""
    return {
        call.args[0].attr
        for call in ast.walk(function)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "require"
        and call.args
        and isinstance(call.args[0], ast.Attribute)
    }


def test_every_private_access_is_listed_and_checked_first() -> None:
    accesses = _private_accesses()
    assert accesses, "the scan found nothing: it is broken, or the package is free of them"
    for module, line, name, function in accesses:
        where = f"{module}:{line} ({name})"
        listed = [
            constant
            for constant, api in API_BY_CONSTANT.items()
            if api.used_in == module
            and (name in api.name.split(".") or api.name.startswith(f"{name}."))
        ]
        assert listed, f"{where}: a private access not listed in simgan_dist/train/versions.py"
        assert function is not None, f"{where}: at module level, before any check can run"
        assert _required_in(function) & set(listed), (
            f"{where}: its function does not call versions.require(versions.{listed[0]})"
        )


def test_listed_modules_exist_and_names_are_unique() -> None:
    assert len({api.name for api in versions.PRIVATE_APIS}) == len(versions.PRIVATE_APIS)
    assert set(versions.PRIVATE_APIS) == set(API_BY_CONSTANT.values())
    for api in versions.PRIVATE_APIS:
        assert (ROOT / Path(*api.used_in.split("."))).with_suffix(".py").is_file(), api


def _bounds(requirement: str) -> tuple[str, str]:
    low = re.search(r">=\s*([0-9.]+)", requirement)
    high = re.search(r"<\s*([0-9.]+)", requirement)
    assert low and high, f"pyproject.toml: {requirement!r} needs a lower and an upper bound"
    return low.group(1), high.group(1)


def test_pyproject_bounds_are_the_tested_ranges() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower(): r for r in dependencies}
    for distribution in {api.distribution for api in versions.PRIVATE_APIS}:
        low, high = _bounds(by_name[distribution])
        for api in versions.PRIVATE_APIS:
            if api.distribution == distribution:
                assert (api.tested_from, api.tested_below) == (low, high), (api, by_name)


def test_installed_versions_are_tested_ones() -> None:
    for api in versions.PRIVATE_APIS:
        versions.require(api)  # the versions this venv pins (.ci/constraints.txt)


@pytest.mark.parametrize(
    "version,inside",
    [("2.60.0", True), ("2.60.9", True), ("2.60.0rc1", True), ("2.59.9", False),
     ("2.61.0", False), ("3.0", False), ("2.6", False)],
)  # fmt: skip
def test_range_compares_release_numbers(version: str, inside: bool) -> None:
    assert versions.in_range(version, "2.60", "2.61") is inside


def test_untested_version_stops_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.OVERRIDE_ENV, raising=False)
    monkeypatch.setattr(versions, "installed", lambda distribution: "2.61.0")
    with pytest.raises(RuntimeError) as caught:
        versions.require(versions.RAY_CLUSTER_SWITCH)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("ray 2.61.0", "ENABLE_RAY_CLUSTER", "simgan_dist.train.ray_start",
                 "ray>=2.60,<2.61", "requirements-cluster.txt", versions.OVERRIDE_ENV):  # fmt: skip
        assert part in message, (part, message)


def test_override_turns_the_error_into_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.OVERRIDE_ENV, "1")
    monkeypatch.setattr(versions, "installed", lambda distribution: "0.20.1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        versions.require(versions.DEEPSPEED_RESTORE_BIT16)
    assert any("deepspeed 0.20.1" in str(w.message) for w in caught), caught
