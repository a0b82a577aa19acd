"""`simgan tune`: a Ray Tune search whose trials are whole Ray Train + DeepSpeed training runs."""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simgan_dist.config import (
    Config,
    ConfigError,
    config_to_yaml,
    from_dict,
    load_config,
    parse_yaml,
)
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.train.runs import (
    absolutize,
    has_checkpoints,
    resume_run,
    run_location,
    start_run,
    storage_root,
)
from simgan_dist.tune.space import (
    Search,
    apply_params,
    fixed_params,
    param_space,
    parse_search,
)
from simgan_dist.tune.trackers import tracker_callbacks

SEARCH_FILE = "search.yaml"  # the search as validated, kept with the experiment for --resume
BASE_FILE = "base-config.yaml"  # the base config with the search's fixed values applied
TRIALS_DIR = "trials"  # each trial's training run: trials/<trial_id>/ (config, metrics, grids)
METRIC = "objective"  # what scores.Scorer reports; higher is better
TIME_ATTR = "cur_nimg"  # ASHA counts time in images, as training does
TRIAL_MEMORY = 256 * 2**20  # logical bytes claimed by each trial function (it only waits)


def tune_trial(params: dict[str, Any], base: dict[str, Any], train_root: str) -> None:
    """One Tune trial: the base config with this trial's values, trained by Ray Train workers.

    The run is named after the trial, so a restored search that restarts an unfinished trial
    continues its training run from the latest checkpoint (Train V2 resumes a run by name).
    TuneReportCallback forwards rank 0's metrics of every ray.train.report to Tune."""
    import ray
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = apply_params(from_dict(base, source=BASE_FILE), params)
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = cfg.replace(run={"storage_path": train_root, "name": trial_id})
    if has_checkpoints(run_location(cfg)):
        cfg, run_dir = resume_run(run_location(cfg))
        sys.stdout.write(f"[simgan] trial {trial_id}: continuing {run_dir}\n")
    else:
        cfg, run_dir = start_run(cfg)
    # When Tune stops a trial it ends this actor, and with it the Train controller; Ray Train's
    # detached placement-group cleaner then frees the workers' CPUs. It finds its cluster through
    # the state API, which cannot tell several Ray instances on one host apart (a dev box running
    # tests) unless RAY_ADDRESS says which: so the fit runs in a task whose runtime env names the
    # cluster, and the controller and the cleaner inherit it.
    env = {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    fit = ray.remote(num_cpus=0, max_retries=0, runtime_env={"env_vars": env})(_fit_trial)
    ray.get(fit.remote(cfg.to_dict(), str(run_dir), TuneReportCallback()))


def _fit_trial(cfg_dict: dict[str, Any], run_dir: str, callback: Any) -> None:
    from simgan_dist.train.ray_train import run_training

    cfg = from_dict(cfg_dict, source="<trial>")
    run_training(cfg, Path(run_dir), callbacks=[callback])  # raises TrainingError on failure


def schedule_nimg(cfg: Config) -> int:
    """Images of the whole schedule: a trial that reports this many has finished."""
    s = cfg.schedule
    return s.refiner_pretrain_nimg + s.disc_pretrain_nimg + s.adversarial_nimg


def trial_resources(cfg: Config) -> dict[str, float]:
    """What one trial's Ray Train workers take (the Tune trial function itself takes no CPU)."""
    resources = {"CPU": float(cfg.run.num_workers * cfg.run.threads_per_worker)}
    if cfg.run.use_gpu:
        resources["GPU"] = float(cfg.run.num_workers)
    return resources


def max_concurrent(cfg: Config, search: Search) -> int:
    """tune.max_concurrent_trials, or (0) as many trials as the cluster's CPUs and GPUs hold.
    Without a cap Tune would start every trial (each asks for no CPU) and their workers
    would then wait on each other's resources."""
    if search.settings.max_concurrent_trials:
        return search.settings.max_concurrent_trials
    import ray

    cluster = ray.cluster_resources()
    fits = [int(cluster.get(k, 0) // need) for k, need in trial_resources(cfg).items()]
    return max(1, min(fits))


def make_scheduler(cfg: Config, search: Search) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if search.settings.scheduler == "none":
        return FIFOScheduler()
    pretrain = cfg.schedule.refiner_pretrain_nimg + cfg.schedule.disc_pretrain_nimg
    grace = search.settings.grace_period_nimg or pretrain + cfg.score.every_nimg
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=schedule_nimg(cfg),
        grace_period=min(grace, schedule_nimg(cfg)),
        reduction_factor=search.settings.reduction_factor,
    )


@dataclass(frozen=True)
class Experiment:
    """A search on disk: Tune's experiment directory plus the files that rebuild its trainable."""

    location: str  # storage_path/name: a local directory or an object-store URI
    base: Config  # absolute paths, the search's fixed values applied
    search: Search

    @property
    def name(self) -> str:
        return urls.split(self.location)[1]

    @property
    def store(self) -> Location:
        """The experiment's location with run.storage_options."""
        return Location(self.location, self.base.run.storage_options)

    def results_dir(self) -> Path:
        """Tables, plot and best config: the experiment directory, or for an object store a
        staging directory whose files run_and_report copies into the experiment."""
        if urls.is_remote(self.location):
            return Path(tempfile.gettempdir()) / "simgan-tune" / self.name
        return Path(self.location)


def _experiment_location(cfg: Config, search: Search) -> Location:
    settings = search.settings
    name = settings.name or f"tune-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    root = settings.storage_path or cfg.run.storage_path
    return storage_root(cfg).at(root).absolute().join(name)


def existing_search(cfg: Config, search: Search) -> str | None:
    """The location of the experiment tune.name names when it was started before (for
    `simgan tune --resume-if-exists`), else None."""
    if not search.settings.name:
        raise ConfigError(
            f"{search.source}: tune.name: must be set with --resume-if-exists (a resubmitted "
            "job finds its search by name)"
        )
    location = _experiment_location(absolutize(apply_params(cfg, fixed_params(search))), search)
    return location.url if location.join(SEARCH_FILE).exists() else None


def start_search(cfg: Config, search: Search) -> Experiment:
    """A new experiment: validates the base config for tuning and writes the files --resume
    reads back."""
    cfg = absolutize(apply_params(cfg, fixed_params(search)))
    if not cfg.score.every_nimg:
        raise ConfigError(
            f"{search.source}: score.every_nimg: must be > 0 for simgan tune (the scores are "
            "the objective); set it under space: or with --set"
        )
    location = _experiment_location(cfg, search)
    if location.join(SEARCH_FILE).exists():
        raise ConfigError(
            f"tune.name: {location} already holds a search; continue it with "
            f"`simgan tune --resume {location}` or choose another tune.name"
        )
    location.join(BASE_FILE).write_text(config_to_yaml(cfg))
    location.join(SEARCH_FILE).write_text(search.to_yaml())
    return Experiment(location.url, cfg, search)


def resume_search(where: Location | str | Path) -> Experiment:
    """The experiment at a location, with the base config and search it was started with.
    The location's options reach the store (and replace the saved run.storage_options when
    given)."""
    location = Location.of(where).absolute()
    for name in (SEARCH_FILE, BASE_FILE):
        if not location.join(name).exists():
            raise ConfigError(f"{location}: not a simgan tune experiment (no {name})")
    base_location, search_location = (location.join(n) for n in (BASE_FILE, SEARCH_FILE))
    base_text = base_location.read_text()
    base = load_config(parse_yaml(base_text, base_location.url), source=base_location.url)
    if location.options:
        base = base.replace(run={"storage_options": dict(location.options)})
    search_text = search_location.read_text()
    search_source = search_location.url
    search = parse_search(parse_yaml(search_text, search_source), base, search_source)
    return Experiment(location.url, base, search)


def _trainable(exp: Experiment) -> Any:
    from ray import tune

    fn = tune.with_parameters(
        tune_trial, base=exp.base.to_dict(), train_root=urls.join(exp.location, TRIALS_DIR)
    )
    # No CPU for the trial function: even 0.01 CPU would leave a 2-core node 1.99 CPUs, and the
    # trial's 2 one-CPU workers would wait forever. A small memory claim keeps its bundle valid.
    return tune.with_resources(fn, {"cpu": 0, "memory": TRIAL_MEMORY})


def make_searcher(cfg: Config, search: Search) -> Any:
    """The search algorithm, capped at max_concurrent trials (the searcher enforces the cap:
    Tune refuses a cap in TuneConfig beside a search_alg that has one)."""
    limit = max_concurrent(cfg, search)
    if search.settings.searcher == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=search.settings.seed), max_concurrent=limit)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=limit, random_state=search.settings.seed)


