"""The docs stay true to the tree: docs/config.md is what the generator renders from schema.py,
every file, module and link anchor named in the docs and in the package's text exists, and the
README stays a ten-minute read."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from simgan_dist.config.reference import COMMAND, DOC_PATH, render

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS += [ROOT / "cluster" / "README.md", ROOT / "shards" / "README.md"]
PACKAGE = sorted((ROOT / "simgan_dist").rglob("*.py"))

# A path ending in .py or .md: `simgan_dist/x/y.py`, `train/loop.py` (relative to the package),
# `docs/x.md`, `tests/...`, a link's `results.md`, or a bare `loop.py`.
PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.(?:py|md))(?!\w)")
MODULE = re.compile(r"(?<![\w./])simgan_dist(?:\.\w+)+")
LINK = re.compile(r"\]\(([^)\s]*?)#([\w-]+)\)")
# Files the commands write (report.md under an eval's --out, trials.md in a Tune experiment).
OUTPUTS = {"report.md", "trials.md"}
# Files inside other projects' installed packages.
EXTERNAL = ("skimage/", "sklearn/", "mlxtend/")


def _tree_names() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {Path(name).name for name in listed.split()}


def _path_exists(token: str, where: Path, names: set[str]) -> bool:
    if Path(token).name in OUTPUTS or token.startswith(EXTERNAL):
        return True
    if "/" not in token:  # a bare file name: some file of the tree has it
        return token in names or (where.parent / token).exists()
    bases = [ROOT, ROOT / "simgan_dist", where.parent]
    return any((base / token).exists() for base in bases)


def _module_exists(dotted: str) -> bool:
    """simgan_dist.a.b[.name]: a module, or a name a module (or package __init__) mentions."""
    base = ROOT
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if (base / part).is_dir():
            base = base / part
            continue
        module = base / f"{part}.py"
        if module.exists():
            rest = parts[i + 1 :]
            return not rest or re.search(rf"\b{rest[0]}\b", module.read_text()) is not None
        init = base / "__init__.py"
        return init.exists() and re.search(rf"\b{part}\b", init.read_text()) is not None
    return True


def _missing_names(files: list[Path]) -> list[str]:
    names = _tree_names()
    missing = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            where = f"{file.relative_to(ROOT)}:{number}"
            for match in PATH.finditer(line):
                if not _path_exists(match.group(1), file, names):
                    missing.append(f"{where}: {match.group(1)}")
            for match in MODULE.finditer(line):
                if not _module_exists(match.group(0).rstrip(".")):
                    missing.append(f"{where}: {match.group(0)}")
    return missing


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)  # a `# comment` is no heading
    headings = re.findall(r"^#+ (.+)$", prose, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_config_reference_is_generated_from_the_schema() -> None:
    current = DOC_PATH.read_text() if DOC_PATH.exists() else ""
    assert current == render(), f"docs/config.md is stale: run .venv/bin/{COMMAND}"


def test_every_file_and_module_the_docs_name_exists() -> None:
    assert _missing_names(DOCS) == []


def test_every_file_and_module_the_package_names_exists() -> None:
    assert _missing_names(PACKAGE) == []


def test_every_link_to_a_heading_finds_it() -> None:
    broken = []
    for file in DOCS:
        for target, anchor in LINK.findall(file.read_text()):
            page = (file.parent / target) if target else file
            if not page.exists() or anchor not in _anchors(page.read_text()):
                broken.append(f"{file.relative_to(ROOT)}: {target}#{anchor}")
    assert broken == []


def test_the_readme_is_a_ten_minute_read() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
