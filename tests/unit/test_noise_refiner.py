"""A refiner with a noise input (model.refiner_noise_channels): several refinements of one image,
a diversity term that makes R use its noise, and `refine --variants K` with keys and lineage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from simgan_dist.config import ConfigError, ModelConfig, load_config
from simgan_dist.data.reader import load_arrays
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train.engine import TorchUpdater, make_optimizer
from simgan_dist.train.loop import refiner_step

NOISY = ModelConfig(refiner_features=8, refiner_blocks=1, refiner_noise_channels=2)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_noise_gives_several_refinements_and_given_noise_repeats() -> None:
    torch.manual_seed(0)
    refiner = build_refiner(NOISY)
    x = _images()
    assert not torch.allclose(refiner(x), refiner(x))  # fresh noise per call
    noise = refiner.noise_like(x, torch.Generator().manual_seed(3))
    assert noise is not None and noise.shape == (4, 2, 28, 28)
    # One value per image and channel, constant over the image (no per-pixel texture).
    assert torch.all(noise == noise[..., :1, :1])
    torch.testing.assert_close(refiner(x, noise=noise), refiner(x, noise=noise))
    with pytest.raises(ValueError, match="noise must be"):
        refiner(x, noise=noise[:, :1])
    plain = build_refiner(dataclasses.replace(NOISY, refiner_noise_channels=0))
    assert plain.noise_like(x) is None
    with pytest.raises(ValueError, match="no noise input"):
        plain(x, noise=noise)


def _digits(n: int, seed: int) -> torch.Tensor:
    """n images of a white 8x8 square at a random place on black: a plain background."""
    images = torch.full((n, 1, 28, 28), -1.0)
    corners = torch.randint(0, 20, (n, 2), generator=torch.Generator().manual_seed(seed))
    for image, (top, left) in zip(images, corners.tolist(), strict=True):
        image[:, top : top + 8, left : left + 8] = 1.0
    return images


@pytest.mark.slow  # out of the quick tier
@pytest.mark.parametrize("region", ["all", "background"])
def test_diversity_term_grows_the_difference_between_noise_draws(region: str) -> None:
    cfg = load_config(
        preset="debug",
        overrides=[
            "run.num_workers=1",
            "model.refiner_noise_channels=2",
            "loss.diversity_lambda=5.0",
            "loss.reg_lambda=0.0",
            f"loss.diversity_region={region}",
        ],
    )
    torch.manual_seed(0)
    r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
    refiner = TorchUpdater(r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.01))
    disc = TorchUpdater(d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.01))
    first = refiner_step(refiner, disc, _digits(8, 0), cfg, adversarial=True)["diversity"]
    for seed in range(1, 30):
        last = refiner_step(refiner, disc, _digits(8, seed), cfg, adversarial=True)
    assert first > 0 and last["diversity"] > 3 * first
    # Not in pretraining: there R only learns to copy its input.
    assert "diversity" not in refiner_step(refiner, disc, _images(8), cfg, adversarial=False)


def test_diversity_needs_a_noise_input() -> None:
    with pytest.raises(ConfigError, match="loss.diversity_lambda"):
        load_config(preset="debug", overrides=["loss.diversity_lambda=0.1"])
    with pytest.raises(ConfigError, match="model.refiner_noise_channels"):
        load_config(preset="debug", overrides=["model.refiner_noise_channels=-1"])


def _noisy_checkpoint(tmp_path: Path) -> tuple[Path, ModelConfig]:
    from simgan_dist.train.session import save_initial_checkpoint

    cfg = load_config(
        preset="debug",
        overrides=["run.num_workers=1", "model.refiner_noise_channels=2"],
    )
    return save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000096"), cfg.model


def _refine(checkpoint: Path, source: str, output: Path, num_variants: int) -> None:
    from simgan_dist.refine.shard import RefineSettings, ShardRefiner
    from simgan_dist.train.checkpoint import load_refiner

    refiner, cfg, _ = load_refiner(checkpoint)
    settings = RefineSettings(batch_size=64, num_variants=num_variants, channels_last=False)
    output.mkdir(parents=True, exist_ok=True)
    shard = ShardRefiner(refiner.state_dict(), cfg.model, settings, {"checkpoint_id": "c"})
    shard.refine_shard(source, str(output))


def test_refine_variants_write_k_copies_with_keys_and_lineage(digit_shards, tmp_path) -> None:
    from simgan_dist.eval.arms import aligned_arm
    from simgan_dist.eval.classifier import labeled_tensors
    from simgan_dist.io.shardio import resolve_shard_urls

    checkpoint, _ = _noisy_checkpoint(tmp_path)
    source = resolve_shard_urls(str(digit_shards["synthetic"]))[0]
    _refine(checkpoint, source, tmp_path / "out", num_variants=3)
    _, syn_metas = load_arrays(source)
    images, metas = load_arrays(str(tmp_path / "out"))
    assert len(metas) == 3 * len(syn_metas)
    first = syn_metas[0]["__key__"]
    copies = [m for m in metas if m["lineage"]["source_key"] == first]
    assert sorted(m["__key__"] for m in copies) == [f"{first}_v{v}" for v in range(3)]
    assert {m["label"] for m in copies} == {syn_metas[0]["label"]}
    assert sorted(m["lineage"]["variant"] for m in copies) == [0, 1, 2]
    by_key = {m["__key__"]: img for m, img in zip(metas, images, strict=True)}
    assert not (by_key[f"{first}_v0"] == by_key[f"{first}_v1"]).all()

    # A redone shard comes out the same: the noise is seeded by shard and variant.
    _refine(checkpoint, source, tmp_path / "again", num_variants=3)
    again, again_metas = load_arrays(str(tmp_path / "again"))
    assert [m["__key__"] for m in again_metas] == [m["__key__"] for m in metas]
    assert (again == images).all()

    # Eval pairs every copy with its synthetic sample: the first copy for preservation, all
    # of them (with the synthetic label) for the refined arm's training set.
    x_syn, y_syn, keys_syn = labeled_tensors(source)
    arm = aligned_arm("refined", str(tmp_path / "out"), keys_syn, y_syn)
    x_first, x_all, y_all = arm.first, arm.train_x, arm.train_y
    assert x_first.shape == x_syn.shape and len(x_all) == 3 * len(x_syn)
    assert (y_all.bincount(minlength=10) == 3 * y_syn.bincount(minlength=10)).all()


def test_variants_need_a_noise_input(checkpoint, digit_shards, tmp_path) -> None:
    from simgan_dist.refine.ray_pool import refine_shards
    from simgan_dist.refine.shard import RefineSettings

    with pytest.raises(ValueError, match="needs a refiner with a noise input"):
        refine_shards(checkpoint, str(digit_shards["synthetic"]), tmp_path / "out",
                      RefineSettings(num_variants=2), progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="num_variants"):
        RefineSettings(num_variants=0)
