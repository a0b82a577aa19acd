"""Typed run configuration: the frozen dataclasses, each section validated when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from simgan_dist.config.credentials import check_storage_options
from simgan_dist.config.deepspeed_passthrough import check_deepspeed_passthrough
from simgan_dist.config.rules import (
    NOT_EMPTY,
    Rule,
    Section,
    above,
    at_least,
    checked,
    in_range,
    one_of,
    require,
)
from simgan_dist.config.trackers import RunMLflow, RunWandb
from simgan_dist.errors import InputError

# Each choice is spelled once, here, as the Literal a field is typed with; code that needs the
# values (the losses, the CLI's choices, refine's settings) reads them with get_args.
Psi = Literal["identity", "channel_mean", "gradients", "low_pass", "edges"]
DiscriminatorLayout = Literal["gaze", "hand", "digits"]
Precision = Literal["fp32", "bf16", "fp16"]
RefinePrecision = Literal["auto", "fp32", "bf16"]  # refine: auto = bf16 on GPU, fp32 on CPU
OnBadSample = Literal["skip", "stop"]
DiversityRegion = Literal["all", "background"]
PSI_CHOICES: tuple[str, ...] = get_args(Psi)
DISCRIMINATOR_CHOICES: tuple[str, ...] = get_args(DiscriminatorLayout)
PRECISION_CHOICES: tuple[str, ...] = get_args(Precision)
REFINE_PRECISION_CHOICES: tuple[str, ...] = get_args(RefinePrecision)
BAD_SAMPLE_CHOICES: tuple[str, ...] = get_args(OnBadSample)


class ConfigError(InputError):
    """A config problem, as one line naming the file and the field (exit status 2)."""

    exit_code = 2


POSITIVE_ODD = Rule(
    lambda v: v > 0 and v % 2 == 1, "must be a positive odd number (same padding keeps the size)"
)
POSITIVE_EVEN = Rule(lambda v: v > 0 and v % 2 == 0, "must be a positive even number")
MAX_SEED = 2**32 - 1
# A run name is joined under run.storage_path: "..", a "/" or an absolute name would put the run
# (config, checkpoints, metrics) somewhere else. Empty: simgan train picks one.
MAX_NAME_LENGTH = 255  # the longest file name of common filesystems and S3 key part
ONE_PATH_COMPONENT = Rule(
    lambda v: (
        v == ""
        or (v not in (".", "..") and not any(c in v for c in "/\\\0") and len(v) <= MAX_NAME_LENGTH)
    ),
    "must be one path component (no '/', '\\', '..' or '.', at most 255 characters): the run "
    "goes under run.storage_path",
)
# tanh(3.2) = 0.9967 reaches the 8-bit levels 0 and 255.
SATURATION_MARGIN = Rule(
    lambda v: v == 0 or v >= 3.2,
    "must be 0 (off) or >= 3.2 (tanh(3.2) = 0.9967 reaches the 8-bit levels 0 and 255)",
)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Section):
    """Refiner and discriminator shapes (the paper's for the gaze and hand presets)."""

    SECTION: ClassVar[str] = "model"
    # The image shape (channels, height, width); the shards must match it.
    image_channels: int = checked(1, above(0))
    # image height in pixels (see image_channels)
    image_height: int = checked(28, above(0))
    # image width in pixels (see image_channels)
    image_width: int = checked(28, above(0))
    # Refiner width: the channels of each of its convolutions.
    refiner_features: int = checked(64, above(0))
    # ResNet blocks of the refiner (paper: 4 for gaze, 10 for hand).
    refiner_blocks: int = checked(4, at_least(0))
    # Odd kernel size of the refiner (paper: 3 for gaze, 7 for hand).
    refiner_kernel: int = checked(3, POSITIVE_ODD)
    # Not in the paper (PixelDA's generator input): N(0, 1) values per image that enter R's pixel
    # path as constant planes and a learned full-size projection, so R can paint varied
    # backgrounds and textures that a deterministic R cannot make from a plain one, and gives
    # several refinements of one image (simgan refine --variants K); 0 = off.
    refiner_noise_channels: int = checked(0, in_range(0, 16, closed=True))
    # D's layout (the tables in model/networks.py).
    discriminator: DiscriminatorLayout = "digits"
    # Not in the paper (PixelDA's D): N(0, std^2) noise and dropout after D's hidden layers
    # while it trains; 0 = off.
    disc_hidden_noise: float = checked(0.0, at_least(0))
    # dropout rate after D's hidden layers while it trains (see disc_hidden_noise); 0 = off
    disc_dropout: float = checked(0.0, in_range(0, 1))
    # Not in the paper (StyleGAN): D also sees how much its batch varies, against a refiner
    # that paints every image alike (networks.MinibatchStd).
    disc_minibatch_std: bool = False


@dataclass(frozen=True, kw_only=True)
class LossConfig(Section):
    """Refiner loss: adversarial + reg_lambda * |psi(R(x)) - psi(x)|_1."""

    SECTION: ClassVar[str] = "loss"
    # Weight of self-regularization; both loss terms are per-pixel/patch means.
    reg_lambda: float = checked(0.5, at_least(0))
    # Feature transform of self-regularization: identity; channel_mean (R may change colour, must
    # keep the luminance layout); gradients (finite differences: R may shift brightness, must keep
    # edges); low_pass (each channel's 4x4 cell means: R may add texture and detail finer than that,
    # must keep the coarse layout and colour); edges (absolute gradients of the channel mean: R may
    # recolour and invert freely, must keep where the brightness edges are).
    psi: Psi = "identity"
    # Not in the paper: a squared hinge on R's pre-tanh values beyond this margin (0 = off), so R
    # never enters tanh's flat tails, where its gradient is 0 and a collapsed R (every pixel black)
    # stays collapsed. tanh(4) = 0.9993 is past every 8-bit level (to_tensor). Metric loss_r_sat.
    saturation_margin: float = checked(4.0, SATURATION_MARGIN)
    # A refiner with a noise input (model.refiner_noise_channels > 0) is paid this much per unit of
    # difference between two noise draws in the adversarial phase, so it uses its noise instead of
    # ignoring it (mode seeking, Mao et al. 2019): the mean difference of R(x, z1) and R(x, z2)
    # over 4x4 cells in [-1, 1] levels (cells, since per-pixel differences are cheapest to make as
    # speckle, which ruins the digit; without it R paints every background alike); 0 = off.
    # Metric diversity.
    diversity_lambda: float = checked(0.0, at_least(0))
    # Which 4x4 cells earn diversity: all, or background (the cells with no stroke pixel of the
    # synthetic image, stroke_mask: R is never paid for painting over a digit). background needs
    # a simulator that draws on a plain background; on other images no cell counts (reward 0).
    diversity_region: DiversityRegion = "all"
    # Not in the paper: weight of the stroke-contrast term (0 = off). The simulator's strokes
    # (pixels off its plain background) must stand out in R's output from the background around
    # them by stroke_contrast_margin in luminance ([-1, 1] levels), either polarity: R may
    # recolour, texture and invert, not paint a stroke over. Metric loss_r_stroke.
    stroke_contrast_lambda: float = checked(0.0, at_least(0))
    stroke_contrast_margin: float = checked(0.4, in_range(0, 2, closed=True))


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Section):
    """One optimizer per engine; SGD with lr 1e-3 is the paper's common setting."""

    SECTION: ClassVar[str] = "optim"
    # sgd (the paper's) or adam, for R and D
    optimizer: Literal["sgd", "adam"] = "sgd"
    # R's learning rate
    refiner_lr: float = checked(1e-3, above(0))
    # D's learning rate
    disc_lr: float = checked(1e-3, above(0))
    # SGD momentum
    momentum: float = checked(0.0, in_range(0, 1))
    # Adam's betas
    adam_betas: tuple[float, float] = checked(
        (0.5, 0.999),
        Rule(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "must be two numbers in [0, 1)"),
    )
    # Per engine, over its own optimizer steps: linear warmup, then constant or cosine to 0.
    lr_schedule: Literal["constant", "warmup_cosine"] = "constant"
    # linear warmup, in the engine's optimizer steps
    warmup_steps: int = checked(0, at_least(0))
    # cosine horizon in optimizer steps (0 = the whole schedule)
    total_steps: int = checked(0, at_least(0))


