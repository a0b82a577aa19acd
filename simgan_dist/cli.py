"""The `simgan` command: shards, train, refine, eval, demo. Parses arguments and calls the modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from simgan_dist.config import ConfigError, load_config


def _add_set_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help=help_text)  # fmt: skip


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (may name a `preset:` to start from)")
    parser.add_argument("--preset", help="start from a bundled preset: gaze, hand, digits, debug")
    _add_set_arg(parser, "override one field (repeatable)")


def _add_storage_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="fsspec option for s3:// or gs:// locations, e.g. "
                             "endpoint_url=http://127.0.0.1:9000 (repeatable; no credentials)")  # fmt: skip


def _storage_options(args: argparse.Namespace) -> dict:
    from simgan_dist.config.credentials import check_storage_options

    options = {}
    for text in args.storage_options:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ConfigError("--storage-option: expected KEY=VALUE")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(
                f"--storage-option {key}: the value is not valid YAML ({reason})"
            ) from None
    try:
        check_storage_options(options)
    except ValueError as err:
        raise ConfigError(f"--storage-option: {err}") from None
    return options


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 35x55")
    return int(parts[0]), int(parts[1])


def cmd_shards_build(args: argparse.Namespace) -> None:
    from simgan_dist.data import build as shard_build
    from simgan_dist.io.urls import join

    out, options = args.out, _storage_options(args)
    if args.samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard: must be >= 1, got {args.samples_per_shard}")
    if args.source == "digits":
        synth = shard_build.build_synthetic_digits(
            join(out, "digits-synth"), args.num_samples, args.samples_per_shard, args.seed, options
        )
        real_train, real_eval = shard_build.build_real_digits(
            join(out, "digits-real-train"), join(out, "digits-real-eval"),
            args.samples_per_shard, storage_options=options,
        )  # fmt: skip
        # The same real training digits with labels: only the oracle row of `simgan eval` reads them.
        real_labeled = shard_build.build_real_train_labeled(
            join(out, "digits-real-train-labeled"), args.samples_per_shard, storage_options=options
        )
        for manifest in (synth, real_train, real_eval, real_labeled):
            print(
                f"{manifest.name}: {manifest.num_samples} samples in {len(manifest.shards)} shards"
            )
    elif args.source == "eyes":
        manifest = shard_build.build_synthetic_eyes(
            join(out, "eyes-synth"), args.num_samples, args.samples_per_shard, args.seed, options
        )
        print(f"{manifest.name}: {manifest.num_samples} samples in {len(manifest.shards)} shards")
    else:
        if not args.folder:
            raise ConfigError("--folder: required with source 'folder'")
        size = _parse_size(args.size) if args.size else None
        manifest = shard_build.build_from_folder(
            args.folder, out, args.samples_per_shard, not args.rgb, size, options
        )
        print(f"{manifest.name}: {manifest.num_samples} samples in {len(manifest.shards)} shards")


def cmd_shards_verify(args: argparse.Namespace) -> None:
    from simgan_dist.data.check import verify_shards

    problems = verify_shards(args.location, _storage_options(args))
    for problem in problems:
        print(problem)
    print(f"{args.location}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    if problems:
        sys.exit(1)


def cmd_shards_stats(args: argparse.Namespace) -> None:
    from simgan_dist.data.check import shard_stats

    print(json.dumps(shard_stats(args.location, _storage_options(args)), indent=1))


def cmd_train(args: argparse.Namespace) -> None:
    from simgan_dist.train.ray_train import TrainingError, run_training
    from simgan_dist.train.runs import resume_run, start_run

    if args.resume:
        cfg, run_dir = resume_run(args.resume, args.overrides)
    else:
        if not (args.config or args.preset):
            raise ConfigError("train: give --config FILE or --preset NAME (or --resume RUN_DIR)")
        cfg, run_dir = start_run(load_config(args.config, args.preset, args.overrides))
    print(f"[simgan] run directory: {run_dir}", flush=True)
    try:
        result = run_training(cfg, run_dir)
    except TrainingError as err:
        raise SystemExit(f"simgan train: training failed: {err}") from None
    assert result.checkpoint is not None  # a run without error ends with one
    print(f"[simgan] final checkpoint: {result.checkpoint.path}")


def cmd_tune(args: argparse.Namespace) -> None:
    from simgan_dist.tune.search import resume_search, run_and_report, start_search
    from simgan_dist.tune.space import load_search

    if args.resume:
        exp = resume_search(args.resume)
    else:
        if not (args.search and (args.config or args.preset)):
            raise ConfigError(
                "tune: give --search FILE and --config FILE or --preset NAME "
                "(or --resume EXPERIMENT_DIR)"
            )
        cfg = load_config(args.config, args.preset, args.overrides)
        exp = start_search(cfg, load_search(args.search, cfg))
    print(f"[simgan] search: {exp.location}", flush=True)
    summary = run_and_report(exp, resume=bool(args.resume))
    print(Path(summary["table"]).read_text())
    print(json.dumps(summary, indent=1))


def _add_refine_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0,
                        help="refiner actors (default: one per GPU, or per threads-per-worker CPUs)")  # fmt: skip
    parser.add_argument("--threads-per-worker", type=int, default=2, help="torch threads per actor")
    parser.add_argument("--gpu", action="store_true", help="one GPU per actor")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on GPU, fp32 on CPU")  # fmt: skip


def _refine_settings(args: argparse.Namespace, **fields: Any):
    from simgan_dist.refine.shard import RefineSettings

    try:
        return RefineSettings(
            batch_size=args.batch_size, num_workers=args.num_workers,
            threads_per_worker=args.threads_per_worker, use_gpu=args.gpu,
            precision=args.precision, **fields,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cmd_refine(args: argparse.Namespace) -> None:
    from simgan_dist.data.reader import BadSampleError
    from simgan_dist.refine.lease import OutputBusyError
    from simgan_dist.refine.ray_pool import RefineError, refine_shards

    settings = _refine_settings(args, on_bad_sample=args.on_bad_sample, num_variants=args.variants)
    options = _storage_options(args)
    try:
        summary = refine_shards(args.checkpoint, args.input, args.output, settings,
                                storage_options=options, progress=not args.no_progress)  # fmt: skip
    except (RefineError, OutputBusyError, BadSampleError, OSError, ValueError) as err:
        print(f"simgan refine: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=1))


def cmd_eval(args: argparse.Namespace) -> None:
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.eval.report import headline

    report = evaluate_digits(
        args.synthetic,
        args.refined,
        args.real_eval,
        args.out,
        real_train_labeled=args.real_train_labeled,
        seed=args.seed,
        epochs=args.epochs,
        num_seeds=args.num_seeds,
        progress=lambda line: print(f"[eval] {line}", file=sys.stderr, flush=True),
    )
    print(headline(report))
    print(f"report: {Path(args.out) / 'report.md'}")


def cmd_screen(args: argparse.Namespace) -> None:
    import torch

    from simgan_dist.eval.report import headline
    from simgan_dist.tune.screen import screen

    if not (args.config or args.preset):
        raise ConfigError("screen: give --config FILE or --preset NAME")
    cfg = load_config(args.config, args.preset, args.overrides)
    torch.set_num_threads(args.threads)
    report = screen(
        cfg,
        args.validation,
        args.out,
        num_seeds=args.num_seeds,
        epochs=args.epochs,
        progress=lambda line: print(f"[screen] {line}", file=sys.stderr, flush=True),
        num_variants=args.variants,
    )
    print(headline(report))
    print(f"report: {Path(args.out) / 'report.md'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from simgan_dist.demo import run_demo

    run_demo(
        Path(args.out), shards_root=Path(args.shards), seed=args.seed, overrides=args.overrides
    )


def _print_figures(table: str, result: dict, out: str | None) -> None:
    """A bench's table on stdout and, with --out, its figures as JSON."""
    print(table, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"[bench] figures written to {out}")


