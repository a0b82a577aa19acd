"""Fixed transforms of the synthetic images (eval/transforms.py) and `simgan screen --transform`."""

from __future__ import annotations

import json

import pytest
import torch

from simgan_dist.cli import main
from simgan_dist.data.reader import load_arrays
from simgan_dist.eval.transforms import apply_transform, parse_transform


def _digits(n: int = 8) -> torch.Tensor:
    x = torch.full((n, 1, 28, 28), -1.0)
    x[:, :, 6:22, 12:16] = 1.0  # a bar: a "1"
    return x


def test_parse_gives_defaults_amounts_and_chains() -> None:
    assert parse_transform("warp") == [("warp", 1.0)]
    assert parse_transform("affine:10+dilate:0.25") == [("affine", 10.0), ("dilate", 0.25)]
    assert parse_transform("histmatch") == [("histmatch", 0.0)]


@pytest.mark.parametrize(
    ("spec", "says"),
    [("twirl", "unknown step 'twirl'"), ("warp:x", "must be a number"), ("warp:0", "> 0"),
     ("dilate:2", "in (0, 1]"), ("histmatch:1", "takes no amount"), ("warp:nan", "> 0")],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_part(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match="--transform") as err:
        parse_transform(spec)
    assert says in str(err.value)


def test_each_step_does_what_it_says() -> None:
    x, real, gen = _digits(), _digits(), torch.Generator().manual_seed(0)
    ink = (x > 0).float().mean()
    assert (apply_transform(x, [("dilate", 1.0)], real, gen) > 0).float().mean() > ink
    assert (apply_transform(x, [("erode", 1.0)], real, gen) > 0).float().mean() < ink
    blurred = apply_transform(x, [("blur", 1.0)], real, gen)
    assert blurred.max() < 1.0 and abs(float(blurred.mean() - x.mean())) < 0.02  # ink kept
    warped = apply_transform(x, [("warp", 1.5)], real, gen)
    assert not torch.equal(warped, x) and warped.min() >= -1 and warped.max() <= 1
    assert not torch.equal(warped[0], warped[1])  # one field per image
    wide = apply_transform(x, [("widen", 1.5)], real, gen)
    assert (wide > 0).any(dim=2).sum() > (x > 0).any(dim=2).sum()  # more columns hold ink
    assert torch.equal((wide > 0).any(dim=3), (x > 0).any(dim=3))  # the same rows
    turned = apply_transform(x, [("affine", 30.0)], real, gen)
    assert not torch.equal(turned, x)
    # Matching a corpus's own histogram leaves it (nearly) as it is.
    soft = blurred + 0.01 * torch.randn(x.shape, generator=gen)  # no ties between pixel values
    matched = apply_transform(soft, [("histmatch", 0.0)], soft, gen)
    assert (matched - soft.clamp(-1, 1)).abs().max() < 0.05


def test_random_steps_repeat_for_a_seed() -> None:
    x = _digits()
    first = apply_transform(x, parse_transform("warp+affine"), x, torch.Generator().manual_seed(3))
    again = apply_transform(x, parse_transform("warp+affine"), x, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_screen_scores_a_transform_without_training(digit_shards, tmp_path, capsys) -> None:
    out = tmp_path / "warp"
    args = ["screen", "--preset", "debug", "--validation", str(digit_shards["real_train_labeled"]),
            "--out", str(out), "--num-seeds", "2", "--epochs", "1", "--threads", "1",
            "--set", f"data.synthetic={digit_shards['synthetic']}",
            "--set", f"data.real={digit_shards['real']}", "--transform", "warp:1.0",
            "--variants", "2"]  # fmt: skip
    main(args)
    assert "accuracy on validation digits" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["screen"]["transform"] == "warp:1.0" and report["screen"]["num_images"] == 0
    assert report["num_refined_train"] == 2 * report["num_train"]
    syn, syn_metas = load_arrays(str(digit_shards["synthetic"]))
    ref, ref_metas = load_arrays(str(out / "refined"))
    assert [m["label"] for m in ref_metas[: len(syn_metas)]] == [m["label"] for m in syn_metas]
    assert (ref[: len(syn)] != syn).any()  # the digits were bent