@dataclass(frozen=True, kw_only=True)
class EngineConfig(Section):
    """DeepSpeed settings, the same for the R and D engines."""

    SECTION: ClassVar[str] = "engine"
    # 0: plain data parallel; 1/2 shard optimizer state / gradients (all run on CPU with gloo)
    zero_stage: int = checked(0, one_of(0, 1, 2))
    # bf16: autocast, on CPU or GPU; fp16: GPU only, with loss scaling
    precision: Precision = "fp32"
    grad_clip: float = checked(0.0, at_least(0))  # max gradient norm; 0 = off
    # micro-batches per optimizer step (global batch unchanged)
    grad_accum_steps: int = checked(1, at_least(1))
    channels_last: bool = False  # NHWC memory layout on GPU, where convolutions run faster
    # torch.compile R and D in place (DeepSpeed's engine.compile(); checkpoints keep their keys).
    # The first steps pay for compiling (tens of seconds on CPU, which needs a C++ compiler). The
    # same steps as eager (tested); simgan screen stays eager.
    compile: bool = False
    # DeepSpeed config keys merged over the generated one, e.g. {csv_monitor: {enabled: true,
    # output_path: /abs/dir}} or {flops_profiler: {enabled: true, profile_step: 2}}; the keys the
    # fields above and schedule/optim own are refused (config/deepspeed_passthrough.py). Also
    # tensorboard, comms_logger, zero_optimization: {offload_optimizer: {device: cpu}}. R and D are
    # two engines: monitor job_names and the flops profiler's output_file get -refiner /
    # -discriminator appended.
    deepspeed: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        check_deepspeed_passthrough(self.deepspeed)


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(Section):
    """Algorithm 1, with time counted in synthetic images drawn from the stream."""

    SECTION: ClassVar[str] = "schedule"
    batch_size: int = checked(512, POSITIVE_EVEN)  # global b, split evenly over workers
    # images of R pretraining (self-regularization only)
    refiner_pretrain_nimg: int = checked(512_000, at_least(0))  # ~1,000 steps of b=512
    # images of D pretraining
    disc_pretrain_nimg: int = checked(102_400, at_least(0))  # ~200 steps
    # images of the adversarial phase
    adversarial_nimg: int = checked(5_120_000, at_least(0))
    # R steps per iteration of the adversarial phase
    k_g: int = checked(2, at_least(1))
    # D steps per iteration of the adversarial phase
    k_d: int = checked(1, at_least(1))
    # History buffer capacity B. Each of W ranks keeps B/W slots; every draw is uniform over all B,
    # and new images land in slices on every rank (train/global_history.py).
    buffer_size: int = checked(25_600, at_least(0))
    # share of D's fake batch drawn from the buffer; 0 = off
    history_fraction: float = checked(0.5, in_range(0, 1))


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """Where the two corpora live. A location is a shard directory, a manifest or a URL pattern."""

    SECTION: ClassVar[str] = "data"
    # The synthetic corpus R refines: a shard directory or bucket prefix, a manifest.json, a
    # {000..009} brace pattern, a glob or a single .tar; local, file://, s3://, gs:// or any fsspec
    # protocol.
    synthetic: str = checked("shards/digits-synth", NOT_EMPTY)
    # The unlabeled real corpus, located as data.synthetic.
    real: str = checked("shards/digits-real-train", NOT_EMPTY)
    # DataLoader processes per training worker (0 = in-process). simgan bench data --consumption
    # RATE says how many a rate needs.
    num_loader_workers: int = checked(1, at_least(0))
    # On a CUDA device: batches in pinned host memory (pinned by the loader processes' pin thread),
    # copied on a stream of their own so the copy overlaps compute. No-op on CPU. (data/streams.py
    # HostToDevice)
    pin_memory: bool = True
    # Shuffle window per loader process: each run of this many samples is permuted by its own seed
    # (so a resume needs no replay).
    shuffle_window: int = checked(2000, at_least(1))
    # What a truncated tar, an undecodable PNG, an image of the wrong size or a synthetic sample
    # without json does: skip (log URL and key, count it in num_skipped_samples) or stop (the job
    # ends with an error naming URL and key).
    on_bad_sample: OnBadSample = "skip"
    # D sees each real image under a random flip and (square images) transpose: 8x the variety
    # of a small real pool, for a local D that judges texture, not which way a digit faces.
    augment_real: bool = False
    allow_pipe_urls: bool = False  # pipe: URLs run shell commands; off unless asked for
    # fsspec options for s3:// / gs:// locations, e.g. {endpoint_url: "http://127.0.0.1:9000"}.
    # Never credentials: those come from the AWS/gcloud environment and config files.
    # Every wait on an S3 store is bounded (io/store_waits.py): connect_timeout 10 s, read_timeout
    # 20 s (silence within one answer), 3 botocore tries inside 2 s3fs tries, so a silent store
    # is given up after about 2 minutes in one line naming the endpoint; change them with
    # {config_kwargs: {connect_timeout: S, read_timeout: S, retries: {total_max_attempts: N}}}.
    storage_options: dict[str, Any] = field(default_factory=dict)
    # Audit: append the synthetic keys each rank draws to <run dir>/keys/rank-NNNN.jsonl (a line
    # per batch), to check that an epoch used every sample exactly once, across resumes too.
    record_keys: bool = False

    def check(self) -> None:
        try:
            check_storage_options(self.storage_options)
        except ValueError as err:
            raise InputError(f"data.storage_options: {err}") from None


