"""Search files: domains, fixed values, Tune settings, and errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray import tune

from simgan_dist.config import ConfigError, load_config
from simgan_dist.tune.space import (
    SEARCHES_DIR,
    apply_params,
    fixed_params,
    load_search,
    param_space,
    parse_search,
)

BASE = load_config(preset="debug")


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_domains_become_tune_domains(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "space": {
                "loss.reg_lambda": {"loguniform": [0.01, 1.0]},
                "optim.disc_lr": {"uniform": [0.0001, 0.001]},
                "schedule.k_g": {"choice": [1, 2, 5]},
                "schedule.buffer_size": {"loguniform": [16, 256]},
                "loss.psi": {"grid": ["identity", "gradients"]},
                "score.every_nimg": 32,
            },
            "tune": {"num_samples": 3, "max_concurrent_trials": 2},
        },
    )
    search = load_search(path, BASE)
    assert search.searched() == [
        "loss.reg_lambda",
        "optim.disc_lr",
        "schedule.k_g",
        "schedule.buffer_size",
        "loss.psi",
    ]
    assert fixed_params(search) == {"score.every_nimg": 32}
    assert search.settings.num_samples == 3 and search.settings.max_concurrent_trials == 2
    assert search.num_trials() == 6  # 3 draws for each of the 2 grid points
    space = param_space(search)
    assert isinstance(space["loss.reg_lambda"], tune.search.sample.Float)
    assert isinstance(space["schedule.k_g"], tune.search.sample.Categorical)
    # An integer field samples integers, bounds inclusive.
    assert isinstance(space["schedule.buffer_size"], tune.search.sample.Integer)
    assert space["schedule.buffer_size"].upper == 257
    assert space["loss.psi"] == {"grid_search": ["identity", "gradients"]}
    # A round trip through the file kept with the experiment gives the same search.
    again = parse_search(yaml.safe_load(search.to_yaml()), BASE)
    assert again.space == search.space and again.settings == search.settings


def test_apply_params_sets_dotted_fields() -> None:
    cfg = apply_params(BASE, {"loss.reg_lambda": 0.1, "schedule.k_g": 5, "loss.psi": "gradients"})
    assert (cfg.loss.reg_lambda, cfg.schedule.k_g, cfg.loss.psi) == (0.1, 5, "gradients")
    assert cfg.model == BASE.model


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"loss.lambda": {"choice": [1]}}, r"space\.loss\.lambda: unknown config field"),
        ({"loss.reg_lambda": {"between": [0, 1]}}, r"space\.loss\.reg_lambda: must be a value"),
        ({"loss.reg_lambda": {"loguniform": [0, 1]}}, r"loguniform: low must be > 0"),
        ({"loss.reg_lambda": {"uniform": [1, 0.5]}}, r"uniform: low must be < high"),
        ({"schedule.k_g": {"uniform": [1, 2.5]}}, r"integer field needs integer bounds"),
        (
            {"schedule.batch_size": {"choice": [8, 10]}},
            r"space\.schedule\.batch_size: value 10 gives an invalid config: "
            r"schedule\.batch_size: must split into equal even micro-batches",
        ),
        ({"loss.psi": {"grid": ["identity", "sobel"]}}, r"value 'sobel'.*must be one of"),
        ({"run.name": "x"}, r"space\.run\.name: is set per trial"),
        ({"score.every_nimg": 40}, r"space: fixed values: score\.every_nimg: must be a multiple"),
    ],
)
def test_bad_space_names_file_and_field(tmp_path: Path, space: dict, message: str) -> None:
    path = _write(tmp_path, {"space": space})
    with pytest.raises(ConfigError, match=message) as err:
        load_search(path, BASE)
    assert str(err.value).startswith(f"{path}: ")


def test_bad_settings_and_sections(tmp_path: Path) -> None:
    space = {"loss.reg_lambda": {"choice": [0.1, 1.0]}}
    with pytest.raises(ConfigError, match=r"tune\.num_samples: must be >= 1"):
        load_search(_write(tmp_path, {"space": space, "tune": {"num_samples": 0}}), BASE)
    with pytest.raises(ConfigError, match=r"tune\.schedule: unknown key"):
        load_search(_write(tmp_path, {"space": space, "tune": {"schedule": "asha"}}), BASE)
    with pytest.raises(ConfigError, match=r"search: known sections are space and tune"):
        load_search(_write(tmp_path, {"space": space, "trials": 4}), BASE)
    with pytest.raises(ConfigError, match=r"space: needs fields"):
        load_search(_write(tmp_path, {"tune": {}}), BASE)


@pytest.mark.parametrize("name", sorted(p.stem for p in SEARCHES_DIR.glob("*.yaml")))
def test_bundled_searches_load_by_name(name: str) -> None:
    base = load_config(preset=name)  # each bundled search is for the preset of its name
    search = load_search(name, base)
    assert search.searched()
    assert apply_params(base, fixed_params(search)).score.every_nimg > 0
