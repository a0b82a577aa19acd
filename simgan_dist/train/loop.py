"""Algorithm 1 of the SimGAN paper as one loop: phases as data, time counted in synthetic images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torch import nn

from simgan_dist.config import Config, ScheduleConfig
from simgan_dist.model.history import History, history_count, mix_fake_batch
from simgan_dist.model.losses import (
    discriminator_loss,
    diversity_reward,
    refiner_loss,
    stroke_contrast_loss,
)
from simgan_dist.seeds import seed_for
from simgan_dist.train.engine import Updater
from simgan_dist.train.stats import Collector


@dataclass(frozen=True)
class Phase:
    """One stage of Algorithm 1: each iteration runs refiner_steps R steps then disc_steps D steps."""

    name: str
    num_images: int  # synthetic images this phase draws from the stream (global, all ranks)
    refiner_steps: int
    disc_steps: int
    adversarial: bool  # False: R learns self-regularization only (pretraining)


def phases_for(schedule: ScheduleConfig) -> tuple[Phase, ...]:
    """Pretrain R (until it outputs a blurry copy of its input), pretrain D, then alternate."""
    return (
        Phase("pretrain_refiner", schedule.refiner_pretrain_nimg, 1, 0, adversarial=False),
        Phase("pretrain_disc", schedule.disc_pretrain_nimg, 0, 1, adversarial=False),
        Phase(
            "adversarial", schedule.adversarial_nimg, schedule.k_g, schedule.k_d, adversarial=True
        ),
    )


@dataclass
class LoopState:
    """Counters a checkpoint needs to continue the loop where it stopped."""

    cur_nimg: int = 0  # synthetic images drawn so far, over all phases and ranks
    phase_index: int = 0
    phase_nimg: int = 0  # images drawn in the current phase
    cur_step: int = 0  # optimizer steps of R and D together
    cur_iter: int = 0  # completed iterations (a checkpoint is only taken between them)

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name, value in LoopState(**state).state_dict().items():
            setattr(self, name, value)


def iteration_seed(seed: int, rank: int, cur_nimg: int) -> int:
    """The torch seed of the iteration that starts at cur_nimg on this rank: randomness is a
    function of where the run is, so a resumed run draws what an unbroken one would, with no
    RNG state in the checkpoint. Distinct per rank (each draws its own noise)."""
    return seed_for(seed, "iteration", rank, cur_nimg)


class BatchSource(Protocol):
    """This rank's share of each fresh global mini-batch."""

    def next_synthetic(self) -> torch.Tensor: ...

    def next_real(self) -> torch.Tensor: ...