def run_search(exp: Experiment, resume: bool = False) -> Any:
    """Fit the Tuner (or restore it and continue: unfinished and errored trials rerun, each
    continuing its own training run). Returns Tune's ResultGrid."""
    from ray import tune

    from simgan_dist.train.ray_start import ensure_ray

    ensure_ray()
    # Reports taken before the first score (e.g. a pretraining checkpoint) carry no objective;
    # ASHA passes over them, but Tune's strict check would fail the trial.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # One filesystem for the experiment store: fsspec's, with run.storage_options, for pyarrow.
    filesystem, path = exp.store.pyarrow_filesystem()
    if resume:
        tuner = tune.Tuner.restore(
            path, trainable=_trainable(exp), resume_unfinished=True, resume_errored=True,
            storage_filesystem=filesystem,
        )  # fmt: skip
    else:
        storage_path, name = urls.split(path)
        settings = exp.search.settings
        tuner = tune.Tuner(
            _trainable(exp),
            param_space=param_space(exp.search),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                scheduler=make_scheduler(exp.base, exp.search),
                num_samples=settings.num_samples,
                search_alg=make_searcher(exp.base, exp.search),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                storage_filesystem=filesystem,
                verbose=1,
                callbacks=tracker_callbacks(settings.wandb, settings.mlflow, name),
            ),
        )
    return tuner.fit()


def run_and_report(exp: Experiment, resume: bool = False) -> dict[str, Any]:
    """Run (or continue) the search, then write its table, plot and best config."""
    from simgan_dist.tune.results import trial_rows, write_results

    results = run_search(exp, resume)
    # Ctrl-C (SIGINT) ends Tune's loop with its state saved: some trials unfinished, later ones
    # not even created (the generator makes them as slots free up).
    finished = results.num_terminated + results.num_errors
    interrupted = finished < len(results) or len(results) < exp.search.num_trials()
    rows = trial_rows(results, exp.search, schedule_nimg(exp.base), interrupted)
    results_dir = exp.results_dir()
    summary = write_results(rows, exp.search, exp.base, results_dir)
    if urls.is_remote(exp.location):  # the tables and plot live with the experiment
        names = sorted(p.name for p in results_dir.iterdir())
        exp.store.upload_dir(results_dir, names)
    summary["experiment"] = exp.location
    summary["interrupted"] = interrupted
    summary["num_trials"] = len(rows)
    summary["num_stopped_early"] = sum(r.status == "stopped early" for r in rows)
    summary["num_errors"] = sum(r.status == "error" for r in rows)
    if interrupted:
        sys.stdout.write(
            f"[simgan] interrupted: continue with simgan tune --resume {exp.location}\n"
        )
    return summary
