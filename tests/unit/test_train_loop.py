"""Algorithm 1 on plain PyTorch: phases, image counting, and R/D updates that leave each other alone."""

from __future__ import annotations

import pytest
import torch

from simgan_dist.config import load_config
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.train.loop import LoopState, disc_step, phases_for, refiner_step, train
from simgan_dist.train.session import build_updaters
from simgan_dist.train.stats import NonFiniteLossError, check_finite


class RandomBatches:
    """Seeded random images in [-1, 1]; 'real' ones are brighter so D has something to learn."""

    def __init__(self, batch: int, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.batch = batch
        self.num_synthetic = self.num_real = 0

    def next_synthetic(self) -> torch.Tensor:
        self.num_synthetic += self.batch
        return torch.rand(self.batch, 1, 28, 28, generator=self.gen) * 2 - 1

    def next_real(self) -> torch.Tensor:
        self.num_real += self.batch
        return (torch.rand(self.batch, 1, 28, 28, generator=self.gen) * 2 - 1).clamp(min=0)


def _setup(**overrides):
    cfg = load_config(
        preset="debug", overrides=[f"{k}={v}" for k, v in overrides.items()] + ["run.num_workers=1"]
    )
    # R and D as every Ray-free run gets them (the session's build_updaters), at lr 0.01.
    refiner, disc = build_updaters(
        cfg.replace(optim={"refiner_lr": 0.01, "disc_lr": 0.01}), torch.device("cpu")
    )
    return cfg, refiner, disc


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_refiner_step_leaves_disc_untouched() -> None:
    cfg, refiner, disc = _setup()
    batch_source = RandomBatches(8)
    d_before, r_before = _params(disc.module), _params(refiner.module)
    metrics = refiner_step(refiner, disc, batch_source.next_synthetic(), cfg, adversarial=True)
    assert _same(d_before, _params(disc.module))
    assert all(p.grad is None for p in disc.module.parameters())
    assert all(p.requires_grad for p in disc.module.parameters())
    assert not _same(r_before, _params(refiner.module))
    assert {"loss_r", "loss_r_adv", "loss_r_reg"} <= set(metrics)


def test_disc_step_leaves_refiner_untouched() -> None:
    cfg, refiner, disc = _setup()
    batch_source = RandomBatches(8)
    d_before, r_before = _params(disc.module), _params(refiner.module)
    buffer = HistoryBuffer(32, (1, 28, 28), seed=0)
    metrics = disc_step(
        refiner, disc, batch_source.next_synthetic(), batch_source.next_real(), buffer, 0.5
    )
    assert _same(r_before, _params(refiner.module))
    assert all(p.grad is None for p in refiner.module.parameters())
    assert not _same(d_before, _params(disc.module))
    assert {"loss_d", "d_acc_real", "d_acc_refined"} <= set(metrics)
    assert buffer.num_filled == 4  # b/2 new refined images stored after the step


def test_phases_follow_algorithm_1() -> None:
    cfg = load_config(preset="debug", overrides=["schedule.k_g=2", "schedule.k_d=1"])
    pretrain_r, pretrain_d, adversarial = phases_for(cfg.schedule)
    assert (pretrain_r.refiner_steps, pretrain_r.disc_steps, pretrain_r.adversarial) == (
        1,
        0,
        False,
    )
    assert (pretrain_d.refiner_steps, pretrain_d.disc_steps) == (0, 1)
    assert (adversarial.refiner_steps, adversarial.disc_steps, adversarial.adversarial) == (
        2,
        1,
        True,
    )


def test_train_counts_images_and_steps() -> None:
    cfg, refiner, disc = _setup(
        **{
            "schedule.refiner_pretrain_nimg": 16,
            "schedule.disc_pretrain_nimg": 8,
            "schedule.adversarial_nimg": 48,
        }
    )
    batch_source = RandomBatches(cfg.schedule.batch_size)
    seen: list[tuple[str, int]] = []
    state = train(
        refiner,
        disc,
        batch_source,
        cfg,
        LoopState(),
        HistoryBuffer(64, (1, 28, 28), seed=0),
        after_iteration=lambda s, p, m: seen.append((p.name, s.cur_nimg)),
    )
    # 2 R-only steps, 1 D-only step, then 2 iterations of (2 R + 1 D) steps: 9 steps of b=8.
    assert state.cur_nimg == 72 and state.cur_step == 9 and state.cur_iter == 5
    assert [name for name, _ in seen] == ["pretrain_refiner"] * 2 + ["pretrain_disc"] + [
        "adversarial"
    ] * 2
    assert batch_source.num_synthetic == 72  # every step drew a fresh batch
    assert batch_source.num_real == 8 * 3  # one real batch per D step


def test_pretraining_learns_identity() -> None:
    """Self-regularization only: R converges towards a (blurry) copy of its input."""
    cfg, refiner, disc = _setup(
        **{
            "schedule.refiner_pretrain_nimg": 8 * 150,
            "schedule.disc_pretrain_nimg": 0,
            "schedule.adversarial_nimg": 0,
            "optim.optimizer": "adam",
        }
    )
    refiner.optimizer = torch.optim.Adam(refiner.module.parameters(), lr=3e-3)
    batch_source = RandomBatches(8)
    x = batch_source.next_synthetic()
    before = (refiner.module(x) - x).abs().mean().item()
    d_before = _params(disc.module)
    train(refiner, disc, batch_source, cfg, LoopState())
    after = (refiner.module(x) - x).abs().mean().item()
    assert after < 0.5 * before
    assert _same(d_before, _params(disc.module))


def _bars(n: int) -> torch.Tensor:
    """White vertical strokes on black: a simulator's plain output, with strokes to keep."""
    x = torch.full((n, 1, 28, 28), -1.0)
    x[..., 6:22, 12:15] = 1.0
    return x


def test_stroke_contrast_term_is_paid_and_reported() -> None:
    """With loss.stroke_contrast_lambda, R's loss carries the stroke-contrast term (metric
    loss_r_stroke); R trained on it alone (no self-regularization) makes its output's strokes
    stand out from their background, which its random initial weights do not."""
    cfg, refiner, disc = _setup(
        **{"loss.stroke_contrast_lambda": 1.0, "loss.reg_lambda": 0.0, "optim.optimizer": "adam"}
    )
    x = _bars(4)
    first = refiner_step(refiner, disc, x, cfg, adversarial=False)
    assert first["loss_r_stroke"] > 0.1
    assert first["loss_r"] == pytest.approx(first["loss_r_stroke"] + first["loss_r_sat"])
    for _ in range(60):
        last = refiner_step(refiner, disc, x, cfg, adversarial=False)
    assert last["loss_r_stroke"] < 0.25 * first["loss_r_stroke"]
    off, refiner_off, disc_off = _setup()
    assert "loss_r_stroke" not in refiner_step(refiner_off, disc_off, x, off, adversarial=False)


def test_resume_from_state_continues_phase() -> None:
    cfg, refiner, disc = _setup(
        **{
            "schedule.refiner_pretrain_nimg": 16,
            "schedule.disc_pretrain_nimg": 8,
            "schedule.adversarial_nimg": 24,
        }
    )
    state = LoopState(cur_nimg=24, phase_index=2, phase_nimg=0, cur_step=3, cur_iter=3)
    batch_source = RandomBatches(8)
    state = train(refiner, disc, batch_source, cfg, state)
    assert state.cur_nimg == 48 and state.phase_index == 2 and state.phase_nimg == 24
    assert batch_source.num_synthetic == 24  # only the adversarial iteration ran


def test_logged_losses_are_means_over_every_step(monkeypatch) -> None:
    """K_g = 3 R steps and K_d = 2 D steps per iteration, each of 2 micro-batches: what the hook
    gets and what a log line takes (the collector's means over two iterations, popped as
    TrainingHooks pops it) are means over every micro-batch, not the last step's values."""
    from simgan_dist.train import loop
    from simgan_dist.train.stats import Collector

    counter = iter(range(10_000))
    steps: dict[str, list[float]] = {"loss_r": [], "loss_d": []}

    def scripted(name: str):
        def step(*args, **kwargs) -> dict[str, float]:
            value = float(next(counter)) ** 2  # not linear, so a mean differs from a midpoint
            steps[name].append(value)
            return {name: value}

        return step

    monkeypatch.setattr(loop, "refiner_step", scripted("loss_r"))
    monkeypatch.setattr(loop, "disc_step", scripted("loss_d"))
    cfg, refiner, disc = _setup(
        **{
            "schedule.refiner_pretrain_nimg": 0,
            "schedule.disc_pretrain_nimg": 0,
            "schedule.adversarial_nimg": 4 * 8 * (3 + 2),  # 4 iterations of 5 steps of b=8
            "schedule.k_g": 3,
            "schedule.k_d": 2,
            "engine.grad_accum_steps": 2,
            "run.log_every_nimg": 8,
            "score.every_nimg": 0,
        }
    )
    stats = Collector()
    per_iteration: list[dict[str, float]] = []
    logged: list[dict[str, float]] = []

    def hook(state: LoopState, phase, metrics: dict[str, float]) -> None:
        per_iteration.append(metrics)
        if state.cur_iter % 2 == 0:  # a log line every two iterations
            logged.append(stats.pop())

    train(refiner, disc, RandomBatches(4), cfg, LoopState(), None, hook, stats=stats)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    r, d = steps["loss_r"], steps["loss_d"]
    assert len(r) == 4 * 3 * 2 and len(d) == 4 * 2 * 2  # every micro-batch reported
    for i, metrics in enumerate(per_iteration):
        assert metrics["loss_r"] == pytest.approx(mean(r[6 * i : 6 * i + 6]))
        assert metrics["loss_d"] == pytest.approx(mean(d[4 * i : 4 * i + 4]))
    assert len(logged) == 2
    for j, line in enumerate(logged):
        assert line["loss_r"] == pytest.approx(mean(r[12 * j : 12 * j + 12]))
        assert line["loss_d"] == pytest.approx(mean(d[8 * j : 8 * j + 8]))
    assert len(stats) == 0


def test_collector_means_and_merge() -> None:
    from simgan_dist.train.stats import Collector

    a, b = Collector(), Collector()
    a.report_all({"x": 1.0, "y": 10.0})
    b.report("x", 2.0)
    b.report("x", 6.0)
    a.merge(b)
    assert a.means() == {"x": 3.0, "y": 10.0}
    assert a.pop() == {"x": 3.0, "y": 10.0} and len(a) == 0 and a.pop() == {}


def test_check_finite_names_every_non_finite_value() -> None:
    check_finite({"loss_r": 0.5, "loss_d": 0.7}, "in adversarial by cur_nimg 64")
    with pytest.raises(NonFiniteLossError, match=r"^loss_d, loss_r became non-finite in adv"):
        check_finite({"loss_r": float("nan"), "loss_d": float("inf"), "ok": 1.0}, "in adv")
