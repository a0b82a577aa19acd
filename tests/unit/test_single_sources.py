"""Each set of choices is spelled once (issue 28 item 5): the Literal in config/schema.py that
types its field; everything else reads it with get_args."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from simgan_dist import config
from simgan_dist.model.networks import DISCRIMINATOR_LAYOUTS

PACKAGE = Path(config.__file__).resolve().parents[1]
CHOICES = {
    "psi": config.PSI_CHOICES,
    "discriminator": config.DISCRIMINATOR_CHOICES,
    "precision": config.PRECISION_CHOICES,
    "refine precision": config.REFINE_PRECISION_CHOICES,
    "on_bad_sample": config.BAD_SAMPLE_CHOICES,
}


def _spellings(choices: tuple[str, ...]) -> list[str]:
    """file:line of every tuple, list or Literal[...] in the package that lists exactly these."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List) and node.elts:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(values) == len(node.elts) and set(values) == set(choices):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_each_set_of_choices_is_spelled_once(name: str) -> None:
    assert [where.split(":")[0] for where in _spellings(CHOICES[name])] == ["config/schema.py"]


def test_every_discriminator_choice_has_a_layout() -> None:
    assert tuple(DISCRIMINATOR_LAYOUTS) == config.DISCRIMINATOR_CHOICES