def optimizer_steps(schedule: ScheduleConfig) -> tuple[int, int]:
    """R and D optimizer steps of the whole schedule (the horizon of a decaying lr schedule)."""
    refiner_steps = disc_steps = 0
    for phase in phases_for(schedule):
        steps_per_iter = phase.refiner_steps + phase.disc_steps
        iters = -(-phase.num_images // (schedule.batch_size * steps_per_iter))
        refiner_steps += iters * phase.refiner_steps
        disc_steps += iters * phase.disc_steps
    return refiner_steps, disc_steps


# With loss.diversity_lambda, this share (1 / DIVERSITY_SHARE) of each R batch is refined twice.
DIVERSITY_SHARE = 4


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(flag)


def _add_term(
    loss: torch.Tensor, metrics: dict[str, float], weight: float, term: torch.Tensor, name: str
) -> torch.Tensor:
    """loss + weight * term, the term's value reported as metric `name` and counted in loss_r."""
    value = term.item()
    metrics["loss_r"] += weight * value
    metrics[name] = value
    return loss + weight * term


def refiner_step(
    refiner: Updater, disc: Updater, synthetic: torch.Tensor, cfg: Config, adversarial: bool
) -> dict[str, float]:
    """One R update. D is frozen and called outside its engine: its weights and grads stay as
    they are (DeepSpeed ZeRO also rejects a second engine forward here)."""
    set_requires_grad(disc.module, False)
    try:
        num_images = len(synthetic)
        diversity_lambda = cfg.loss.diversity_lambda if adversarial else 0.0
        if diversity_lambda:
            # A second draw of noise for the first quarter of the batch, in the same forward
            # (one engine call): 1.25x R's cost per step instead of 2x for a full second pass.
            num_pairs = max(1, num_images // DIVERSITY_SHARE)
            pre_tanh = refiner.forward(torch.cat([synthetic, synthetic[:num_pairs]]), pre_tanh=True)
        else:
            pre_tanh = refiner.forward(synthetic, pre_tanh=True)
        refined = torch.tanh(pre_tanh)
        diversity = None
        if diversity_lambda:
            second = refined[num_images:]
            diversity = diversity_reward(
                refined[: len(second)],
                second,
                synthetic[: len(second)],
                cfg.loss.diversity_region,
            )
            pre_tanh, refined = pre_tanh[:num_images], refined[:num_images]
        logits = disc.frozen_forward(refined) if adversarial else None
        loss, metrics = refiner_loss(
            logits,
            refined,
            synthetic,
            cfg.loss.reg_lambda,
            cfg.loss.psi,
            adversarial_weight=1.0 if adversarial else 0.0,
            pre_tanh=pre_tanh,
            saturation_margin=cfg.loss.saturation_margin,
        )
        if cfg.loss.stroke_contrast_lambda:
            stroke = stroke_contrast_loss(refined, synthetic, cfg.loss.stroke_contrast_margin)
            loss = _add_term(
                loss, metrics, cfg.loss.stroke_contrast_lambda, stroke, "loss_r_stroke"
            )
        if diversity is not None:
            loss = _add_term(loss, metrics, -diversity_lambda, diversity, "diversity")
        refiner.step(loss)
    finally:
        set_requires_grad(disc.module, True)
    return metrics


def augment_dihedral(images: torch.Tensor) -> torch.Tensor:
    """Each image flipped and turned by one of the 8 symmetries of a square (a random flip only
    for non-square images), drawn from torch's global RNG (seeded per iteration)."""
    n = len(images)
    flip_x, flip_y, turn = (torch.rand(n, device=images.device) < 0.5 for _ in range(3))
    out = torch.where(flip_x[:, None, None, None], images.flip(-1), images)
    out = torch.where(flip_y[:, None, None, None], out.flip(-2), out)
    if images.shape[-1] == images.shape[-2]:
        out = torch.where(turn[:, None, None, None], out.transpose(-1, -2), out)
    return out


def disc_step(
    refiner: Updater,
    disc: Updater,
    synthetic: torch.Tensor,
    real: torch.Tensor,
    buffer: History | None,
    history_fraction: float,
    augment_real: bool = False,
) -> dict[str, float]:
    """One D update on real vs refined patches; half the refined ones come from the history
    buffer. augment_real: D sees each real image under a random flip / quarter turn."""
    if augment_real:
        real = augment_dihedral(real)
    with torch.no_grad():
        refined = refiner.frozen_forward(synthetic).float()
    fake = mix_fake_batch(refined, buffer, history_fraction)
    # One forward over real and fake together: half the engine calls, same gradients.
    logits = disc.forward(torch.cat([real, fake]))
    loss, metrics = discriminator_loss(logits[: len(real)], logits[len(real) :])
    disc.step(loss)
    if buffer is not None and history_fraction > 0:
        buffer.push(refined[: history_count(len(refined), history_fraction)])
    return metrics


StepHook = Callable[[LoopState, Phase, dict[str, float]], None]


def train(
    refiner: Updater,
    disc: Updater,
    batch_source: BatchSource,
    cfg: Config,
    state: LoopState,
    buffer: History | None = None,
    after_iteration: StepHook | None = None,
    stats: Collector | None = None,
    rank: int = 0,
) -> LoopState:
    """Run Algorithm 1 from `state` to the end of the last phase.

    Every R or D step draws a fresh global mini-batch of cfg.schedule.batch_size synthetic images
    (this rank gets its share from `batch_source`) and advances cur_nimg by that many. The hook runs after
    each whole iteration, so logging, grids and checkpoints always see a consistent state.

    Every step's (and micro-batch's) metrics are reported to `stats`, which holds them until the
    hooks take the interval's means; the hook also gets the iteration's own means. Each iteration
    reseeds torch's global RNG from iteration_seed(cfg.run.seed, rank, cur_nimg).
    """
    stats = stats if stats is not None else Collector()
    phases = phases_for(cfg.schedule)
    global_batch = cfg.schedule.batch_size
    # With gradient accumulation one step is grad_accum_steps micro-batches; the engine applies
    # the update at the last of them.
    num_micro = cfg.engine.grad_accum_steps
    while True:
        phase = phases[state.phase_index]
        while state.phase_nimg < phase.num_images:
            torch.manual_seed(iteration_seed(cfg.run.seed, rank, state.cur_nimg))
            iteration = Collector()
            for _ in range(phase.refiner_steps):
                for _ in range(num_micro):
                    synthetic = batch_source.next_synthetic()
                    iteration.report_all(
                        refiner_step(refiner, disc, synthetic, cfg, phase.adversarial)
                    )
                state.cur_step += 1
                state.cur_nimg += global_batch
                state.phase_nimg += global_batch
            for _ in range(phase.disc_steps):
                for _ in range(num_micro):
                    synthetic, real = batch_source.next_synthetic(), batch_source.next_real()
                    iteration.report_all(
                        disc_step(
                            refiner,
                            disc,
                            synthetic,
                            real,
                            buffer,
                            cfg.schedule.history_fraction,
                            cfg.data.augment_real,
                        )
                    )
                state.cur_step += 1
                state.cur_nimg += global_batch
                state.phase_nimg += global_batch
            state.cur_iter += 1
            stats.merge(iteration)
            if after_iteration is not None:
                after_iteration(state, phase, iteration.means())
        if state.phase_index == len(phases) - 1:
            # The run ends in its last phase, so `--resume` with a longer schedule continues it.
            return state
        state.phase_index += 1
        state.phase_nimg = 0
