"""docs/config.md, generated: every config field's name, type, default, rule and meaning.

The meaning is the `#` comment written above the field in its section's source (and any comment
at the end of its line); the section's title is its docstring. So the reference cannot drift from
schema.py: edit the comments there, then regenerate.

    python -m simgan_dist.config.reference          # rewrite docs/config.md
    python -m simgan_dist.config.reference --check  # exit 1 when docs/config.md is stale

tests/unit/test_docs.py fails when docs/config.md differs from what this module renders.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from simgan_dist.config.schema import Config

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"
COMMAND = "python -m simgan_dist.config.reference"

# What the generator cannot read from the fields: the file format around them.
INTRO = """\
YAML with one mapping per section below. A file may start with `preset: NAME`
(`simgan_dist/config/presets/`) and override any field; `--set section.field=value` overrides
one on the command line. An unknown key, a wrong type or an out-of-range value stops with one
line that names the field and the file, e.g.
`simgan: config error: my.yaml: schedule.batch_size: must be an integer, got 'eight'`.

`storage_options` at the top level (default `{}`) holds fsspec options for the whole config: it
is copied into `data.storage_options` and `run.storage_options` (a section's own keys win), e.g.
`storage_options: {endpoint_url: http://127.0.0.1:9000}` or
`--set storage_options.endpoint_url=...`. Credentials are refused in every `storage_options`:
they come from the AWS/gcloud environment and config files.

"rule" is what a value must satisfy, checked when the section is built; rules that involve
several fields (e.g. `schedule.batch_size` split evenly over `run.num_workers`) are checked
too and name the field they are about."""


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: str
    rule: str
    meaning: str


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Line number -> comment text, and the lines that hold nothing but a comment."""
    comments: dict[int, str] = {}
    alone: set[int] = set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line = tok.start[0]
            comments[line] = tok.string.lstrip("#").strip()
            if lines[line - 1].strip().startswith("#"):
                alone.add(line)
    return comments, alone


def _field_comments(cls: type) -> dict[str, str]:
    """Each field's comment block above it, then its end-of-line comment, as one text."""
    source = Path(inspect.getsourcefile(cls) or "").read_text()
    comments, alone = _comments(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            break
    else:
        raise LookupError(f"no class {cls.__name__} in its source")
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        line = stmt.lineno - 1
        while line in alone:
            above.insert(0, comments[line])
            line -= 1
        end = stmt.end_lineno or stmt.lineno
        inline = [comments[n] for n in range(stmt.lineno, end + 1) if n in comments]
        parts = [" ".join(above)] if above else []
        parts += [c for c in inline if c and c not in above]
        out[stmt.target.id] = "; ".join(parts)
    return out


def _type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(hint))
    if origin is dict:
        return "mapping"
    if origin is not None:
        args = ", ".join(_type(a) for a in typing.get_args(hint))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint))


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _inherited_comments(cls: type) -> dict[str, str]:
    """_field_comments of cls and of the sections it derives from (a subclass's win)."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base) and "__annotations__" in vars(base):
            out.update({k: v for k, v in _field_comments(base).items() if v})
    return out


def section_docs(cls: type) -> list[FieldDoc]:
    hints = typing.get_type_hints(cls)
    meanings = _inherited_comments(cls)
    docs = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested section
            title = " ".join((inspect.getdoc(hint) or "").split())
            for doc in section_docs(hint):
                meaning = doc.meaning or title
                docs.append(
                    dataclasses.replace(doc, name=f"{field.name}.{doc.name}", meaning=meaning)
                )
            continue
        rule = field.metadata.get("rule")
        docs.append(
            FieldDoc(
                name=field.name,
                type=_type(hints[field.name]),
                default=_default(field),
                rule=rule.message.removeprefix("must be ") if rule is not None else "",
                meaning=meanings.get(field.name, ""),
            )
        )
    return docs


def render() -> str:
    """The whole of docs/config.md."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the comments in simgan_dist/config/schema.py:",
        "     edit those, then regenerate; tests/unit/test_docs.py checks that this file is current. -->",
        "",
        INTRO,
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        title = " ".join((inspect.getdoc(cls) or "").split())
        out += ["", f"## `{section.name}`", "", title, ""]
        out += ["| field | type | default | rule | meaning |", "|---|---|---|---|---|"]
        for doc in section_docs(cls):
            cells = [f"`{section.name}.{doc.name}`", doc.type, doc.default, doc.rule, doc.meaning]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC_PATH, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="exit 1 when --out is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
