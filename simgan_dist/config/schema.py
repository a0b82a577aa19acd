"""Typed run configuration: the frozen dataclasses, each section validated when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from simgan_dist.config.credentials import check_storage_options

PSI_CHOICES = ("identity", "channel_mean", "gradients")
DISCRIMINATOR_CHOICES = ("gaze", "hand", "digits", "digits_wide")


class ConfigError(ValueError):
    """A config problem, as one line naming the file and the field."""


def require(cond: bool, name: str, msg: str, value: Any) -> None:
    # Raised as ValueError(field: msg); load_config prefixes the file name.
    if not cond:
        raise ValueError(f"{name}: {msg}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Refiner and discriminator shapes (DESIGN.md section 1)."""

    image_channels: int = 1
    image_height: int = 28
    image_width: int = 28
    refiner_features: int = 64
    refiner_blocks: int = 4
    refiner_kernel: int = 3
    # Not in the paper: R also bends the image along a smooth learned displacement field of at
    # most this many pixels (0 = off, the paper's per-pixel R); see networks.Refiner.
    refiner_max_warp: float = 0.0
    # Not in the paper (its future work): N(0, 1) values per image that drive a warping R's
    # displacement field, so R gives several refinements of one image (simgan refine
    # --variants K); needs refiner_max_warp > 0; 0 = off.
    refiner_noise_channels: int = 0
    discriminator: Literal["gaze", "hand", "digits", "digits_wide"] = "digits"

    def __post_init__(self) -> None:
        for name in ("image_channels", "image_height", "image_width"):
            require(getattr(self, name) > 0, f"model.{name}", "must be > 0", getattr(self, name))
        require(
            self.refiner_features > 0,
            "model.refiner_features",
            "must be > 0",
            self.refiner_features,
        )
        require(
            self.refiner_blocks >= 0, "model.refiner_blocks", "must be >= 0", self.refiner_blocks
        )
        require(
            0 <= self.refiner_max_warp <= min(self.image_height, self.image_width) / 4,
            "model.refiner_max_warp",
            "must be in [0, a quarter of the image side] pixels",
            self.refiner_max_warp,
        )
        require(
            0 <= self.refiner_noise_channels <= 16,
            "model.refiner_noise_channels",
            "must be in [0, 16]",
            self.refiner_noise_channels,
        )
        require(
            self.refiner_noise_channels == 0 or self.refiner_max_warp > 0,
            "model.refiner_noise_channels",
            "needs model.refiner_max_warp > 0 (the noise drives the displacement field)",
            self.refiner_noise_channels,
        )
        require(
            self.refiner_kernel % 2 == 1 and self.refiner_kernel > 0,
            "model.refiner_kernel",
            "must be a positive odd number (same padding keeps the size)",
            self.refiner_kernel,
        )


@dataclass(frozen=True)
class LossConfig:
    """Refiner loss: adversarial + reg_lambda * |psi(R(x)) - psi(x)|_1."""

    reg_lambda: float = 0.5
    psi: Literal["identity", "channel_mean", "gradients"] = "identity"
    # Not in the paper: a squared hinge on R's pre-tanh values beyond this margin (0 = off),
    # so R never enters tanh's flat tails, where its gradient is 0 and a collapsed R (every
    # pixel black) stays collapsed. tanh(4) = 0.9993 is past every 8-bit level (to_tensor).
    saturation_margin: float = 4.0
    # A warping R (model.refiner_max_warp > 0) pays for its displacement field: flow_lambda times
    # the mean squared displacement (pixels^2) plus flow_smooth_lambda times the mean squared
    # difference of neighbouring displacements. Both 0 = only max_warp bounds it.
    flow_lambda: float = 0.0
    flow_smooth_lambda: float = 0.0
    # A refiner with a noise input (model.refiner_noise_channels > 0) is paid this much per unit
    # of difference between two noise draws in the adversarial phase, so it uses its noise
    # instead of ignoring it (mode seeking, Mao et al. 2019): mean |flow(x, z1) - flow(x, z2)|
    # in pixels; 0 = off.
    diversity_lambda: float = 0.0

    def __post_init__(self) -> None:
        require(self.reg_lambda >= 0, "loss.reg_lambda", "must be >= 0", self.reg_lambda)
        for name in ("flow_lambda", "flow_smooth_lambda", "diversity_lambda"):
            require(getattr(self, name) >= 0, f"loss.{name}", "must be >= 0", getattr(self, name))
        require(
            self.saturation_margin == 0 or self.saturation_margin >= 3.2,
            "loss.saturation_margin",
            "must be 0 (off) or >= 3.2 (tanh(3.2) = 0.9967 reaches the 8-bit levels 0 and 255)",
            self.saturation_margin,
        )


