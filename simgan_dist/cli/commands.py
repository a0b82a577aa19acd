"""The `simgan` subcommands: each turns parsed arguments into one call of the packages below."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from simgan_dist.config import Config, ConfigError, config_to_yaml, load_config
from simgan_dist.errors import SimganError
from simgan_dist.io.progress import progress_line

if TYPE_CHECKING:
    from simgan_dist.io.location import Location


def storage_options_from_args(args: argparse.Namespace) -> dict:
    from simgan_dist.config.credentials import check_storage_options
    from simgan_dist.config.yaml_input import load_yaml

    options = {}
    for text in args.storage_options:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ConfigError("--storage-option: expected KEY=VALUE")
        try:
            options[key] = load_yaml(raw)  # no aliases, bounded depth
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


def location_arg(args: argparse.Namespace, url: str | Path) -> Location:
    """A location given on the command line, with the --storage-option flags as its options."""
    from simgan_dist.io.location import Location

    return Location(str(url), storage_options_from_args(args))


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 35x55")
    return int(parts[0]), int(parts[1])


def cmd_shards_build(args: argparse.Namespace) -> None:
    from simgan_dist.data import build as shard_build

    out = location_arg(args, args.out)
    if args.samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard: must be >= 1, got {args.samples_per_shard}")
    if args.source == "digits":
        # A colour appearance gets a corpus of its own: digits-synth stays the grey preset's.
        synth_name = "digits-synth" + ("" if args.appearance == "gray" else f"-{args.appearance}")
        synth = shard_build.build_synthetic_digits(
            out.join(synth_name), args.num_samples, args.samples_per_shard, args.seed,
            appearance=args.appearance,
        )  # fmt: skip
        real_train, real_eval = shard_build.build_real_digits(
            out.join("digits-real-train"), out.join("digits-real-eval"), args.samples_per_shard
        )
        # The same real training digits with labels: only the oracle row of `simgan eval` reads them.
        real_labeled = shard_build.build_real_train_labeled(
            out.join("digits-real-train-labeled"), args.samples_per_shard
        )
        manifests = [synth, real_train, real_eval, real_labeled]
    elif args.source == "digits-photo":
        manifests = shard_build.build_photo_digits(
            out, args.seed, args.num_samples, args.samples_per_shard
        )
    elif args.source == "eyes":
        eyes = out.join("eyes-synth")
        manifests = [
            shard_build.build_synthetic_eyes(
                eyes, args.num_samples, args.samples_per_shard, args.seed
            )
        ]
    else:
        if not args.folder:
            raise ConfigError("--folder: required with source 'folder'")
        size = _parse_size(args.size) if args.size else None
        manifests = [
            shard_build.build_from_folder(
                args.folder, out, args.samples_per_shard, not args.rgb, size
            )
        ]
    for manifest in manifests:
        print(f"{manifest.name}: {manifest.num_samples} samples in {len(manifest.shards)} shards")


def cmd_shards_verify(args: argparse.Namespace) -> None:
    from simgan_dist.data.check import verify_shards

    problems = verify_shards(location_arg(args, args.location))
    for problem in problems:
        print(problem)
    print(f"{args.location}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    if problems:
        sys.exit(1)


def cmd_shards_stats(args: argparse.Namespace) -> None:
    from simgan_dist.data.check import shard_stats

    print(json.dumps(shard_stats(location_arg(args, args.location)), indent=1))


def _train_config(args: argparse.Namespace) -> Config:
    if not (args.config or args.preset):
        raise ConfigError("train: give --config FILE or --preset NAME (or --resume RUN_DIR)")
    auto = ["run.resume=auto"] if args.resume_if_exists else []
    return load_config(args.config, args.preset, [*args.overrides, *auto])


def cmd_train(args: argparse.Namespace) -> None:
    from simgan_dist.train import runs
    from simgan_dist.train.ray_train import TrainingError, run_training

    if args.resume and args.resume_if_exists:
        raise ConfigError("train: give --resume RUN_DIR or --resume-if-exists, not both")
    if args.print_config:
        if args.resume:
            cfg = runs.run_config(location_arg(args, args.resume), args.overrides)
        else:
            cfg = runs.absolutize(_train_config(args))
        print(config_to_yaml(cfg), end="")
        return
    if args.resume:
        cfg = runs.run_config(location_arg(args, args.resume), args.overrides)
    else:
        cfg = runs.prepare_run(_train_config(args))
    try:
        # One job per run: the lease is taken before the config is written and Ray starts.
        with runs.run_lease(cfg):
            run_dir = runs.save_run(cfg)
            print(f"[simgan] run: {runs.run_location(cfg)}", flush=True)
            result = run_training(cfg, run_dir)
    except runs.RunBusyError as err:
        raise SystemExit(f"simgan train: {err}") from None
    except TrainingError as err:
        raise SystemExit(f"simgan train: training failed: {err}") from None
    assert result.checkpoint is not None  # a run without error ends with one
    print(f"[simgan] final checkpoint: {result.checkpoint.path}")


def cmd_tune(args: argparse.Namespace) -> None:
    from simgan_dist.train.runs import storage_root
    from simgan_dist.tune.search import existing_search, resume_search, run_and_report, start_search
    from simgan_dist.tune.space import load_search

    resume = bool(args.resume)
    if args.resume:
        exp = resume_search(location_arg(args, args.resume))
    else:
        if not (args.search and (args.config or args.preset)):
            raise ConfigError(
                "tune: give --search FILE and --config FILE or --preset NAME "
                "(or --resume EXPERIMENT_DIR)"
            )
        cfg = load_config(args.config, args.preset, args.overrides)
        search = load_search(args.search, cfg)
        existing = existing_search(cfg, search) if args.resume_if_exists else None
        resume = existing is not None
        if existing:  # the experiment lives on the run store, as start_search puts it
            exp = resume_search(storage_root(cfg).at(existing))
        else:
            exp = start_search(cfg, search)
    print(f"[simgan] search: {exp.location}", flush=True)
    summary = run_and_report(exp, resume=resume)
    print(Path(summary["table"]).read_text())
    print(json.dumps(summary, indent=1))
    if summary["interrupted"]:
        # Tune handles Ctrl-C itself (it saves the search and returns); the partial table is
        # printed above, and the exit status says interrupted (130), as for every command.
        raise KeyboardInterrupt


def refine_settings_from_args(args: argparse.Namespace, **fields: Any):
    from simgan_dist.refine.shard import RefineSettings

    try:
        return RefineSettings(
            batch_size=args.batch_size, num_workers=args.num_workers,
            threads_per_worker=args.threads_per_worker, use_gpu=args.gpu,
            gpus_per_worker=args.gpus_per_worker, shards_per_worker=args.shards_per_worker,
            precision=args.precision, **fields,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cmd_refine(args: argparse.Namespace) -> None:
    from simgan_dist.refine.ray_pool import refine_shards

    settings = refine_settings_from_args(
        args, on_bad_sample=args.on_bad_sample, num_variants=args.variants
    )
    options = storage_options_from_args(args)
    try:
        summary = refine_shards(args.checkpoint, args.input, args.output, settings,
                                storage_options=options, progress=not (args.no_progress or args.quiet))  # fmt: skip
    except (SimganError, OSError) as err:  # a bug keeps its traceback (cli.main)
        print(f"simgan refine: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=1))


def cmd_export(args: argparse.Namespace) -> None:
    from simgan_dist.refine.export import export_refiner, format_export

    options = storage_options_from_args(args)
    info = export_refiner(args.location, args.out, onnx=args.onnx, storage_options=options)
    print(format_export(info, args.out))


def _named_arms(texts: list[str]) -> dict[str, str]:
    """--arm NAME=LOCATION options as a mapping; a repeated name or a missing part is refused."""
    arms: dict[str, str] = {}
    for text in texts:
        name, sep, location = text.partition("=")
        if not (sep and name and location):
            raise ConfigError(f"--arm {text!r}: expected NAME=LOCATION")
        if name in arms:
            raise ConfigError(f"--arm {name}: given twice")
        arms[name] = location
    return arms


def cmd_eval(args: argparse.Namespace) -> None:
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.eval.report import headline
    from simgan_dist.io import urls

    # A report for an object store (e.g. next to its run) is written locally, then copied.
    staging = (
        tempfile.TemporaryDirectory(prefix="simgan-eval-") if urls.is_remote(args.out) else None
    )
    out = staging.name if staging else args.out
    report = evaluate_digits(
        args.synthetic,
        args.refined,
        args.real_eval,
        out,
        real_train_labeled=args.real_train_labeled,
        seed=args.seed,
        epochs=args.epochs,
        num_seeds=args.num_seeds,
        progress=lambda line: progress_line(f"[eval] {line}"),
        randomized=args.randomized,
        ceiling=args.ceiling,
        arms=_named_arms(args.arm),
    )
    if staging:
        with staging:
            names = sorted(p.name for p in Path(out).iterdir())
            location_arg(args, args.out).upload_dir(Path(out), names)
    print(headline(report))
    print(f"report: {urls.join(args.out, 'report.md')}")


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
        progress=lambda line: progress_line(f"[screen] {line}"),
        num_variants=args.variants,
        randomized=args.randomized,
        ceiling=args.ceiling,
        with_oracle=args.with_oracle,
    )
    print(headline(report))
    print(f"report: {Path(args.out) / 'report.md'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from simgan_dist.demo import run_demo

    run_demo(
        Path(args.out),
        shards_root=Path(args.shards),
        seed=args.seed,
        overrides=args.overrides,
        target=args.target,
        preset=args.preset,
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
        consumption=args.consumption,
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
        compile_bare=args.compile,
    )
    _print_figures(format_table(result), result, args.out)


def cmd_bench_refine(args: argparse.Namespace) -> None:
    from simgan_dist.bench.refine import bench_refine, format_refine_table

    if (args.node_cpus is not None and args.node_cpus < 1) or (
        args.node_gpus is not None and args.node_gpus < 0
    ):
        raise ConfigError("bench refine: --node-cpus must be >= 1 and --node-gpus >= 0")
    result = bench_refine(args.preset, args.num_images, args.samples_per_shard,
                          refine_settings_from_args(args), args.shards, args.work_dir,
                          args.node_cpus, args.node_gpus)  # fmt: skip
    _print_figures(format_refine_table(result), result, args.out)


def cmd_bench_control(args: argparse.Namespace) -> None:
    from simgan_dist.bench.control import bench_control, format_control_table

    sizes = [int(n) for n in args.num_shards.split(",") if n.strip()]
    if not sizes or min(sizes) < 1 or args.num_workers < 1:
        raise ConfigError("bench control: --num-shards and --num-workers must be positive")
    result = bench_control(sizes, args.num_workers, args.samples_per_shard, args.preset,
                           args.s3_endpoint, not args.no_s3, args.no_index_max,
                           args.actor_calls)  # fmt: skip
    _print_figures(format_control_table(result), result, args.out)


def cmd_bench_resume(args: argparse.Namespace) -> None:
    from simgan_dist.bench.resume import bench_resume, format_resume_table

    points = [int(n) for n in args.nimg.split(",") if n.strip()]
    if len(points) < 2 or min(points) < 0:
        raise ConfigError("bench resume: --nimg needs at least two image counts >= 0")
    result = bench_resume(points, args.num_shards, args.samples_per_shard, args.preset,
                          args.num_loader_workers)  # fmt: skip
    _print_figures(format_resume_table(result), result, args.out)