@dataclass(frozen=True, kw_only=True)
class RunConfig(Section):
    """Where a run writes and how it is spread over Ray Train workers."""

    SECTION: ClassVar[str] = "run"
    name: str = checked("", ONE_PATH_COMPONENT)  # empty: simgan train picks a unique one
    # Where runs go (checkpoints, config, metrics, TensorBoard, grids, key logs): a directory, or
    # any fsspec URI such as s3://bucket/runs (the endpoint of an S3-compatible store goes in
    # storage_options). With a URI, workers stage their outputs under the node's temp dir and copy
    # them into the run at every checkpoint and at the end.
    storage_path: str = "runs"
    # fsspec options of the run store, e.g. {endpoint_url: ...} (credentials refused; waits
    # bounded as for data.storage_options)
    storage_options: dict[str, Any] = field(default_factory=dict)
    # Ray Train workers, one DeepSpeed rank each
    num_workers: int = checked(2, at_least(1))
    # Elastic: when > 0, a run starts with as many workers as the cluster holds, from min_workers
    # up to num_workers, continues on fewer when a node is lost and grows back when nodes return
    # (each resize restarts from the latest checkpoint, with the shards re-dealt). 0: fixed.
    min_workers: int = checked(0, at_least(0))
    # Elastic runs: seconds between looks at the cluster for room to grow
    elastic_resize_every_s: float = checked(60.0, above(0))
    # one GPU per worker (NCCL)
    use_gpu: bool = False
    # CPUs reserved and torch threads per worker
    threads_per_worker: int = checked(1, at_least(1))
    # On a Ray cluster (RAY_ADDRESS), seconds to wait for nodes with the CPUs and GPUs that
    # run.num_workers workers ask for (an autoscaler may be adding them) before the run stops in
    # one line; a local Ray that simgan started is checked at once (it never grows).
    resource_wait_s: float = checked(600.0, at_least(0))
    # With RAY_ADDRESS set, seconds to wait for the cluster there to answer (a head that is
    # starting) before the run stops in one line naming the address; Ray itself retries forever.
    ray_connect_wait_s: float = checked(60.0, at_least(0))
    # seconds a collective (all-reduce, broadcast, barrier) waits for the other ranks before the
    # run fails (Ray Train's TorchConfig timeout_s); a lost or hung rank then surfaces as an
    # error, and run.max_failures restarts from the latest checkpoint, instead of a silent hang
    collective_timeout_s: int = checked(1800, above(0))
    # seeds weights, data order and the buffer; at most 2**32-1, which every seeding call takes
    seed: int = checked(0, in_range(0, MAX_SEED, closed=True))
    # interval of metrics rows and console lines, in images
    log_every_nimg: int = checked(10_240, above(0))
    # interval of image grids, in images
    grid_every_nimg: int = checked(102_400, above(0))
    # interval of checkpoints, in images
    checkpoint_every_nimg: int = checked(256_000, above(0))
    keep_checkpoints: int = checked(3, at_least(1))  # older checkpoints are deleted by Ray Train
    # Seconds between copies of a run's outputs (metrics.jsonl, TensorBoard events, grids, key
    # logs) to an object-store run location, besides each checkpoint and the end: what a
    # dashboard or a colleague sees of a run on a bucket lags by at most this much.
    publish_every_s: float = checked(60.0, above(0))
    # worker-group restarts from the latest checkpoint before giving up
    max_failures: int = checked(
        0, Rule(lambda v: v >= 0, "must be >= 0 (Ray takes -1 as retry forever)")
    )
    # restarts after a reclaimed (preempted, e.g. spot) node, counted apart from max_failures:
    # a reclaim is not the job's fault, so it gets its own, larger budget
    max_preemption_failures: int = checked(
        20, Rule(lambda v: v >= 0, "must be >= 0 (Ray takes -1 as retry forever)")
    )
    # Every this many images each rank asks Ray Train whether a node of the run is being
    # reclaimed (a small barrier); on a drain notice the run checkpoints at once, so the restart
    # after the reclaim repeats no image. 0 = never ask.
    drain_check_every_nimg: int = checked(10_240, at_least(0))
    # "auto": a start under a name that already holds a checkpoint continues that run (a retried or
    # resubmitted job); "never": such a start is refused (simgan train --resume-if-exists, and what
    # jobs/train.py does)
    resume: Literal["never", "auto"] = "never"
    # Rank 0's metrics rows to W&B / MLflow (config/trackers.py); off by default
    wandb: RunWandb = field(default_factory=RunWandb)
    mlflow: RunMLflow = field(default_factory=RunMLflow)

    def elastic(self) -> bool:
        return 0 < self.min_workers < self.num_workers

    def worker_counts(self) -> range:
        """Every worker count the run may have."""
        return range(self.min_workers if self.elastic() else self.num_workers, self.num_workers + 1)

    def check(self) -> None:
        require(
            self.min_workers <= self.num_workers,
            "run.min_workers",
            f"must be at most run.num_workers={self.num_workers}",
            self.min_workers,
        )
        try:
            check_storage_options(self.storage_options)
        except ValueError as err:
            raise InputError(f"run.storage_options: {err}") from None
        # The pyarrow spelling of earlier versions (s3://b/runs?endpoint_override=...): the
        # endpoint has one spelling everywhere, storage_options.
        require(
            "://" not in self.storage_path or "?" not in self.storage_path,
            "run.storage_path",
            "give the endpoint and other settings as storage_options (e.g. storage_options: "
            "{endpoint_url: http://HOST:9000}), not in the URI's query",
            self.storage_path,
        )
        require(
            self.resume != "auto" or bool(self.name),
            "run.name",
            "must be set with run.resume=auto (a resubmitted job finds its run by name)",
            self.name,
        )