@dataclass(frozen=True)
class OptimConfig:
    """One optimizer per engine; SGD with lr 1e-3 is the paper's common setting."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    disc_optimizer: Literal["same", "sgd", "adam"] = "same"  # D's own choice, if it differs
    refiner_lr: float = 1e-3
    disc_lr: float = 1e-3
    momentum: float = 0.0
    adam_betas: tuple[float, float] = (0.5, 0.999)
    # Per engine, over its own optimizer steps: linear warmup, then constant or cosine to 0.
    lr_schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = 0
    total_steps: int = 0  # cosine horizon in optimizer steps (0 = the whole schedule)

    def __post_init__(self) -> None:
        require(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", self.warmup_steps)
        require(self.total_steps >= 0, "optim.total_steps", "must be >= 0", self.total_steps)
        require(self.refiner_lr > 0, "optim.refiner_lr", "must be > 0", self.refiner_lr)
        require(self.disc_lr > 0, "optim.disc_lr", "must be > 0", self.disc_lr)
        require(0 <= self.momentum < 1, "optim.momentum", "must be in [0, 1)", self.momentum)
        require(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "optim.adam_betas",
            "must be two numbers in [0, 1)",
            self.adam_betas,
        )


@dataclass(frozen=True)
class EngineConfig:
    """DeepSpeed settings, the same for the R and D engines."""

    zero_stage: int = 0  # 0: plain data parallel; 1/2 shard optimizer state / gradients
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast; fp16: GPU only
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    grad_accum_steps: int = 1  # micro-batches per optimizer step (global batch unchanged)
    channels_last: bool = False  # NHWC memory layout on GPU, where convolutions run faster

    def __post_init__(self) -> None:
        require(
            self.zero_stage in (0, 1, 2), "engine.zero_stage", "must be 0, 1 or 2", self.zero_stage
        )
        require(self.grad_clip >= 0, "engine.grad_clip", "must be >= 0", self.grad_clip)
        require(
            self.grad_accum_steps >= 1,
            "engine.grad_accum_steps",
            "must be >= 1",
            self.grad_accum_steps,
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """Algorithm 1, with time counted in synthetic images drawn from the stream."""

    batch_size: int = 512  # global b, split evenly over workers
    refiner_pretrain_nimg: int = 512_000  # ~1,000 steps of b=512
    disc_pretrain_nimg: int = 102_400  # ~200 steps
    adversarial_nimg: int = 5_120_000
    k_g: int = 2
    k_d: int = 1
    buffer_size: int = 25_600  # B
    history_fraction: float = 0.5  # share of D's fake batch drawn from the buffer; 0 = off

    def __post_init__(self) -> None:
        require(
            self.batch_size > 0 and self.batch_size % 2 == 0,
            "schedule.batch_size",
            "must be a positive even number",
            self.batch_size,
        )
        for name in ("refiner_pretrain_nimg", "disc_pretrain_nimg", "adversarial_nimg"):
            require(
                getattr(self, name) >= 0, f"schedule.{name}", "must be >= 0", getattr(self, name)
            )
        require(self.k_g >= 1, "schedule.k_g", "must be >= 1", self.k_g)
        require(self.k_d >= 1, "schedule.k_d", "must be >= 1", self.k_d)
        require(self.buffer_size >= 0, "schedule.buffer_size", "must be >= 0", self.buffer_size)
        require(
            0.0 <= self.history_fraction < 1.0,
            "schedule.history_fraction",
            "must be in [0, 1)",
            self.history_fraction,
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the two corpora live. A location is a shard directory, a manifest or a URL pattern."""

    synthetic: str = "shards/digits-synth"
    real: str = "shards/digits-real-train"
    num_loader_workers: int = 1  # DataLoader processes per training worker (0 = in-process)
    shuffle_buffer: int = 2000
    on_bad_sample: Literal["skip", "stop"] = "skip"
    # "shards": each rank streams its own shards (scales). "batch_rows": every rank reads the
    # same global batch and keeps its rows (W x decode cost, but identical for any worker count).
    rank_split: Literal["shards", "batch_rows"] = "shards"
    allow_pipe_urls: bool = False  # pipe: URLs run shell commands; off unless asked for
    # fsspec options for s3:// / gs:// locations, e.g. {endpoint_url: "http://127.0.0.1:9000"}.
    # Never credentials: those come from the AWS/gcloud environment and config files.
    storage_options: dict[str, Any] = field(default_factory=dict)
    # Audit: append the synthetic keys each rank draws to <run dir>/keys/rank-NNNN.jsonl (a line
    # per batch), to check that an epoch used every sample exactly once, across resumes too.
    record_keys: bool = False

    def __post_init__(self) -> None:
        require(bool(self.synthetic), "data.synthetic", "must be set", self.synthetic)
        require(bool(self.real), "data.real", "must be set", self.real)
        require(
            self.num_loader_workers >= 0,
            "data.num_loader_workers",
            "must be >= 0",
            self.num_loader_workers,
        )
        require(
            self.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1", self.shuffle_buffer
        )
        try:
            check_storage_options(self.storage_options)
        except ValueError as err:
            raise ValueError(f"data.storage_options: {err}") from None


