"""The `simgan` argument parser: every command, option, default and help text in one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from simgan_dist import __version__
from simgan_dist.cli.commands import (
    cmd_bench,
    cmd_bench_control,
    cmd_bench_data,
    cmd_bench_refine,
    cmd_bench_resume,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_refine,
    cmd_screen,
    cmd_shards_build,
    cmd_shards_stats,
    cmd_shards_verify,
    cmd_train,
    cmd_tune,
)
from simgan_dist.cli.console import LOG_LEVELS
from simgan_dist.config.credentials import NO_USERINFO, has_userinfo
from simgan_dist.config.schema import BAD_SAMPLE_CHOICES, MAX_SEED, REFINE_PRECISION_CHOICES

EXIT_CODES = (
    "exit status: 0 done; 1 a run-time failure (data, store, checkpoint, training or refine "
    "stopped: one line names the cause); 2 a config or usage error (names the field and the "
    "file); 130 interrupted (Ctrl-C)."
)
DESCRIPTION = (
    "SimGAN refiners at scale: shards, train, tune, screen, refine, export, eval, demo, bench. "
    "Parses arguments and calls the packages."
)


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default where it has a real one (not None, off or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text
        return f"{text} (default: %(default)s)" if shown and action.option_strings else text


def _argument_name(argv: Sequence[str], index: int) -> str:
    """How a usage error names argv[index]: its option (--input, --set) or its position."""
    text = argv[index]
    if text.startswith("--") and "=" in text:
        return text.split("=", 1)[0]
    if index > 0 and argv[index - 1].startswith("-"):
        key = text.split("=", 1)[0]  # --set FIELD=VALUE, --storage-option KEY=VALUE
        named = "=" in text and "://" not in key and len(key) <= 80
        return f"{argv[index - 1]} {key}" if named else argv[index - 1]
    return f"argument {index + 1}"


def _seed(text: str) -> int:
    """A --seed value: an integer in [0, MAX_SEED], the range run.seed takes."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}]")
    return value


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: defaults shown in its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]  # same call, one check first
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # Every location, endpoint and --set value enters here: a URL with user:password@ is
        # refused before a command could print it or save it, naming the option, not the value.
        argv = list(sys.argv[1:] if args is None else args)
        for index, text in enumerate(argv):
            if has_userinfo(text):
                self.error(f"{_argument_name(argv, index)}: {NO_USERINFO}")
        return super().parse_known_args(argv, namespace)


def _add_set_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help=help_text)  # fmt: skip


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (may name a `preset:` to start from)")
    parser.add_argument(
        "--preset", help="start from a bundled preset: gaze, hand, digits, digits-photo, debug"
    )
    _add_set_arg(parser, "override one field (repeatable)")


def _add_storage_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="fsspec option for s3:// or gs:// locations, e.g. "
                             "endpoint_url=http://127.0.0.1:9000 (repeatable; no credentials)")  # fmt: skip