def cmd_bench_data(args: argparse.Namespace) -> None:
    from simgan_dist.bench.data import bench_data, format_table

    result = bench_data(
        num_samples=args.num_samples,
        num_batches=args.num_batches,
        num_loader_workers=args.num_loader_workers,
        preset=args.preset,
        endpoint_url=args.endpoint_url,
    )
    _print_figures(format_table(result), result, args.out)


def cmd_bench(args: argparse.Namespace) -> None:
    from simgan_dist.bench.table import format_table
    from simgan_dist.bench.train import bench_train

    result = bench_train(
        preset=args.preset,
        batch_size=args.batch_size,
        nimg=args.nimg,
        device=args.device,
        shards=args.shards,
        work_dir=args.work_dir,
        overrides=args.overrides,
        rounds=args.rounds,
    )
    _print_figures(format_table(result), result, args.out)


def cmd_bench_refine(args: argparse.Namespace) -> None:
    from simgan_dist.bench.refine import bench_refine, format_refine_table

    result = bench_refine(args.preset, args.num_images, args.samples_per_shard,
                          _refine_settings(args), args.shards, args.work_dir)  # fmt: skip
    _print_figures(format_refine_table(result), result, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simgan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    shards = sub.add_parser("shards", help="build and check WebDataset shards")
    shards_sub = shards.add_subparsers(dest="shards_command", required=True)
    build = shards_sub.add_parser("build", help="write shards from a simulator or a folder")
    build.add_argument("source", choices=["digits", "eyes", "folder"])
    build.add_argument("--out", default="shards", help="output root (digits, eyes) or directory")
    build.add_argument("--num-samples", type=int, default=20_000, help="synthetic samples")
    build.add_argument("--samples-per-shard", type=int, default=2_000)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--folder", help="image folder (source 'folder'); sidecar .json kept")
    build.add_argument("--size", help="resize to HxW (source 'folder')")
    build.add_argument("--rgb", action="store_true", help="keep colour (source 'folder')")
    _add_storage_arg(build)
    build.set_defaults(func=cmd_shards_build)
    verify = shards_sub.add_parser("verify", help="decode every sample, check the manifest")
    verify.add_argument("location")
    _add_storage_arg(verify)
    verify.set_defaults(func=cmd_shards_verify)
    stats = shards_sub.add_parser("stats", help="counts, sizes and pixel statistics")
    stats.add_argument("location")
    _add_storage_arg(stats)
    stats.set_defaults(func=cmd_shards_stats)

    train = sub.add_parser("train", help="train a refiner on Ray Train + DeepSpeed")
    _add_config_args(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its checkpoint")
    train.set_defaults(func=cmd_train)

    tune = sub.add_parser("tune", help="hyperparameter search: one Ray Train run per trial")
    _add_config_args(tune)
    tune.add_argument("--search", help="search YAML (space: and tune:) or a bundled name: digits")
    tune.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted search")
    tune.set_defaults(func=cmd_tune)

    refine = sub.add_parser("refine", help="write refined shards from a checkpoint, on Ray")
    refine.add_argument("--checkpoint", required=True, help="checkpoint or run directory (or URI)")
    refine.add_argument("--input", required=True, help="synthetic shards (dir, manifest, pattern)")
    refine.add_argument("--output", required=True, help="output directory or bucket prefix")
    _add_refine_settings_args(refine)
    refine.add_argument("--variants", type=int, default=1,
                        help="refined copies per sample, from R's noise input (keys <key>_v<i>)")  # fmt: skip
    refine.add_argument("--on-bad-sample", choices=["skip", "stop"], default="skip")
    refine.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_arg(refine)
    refine.set_defaults(func=cmd_refine)

    evaluate = sub.add_parser("eval", help="downstream digit classifier: synthetic vs refined")
    evaluate.add_argument("--synthetic", required=True)
    evaluate.add_argument("--refined", required=True)
    evaluate.add_argument("--real-eval", required=True, help="labeled real shards (never trained)")
    evaluate.add_argument("--out", required=True, help="report directory")
    evaluate.add_argument(
        "--real-train-labeled",
        default=None,
        help="labeled real *training* shards: trains the real-data oracle row only",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="first classifier seed")
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
    screen.set_defaults(func=cmd_screen)

    demo = sub.add_parser("demo", help="shards -> 2-worker training -> refine -> eval, locally")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--shards", default="shards")
    demo.add_argument("--seed", type=int, default=0)
    _add_set_arg(demo, "override the digits preset")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_train = bench_sub.add_parser(
        "train", help="images/s: bare PyTorch loop vs our loop on 1 and 2 Ray workers"
    )
    bench_train.add_argument("--preset", default="digits")
    bench_train.add_argument("--batch-size", type=int, help="global batch (default: the preset's)")
    bench_train.add_argument(
        "--nimg", type=int, default=9600, help="adversarial images timed per configuration"
    )
    bench_train.add_argument(
        "--rounds", type=int, default=2, help="alternating Ray runs per configuration"
    )
    bench_train.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench_train.add_argument("--shards", help="shard root holding the preset's corpora")
    bench_train.add_argument("--work-dir", help="keep the bench runs here (default: temporary)")
    bench_train.add_argument("--out", help="write the figures as JSON here")
    _add_set_arg(bench_train, "override the preset (repeatable)")
    bench_train.set_defaults(func=cmd_bench)
    bench_refine = bench_sub.add_parser(
        "refine", help="images/s: bare refiner forward vs shards in, shards out on Ray"
    )
    bench_refine.add_argument("--preset", default="gaze")
    bench_refine.add_argument("--num-images", type=int, default=4096)
    bench_refine.add_argument("--samples-per-shard", type=int, default=512)
    bench_refine.add_argument("--shards", help="refine these shards instead of simulated ones")
    bench_refine.add_argument("--work-dir", help="keep the bench files here (default: temporary)")
    bench_refine.add_argument("--out", help="write the figures as JSON here")
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
    bench_data.add_argument("--num-loader-workers", type=int, default=1)
    bench_data.add_argument("--endpoint-url", help="an S3-compatible store instead of local moto")
    bench_data.add_argument("--out", help="write the figures as JSON here")
    bench_data.set_defaults(func=cmd_bench_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as err:
        print(f"simgan: config error: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError) as err:
        # Unreachable stores, missing shards, refused URLs, bad samples with on_bad_sample=stop,
        # unreadable checkpoints: each message names the URL, key, file or field. SIMGAN_TRACEBACK=1
        # shows the traceback instead, for a bug report.
        if os.environ.get("SIMGAN_TRACEBACK") == "1":
            raise
        print(f"simgan: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