@dataclass(frozen=True)
class RunConfig:
    """Where a run writes and how it is spread over Ray Train workers."""

    name: str = ""  # empty: simgan train picks a unique, timestamped one
    storage_path: str = "runs"
    num_workers: int = 2
    use_gpu: bool = False
    threads_per_worker: int = 1
    seed: int = 0
    log_every_nimg: int = 10_240
    grid_every_nimg: int = 102_400
    checkpoint_every_nimg: int = 256_000
    keep_checkpoints: int = 3  # older checkpoints are deleted by Ray Train
    max_failures: int = 0  # worker-group restarts from the latest checkpoint before giving up

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "run.num_workers", "must be >= 1", self.num_workers)
        require(
            self.threads_per_worker >= 1,
            "run.threads_per_worker",
            "must be >= 1",
            self.threads_per_worker,
        )
        require(
            self.keep_checkpoints >= 1,
            "run.keep_checkpoints",
            "must be >= 1",
            self.keep_checkpoints,
        )
        for name in ("log_every_nimg", "grid_every_nimg", "checkpoint_every_nimg"):
            require(getattr(self, name) > 0, f"run.{name}", "must be > 0", getattr(self, name))


@dataclass(frozen=True)
class ScoreConfig:
    """Label-free scores on held-out images during training (scores.py); `simgan tune` maximizes
    their `objective`. Computed on rank 0 and reported by every rank at each interval."""

    every_nimg: int = 0  # 0 = off; else a multiple of run.log_every_nimg (scores join that row)
    num_images: int = 256  # per domain; half train the two-sample classifier, half test it
    synthetic: str = ""  # held-out synthetic corpus ("" = the first images of data.synthetic)
    real: str = ""  # held-out real corpus ("" = the first images of data.real)
    classifier_steps: int = 200  # Adam steps of the refined-vs-real classifier, batch 64
    fidelity_weight: float = 1.0  # objective = realism - fidelity_weight * fidelity_l1
    # "downstream": objective = accuracy on real_labeled of a digit classifier trained on the
    # refined held-out synthetic images with their synthetic labels (digits-shaped data only).
    objective: Literal["realism_fidelity", "downstream"] = "realism_fidelity"
    real_labeled: str = ""  # labeled real validation split, for objective "downstream"
    downstream_epochs: int = 4

    def __post_init__(self) -> None:
        require(self.every_nimg >= 0, "score.every_nimg", "must be >= 0", self.every_nimg)
        require(self.num_images >= 4, "score.num_images", "must be >= 4", self.num_images)
        require(
            self.classifier_steps >= 1,
            "score.classifier_steps",
            "must be >= 1",
            self.classifier_steps,
        )
        require(
            self.fidelity_weight >= 0, "score.fidelity_weight", "must be >= 0", self.fidelity_weight
        )
        require(
            self.objective != "downstream" or bool(self.real_labeled),
            "score.real_labeled",
            "must name a labeled real split when score.objective is downstream",
            self.real_labeled,
        )
        require(
            self.downstream_epochs >= 1,
            "score.downstream_epochs",
            "must be >= 1",
            self.downstream_epochs,
        )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        b, w, a = self.schedule.batch_size, self.run.num_workers, self.engine.grad_accum_steps
        require(
            b % (2 * w * a) == 0,
            "schedule.batch_size",
            f"must split into equal even micro-batches over run.num_workers={w} x "
            f"engine.grad_accum_steps={a}",
            b,
        )
        require(
            self.engine.precision != "fp16" or self.run.use_gpu,
            "engine.precision",
            "fp16 needs run.use_gpu: true (DeepSpeed's fp16 path is GPU-only)",
            self.engine.precision,
        )
        require(
            self.score.every_nimg % self.run.log_every_nimg == 0,
            "score.every_nimg",
            f"must be a multiple of run.log_every_nimg={self.run.log_every_nimg}",
            self.score.every_nimg,
        )
        require(
            self.loss.diversity_lambda == 0 or self.model.refiner_noise_channels > 0,
            "loss.diversity_lambda",
            "needs model.refiner_noise_channels > 0 (a refiner without noise has one output)",
            self.loss.diversity_lambda,
        )
        digits_shape = (self.model.image_channels, self.model.image_height, self.model.image_width)
        require(
            self.score.objective != "downstream" or digits_shape == (1, 28, 28),
            "score.objective",
            f"downstream needs 1x28x28 images (the digit classifier), model has {digits_shape}",
            self.score.objective,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Config:
        """Copy with some fields changed: cfg.replace(run={"num_workers": 1})."""
        from simgan_dist.config.loading import from_dict, merge  # loading builds on this module

        return from_dict(merge(self.to_dict(), sections), source="<replace>")