def _add_refine_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=256, help="images per refiner forward")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="refiner actors (default: one per GPU, or per threads-per-worker CPUs)")  # fmt: skip
    parser.add_argument("--threads-per-worker", type=int, default=2, help="torch threads per actor")
    parser.add_argument(
        "--gpu", action="store_true", help="GPUs for the actors (--gpus-per-worker each)"
    )
    parser.add_argument("--gpus-per-worker", type=float, default=1.0,
                        help="with --gpu: GPUs per actor; 0.25 puts four on one GPU, each decoding "
                        "and encoding on its own CPUs (default: 1)")  # fmt: skip
    parser.add_argument("--shards-per-worker", type=int, default=2,
                        help="shards an actor holds at once, their reading and writing "
                        "overlapping its forwards (default: 2)")  # fmt: skip
    parser.add_argument("--precision", choices=REFINE_PRECISION_CHOICES, default="auto",
                        help="auto: bf16 autocast on GPU, fp32 on CPU")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="simgan", description=DESCRIPTION, epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"simgan-dist {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO",
                        help="our own log lines at this level and above")  # fmt: skip
    parser.add_argument("--quiet", action="store_true",
                        help="only warnings and errors of our own, no progress bars")  # fmt: skip
    parser.add_argument("--verbose", action="store_true",
                        help="also Ray's and DeepSpeed's own INFO and WARNING lines")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    shards = sub.add_parser("shards", help="build and check WebDataset shards")
    shards_sub = shards.add_subparsers(dest="shards_command", required=True)
    build = shards_sub.add_parser("build", help="write shards from a simulator or a folder")
    build.add_argument("source", choices=["digits", "digits-photo", "eyes", "folder"],
                       help="digits or eyes: the bundled simulators (and, for digits, the bundled "
                            "real digits); digits-photo: the digits-on-photographs target, six "
                            "corpora; folder: your own images")  # fmt: skip
    build.add_argument("--out", default="shards", help="output root (digits, eyes) or directory")
    build.add_argument("--num-samples", type=int, default=20_000, help="synthetic samples")
    build.add_argument("--samples-per-shard", type=int, default=2_000, help="samples per tar")
    build.add_argument(
        "--seed", type=_seed, default=0, help="simulator seed (same seed, same bytes)"
    )
    build.add_argument("--folder", help="image folder (source 'folder'); sidecar .json kept")
    build.add_argument("--size", help="resize to HxW (source 'folder')")
    build.add_argument("--rgb", action="store_true", help="keep colour (source 'folder')")
    build.add_argument("--appearance", choices=["gray", "clean", "randomized"], default="gray",
                       help="source 'digits': the simulator's colouring; clean and randomized "
                            "write digits-synth-clean or -randomized (RGB)")  # fmt: skip
    _add_storage_arg(build)
    build.set_defaults(func=cmd_shards_build)
    verify = shards_sub.add_parser("verify", help="decode every sample, check the manifest")
    verify.add_argument("location", help="shard directory, manifest, URL pattern or URI")
    _add_storage_arg(verify)
    verify.set_defaults(func=cmd_shards_verify)
    stats = shards_sub.add_parser("stats", help="counts, sizes and pixel statistics")
    stats.add_argument("location", help="shard directory, manifest, URL pattern or URI")
    _add_storage_arg(stats)
    stats.set_defaults(func=cmd_shards_stats)

    train = sub.add_parser("train", help="train a refiner on Ray Train + DeepSpeed")
    _add_config_args(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its checkpoint")
    train.add_argument("--resume-if-exists", action="store_true",
                       help="continue run.name from its latest checkpoint when it has one, else "
                            "start it (= --set run.resume=auto; for retried and resubmitted jobs)")  # fmt: skip
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config as YAML and exit (writes and starts nothing)")  # fmt: skip
    _add_storage_arg(train)  # for --resume of a run in an object store
    train.set_defaults(func=cmd_train)

    tune = sub.add_parser("tune", help="hyperparameter search: one Ray Train run per trial")
    _add_config_args(tune)
    tune.add_argument("--search", help="search YAML (space: and tune:) or a bundled name: digits")
    tune.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted search")
    tune.add_argument("--resume-if-exists", action="store_true",
                      help="continue the search named by tune.name when it exists, else start it")  # fmt: skip
    _add_storage_arg(tune)  # for --resume of an experiment in an object store
    tune.set_defaults(func=cmd_tune)

    refine = sub.add_parser("refine", help="write refined shards from a checkpoint, on Ray")
    refine.add_argument("--checkpoint", required=True,
                        help="run, checkpoint or export directory, or an export's .json (or URI)")  # fmt: skip
    refine.add_argument("--input", required=True, help="synthetic shards (dir, manifest, pattern)")
    refine.add_argument("--output", required=True, help="output directory or bucket prefix")
    _add_refine_settings_args(refine)
    refine.add_argument("--variants", type=int, default=1,
                        help="refined copies per sample, from R's noise input (keys <key>_v<i>)")  # fmt: skip
    refine.add_argument("--on-bad-sample", choices=BAD_SAMPLE_CHOICES, default="skip",
                        help="skip: count and report it; stop: stop the job naming URL and key")  # fmt: skip
    refine.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_arg(refine)
    refine.set_defaults(func=cmd_refine)

    export = sub.add_parser(
        "export", help="a trained refiner as safetensors + JSON and ONNX, for use without simgan"
    )
    export.add_argument("location", metavar="RUN_OR_CHECKPOINT",
                        help="run directory (its newest checkpoint that loads) or checkpoint (or URI)")  # fmt: skip
    export.add_argument("--out", required=True,
                        help="export directory: refiner.safetensors, refiner.json, refiner.onnx")  # fmt: skip
    export.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                        help="also write refiner.onnx, checked with onnxruntime against PyTorch "
                             "(needs the `export` extra)")  # fmt: skip
    _add_storage_arg(export)
    export.set_defaults(func=cmd_export)

    evaluate = sub.add_parser("eval", help="downstream digit classifier: synthetic vs refined")
    evaluate.add_argument("--synthetic", required=True, help="the synthetic shards (with labels)")
    evaluate.add_argument("--refined", required=True,
                          help="the same samples refined (same keys, labels kept)")  # fmt: skip
    evaluate.add_argument("--real-eval", required=True, help="labeled real shards (never trained)")
    evaluate.add_argument("--out", required=True,
                          help="report directory, local or in an object store (e.g. the run's)")  # fmt: skip
    _add_storage_arg(evaluate)  # for an --out in an object store
    evaluate.add_argument(
        "--real-train-labeled",
        default=None,
        help="labeled real *training* shards: trains the real-data oracle row only",
    )
    evaluate.add_argument("--randomized", default=None,
                          help="the simulator's domain-randomized output (same keys and labels as "
                               "--synthetic): the arm refinement must beat")  # fmt: skip
    evaluate.add_argument("--ceiling", default=None,
                          help="the synthetic digits composited on the target's photographs (same "
                               "keys and labels): the appearance ceiling arm")  # fmt: skip
    evaluate.add_argument("--arm", action="append", default=[], metavar="NAME=LOCATION",
                          help="one more arm of copies of the synthetic samples (same keys and "
                               "labels), trained and reported like the others; repeatable")  # fmt: skip
    evaluate.add_argument("--seed", type=_seed, default=0, help="first classifier seed")
    evaluate.add_argument(
        "--num-seeds", type=int, default=5, help="classifier seeds per arm (>= 2, paired)"
    )
    evaluate.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="passes over the synthetic set; every arm gets its steps",
    )
    evaluate.set_defaults(func=cmd_eval)

    screen = sub.add_parser(
        "screen",
        help="choose settings: train in one process, refine in memory, score on a validation split",
    )
    _add_config_args(screen)
    screen.add_argument(
        "--validation",
        default="shards/digits-real-train-labeled",
        help="labeled real shards to score on; never the eval set (default: the labels of the "
        "real training digits, the documented validation split)",
    )
    screen.add_argument("--out", required=True, help="report and refined-shard directory")
    screen.add_argument("--num-seeds", type=int, default=3, help="classifier seeds per arm (>= 2)")
    screen.add_argument("--epochs", type=int, default=4, help="passes over the synthetic set")
    screen.add_argument("--threads", type=int, default=2, help="torch threads for this process")
    screen.add_argument("--variants", type=int, default=1,
                        help="refined copies per synthetic image, from R's noise input")  # fmt: skip
    screen.add_argument("--randomized", help="domain-randomized copies of the synthetic corpus: "
                        "an arm, and the refined - randomized difference")  # fmt: skip
    screen.add_argument(
        "--ceiling", help="appearance-ceiling copies of the synthetic corpus: an arm"
    )
    screen.add_argument("--with-oracle", action="store_true",
                        help="cut --validation in two: the real-data oracle trains on the first "
                             "half, every arm is scored on the second (gives gap closed)")  # fmt: skip
    screen.set_defaults(func=cmd_screen)

    demo = sub.add_parser("demo", help="shards -> 2-worker training -> refine -> eval, locally")
    demo.add_argument("--out", default="runs/demo", help="run, refined shards and report")
    demo.add_argument("--shards", default="shards", help="shard root (built there if missing)")
    demo.add_argument("--seed", type=_seed, default=0, help="run and first classifier seed")
    demo.add_argument("--target", default="digits-photo", choices=("digits-photo", "digits"),
                      help="digits-photo: simulator digits -> real digits on photographs (an "
                           "appearance gap); digits: grey digits -> MNIST (the shape-gap case)")  # fmt: skip
    demo.add_argument("--preset", help="train with this preset instead of the target's own "
                      "(digits-photo-long: the longer run)")  # fmt: skip
    _add_set_arg(demo, "override the target's preset")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_train = bench_sub.add_parser(
        "train", help="images/s: bare PyTorch loop vs our loop on 1 and 2 Ray workers"
    )
    bench_train.add_argument("--preset", default="digits", help="model, batch and corpora")
    bench_train.add_argument("--batch-size", type=int, help="global batch (default: the preset's)")
    bench_train.add_argument(
        "--nimg", type=int, default=9600, help="adversarial images timed per configuration"
    )
    bench_train.add_argument(
        "--rounds", type=int, default=2, help="alternating Ray runs per configuration"
    )
    bench_train.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                             help="where the loops run")  # fmt: skip
    bench_train.add_argument("--compile", action="store_true",
                             help="also time the bare loop with torch.compile'd R and D")  # fmt: skip
    bench_train.add_argument("--shards", help="shard root holding the preset's corpora")
    bench_train.add_argument("--work-dir", help="keep the bench runs here (default: temporary)")
    bench_train.add_argument("--out", help="write the figures as JSON here")
    _add_set_arg(bench_train, "override the preset (repeatable)")
    bench_train.set_defaults(func=cmd_bench)
    bench_refine = bench_sub.add_parser(
        "refine", help="images/s: bare refiner forward vs shards in, shards out on Ray"
    )
    bench_refine.add_argument("--preset", default="gaze", help="refiner shape and image size")
    bench_refine.add_argument("--num-images", type=int, default=4096, help="images refined")
    bench_refine.add_argument("--samples-per-shard", type=int, default=512,
                              help="samples per simulated shard")  # fmt: skip
    bench_refine.add_argument("--shards", help="refine these shards instead of simulated ones")
    bench_refine.add_argument("--work-dir", help="keep the bench files here (default: temporary)")
    bench_refine.add_argument("--out", help="write the figures as JSON here")
    bench_refine.add_argument(
        "--node-cpus",
        type=int,
        help="project for a node of this many CPUs (default: this machine's)",
    )
    bench_refine.add_argument(
        "--node-gpus", type=int, help="... and GPUs (default: this machine's with --gpu, else 0)"
    )
    _add_refine_settings_args(bench_refine)
    bench_refine.set_defaults(func=cmd_bench_refine)
    bench_data = bench_sub.add_parser(
        "data", help="decoded images/s: local S3 server vs local disk vs training's appetite"
    )
    bench_data.add_argument(
        "--preset", default="digits", help="model and batch of the train figure"
    )
    bench_data.add_argument("--num-samples", type=int, default=8000, help="digits in the corpus")
    bench_data.add_argument("--num-batches", type=int, default=200, help="batches timed per source")
    bench_data.add_argument("--num-loader-workers", type=int, default=1,
                            help="DataLoader processes per stream")  # fmt: skip
    bench_data.add_argument("--endpoint-url", help="an S3-compatible store instead of local moto")
    bench_data.add_argument("--consumption", type=float, action="append", metavar="IMG_PER_S",
                            help="also say how many loader processes this rate needs (repeatable)")  # fmt: skip
    bench_data.add_argument("--out", help="write the figures as JSON here")
    bench_data.set_defaults(func=cmd_bench_data)
    bench_control = bench_sub.add_parser(
        "control",
        help="shard catalog and refine ledger at scale, simulated (docs/bench.md: Control plane at scale)",
    )
    bench_control.add_argument("--num-shards", default="1000,10000,100000",
                               help="comma-separated corpus/job sizes in shards")  # fmt: skip
    bench_control.add_argument("--num-workers", type=int, default=1024, help="simulated workers")
    bench_control.add_argument("--samples-per-shard", type=int, default=2000,
                               help="samples per shard (the bundled shards' size)")  # fmt: skip
    bench_control.add_argument("--preset", default="digits", help="model the workers run")
    bench_control.add_argument("--s3-endpoint", help="an S3-compatible store instead of local moto")
    bench_control.add_argument("--no-s3", action="store_true", help="local disk only")
    bench_control.add_argument("--no-index-max", type=int, default=2000,
                               help="also re-plan without the ledger index up to this size")  # fmt: skip
    bench_control.add_argument("--actor-calls", type=int, default=200,
                               help="record calls timed through a Ray actor (0: no Ray)")  # fmt: skip
    bench_control.add_argument("--out", help="write the figures as JSON here")
    bench_control.set_defaults(func=cmd_bench_control)
    bench_resume = bench_sub.add_parser(
        "resume", help="resume time of a training stream against images already trained"
    )
    bench_resume.add_argument("--nimg", default="0,20000,40000,80000",
                              help="comma-separated images trained before each resume")  # fmt: skip
    bench_resume.add_argument("--num-shards", type=int, default=60, help="shards in the corpus")
    bench_resume.add_argument(
        "--samples-per-shard", type=int, default=1000, help="samples per shard"
    )
    bench_resume.add_argument("--preset", default="digits", help="batch, shuffle buffer, loaders")
    bench_resume.add_argument("--num-loader-workers", type=int,
                              help="loader processes (default: the preset's)")  # fmt: skip
    bench_resume.add_argument("--out", help="write the figures as JSON here")
    bench_resume.set_defaults(func=cmd_bench_resume)
    return parser