@dataclass(frozen=True, kw_only=True)
class ScoreConfig(Section):
    """Label-free scores on held-out images during training (eval/scores.py); `simgan tune`
    maximizes their `objective`. Computed on rank 0 and reported by every rank at each interval."""

    SECTION: ClassVar[str] = "score"
    # 0 = off; else a multiple of run.log_every_nimg (scores join that row)
    every_nimg: int = checked(0, at_least(0))
    # per domain; half train the two-sample classifier, half test it
    num_images: int = checked(256, at_least(4))
    synthetic: str = ""  # held-out synthetic corpus ("" = the first images of data.synthetic)
    real: str = ""  # held-out real corpus ("" = the first images of data.real)
    # Adam steps of the refined-vs-real classifier, batch 64
    classifier_steps: int = checked(200, at_least(1))
    # objective = realism - fidelity_weight * fidelity_l1
    fidelity_weight: float = checked(1.0, at_least(0))
    # "downstream": objective = accuracy on real_labeled of a digit classifier trained on the
    # refined held-out synthetic images with their synthetic labels (digits-shaped data only).
    objective: Literal["realism_fidelity", "downstream"] = "realism_fidelity"
    real_labeled: str = ""  # labeled real validation split, for objective "downstream"
    # passes of the downstream digit classifier over its training images
    downstream_epochs: int = checked(4, at_least(1))

    def check(self) -> None:
        require(
            self.objective != "downstream" or bool(self.real_labeled),
            "score.real_labeled",
            "must name a labeled real split when score.objective is downstream",
            self.real_labeled,
        )


@dataclass(frozen=True, kw_only=True)
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
        # An elastic run may continue on any worker count down to min_workers.
        uneven = [n for n in self.run.worker_counts() if b % (2 * n * a)]
        require(
            not uneven,
            "schedule.batch_size",
            f"must split into equal even micro-batches over every worker count an elastic run "
            f"may have (run.min_workers={self.run.min_workers} to run.num_workers={w}); "
            f"it does not for {uneven}",
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
