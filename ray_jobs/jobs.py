"""Entry-point plumbing shared by the `ray_jobs.<name>` commands: parse, validate, start Ray,
share the dataset, run, always shut Ray down. Exit codes: 0 done, 2 invalid input (refused
before any trial starts), 3 interrupted (resume with --resume)."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Callable, Iterator

from ray_jobs import common
from ray_jobs.runner import SweepPlan, plan_sweep, run_sweep
from ray_jobs.sweep import SweepOptions, SweepSpec, add_sweep_args, job_tracking_uri, \
    options_from_args
from vaplan.cli import report_user_error
from vaplan.errors import UserError

EXIT_INVALID, EXIT_INTERRUPTED = 2, 3
MakeData = Callable[[SweepPlan, common.Shared], Any]


def add_args(parser: argparse.ArgumentParser, job: str) -> None:
    add_sweep_args(parser, job)


def load_dataset(data_cfg):
    """The Dataset of a DataConfig (the pipeline's loader: LLP-sim or real LLP)."""
    from vaplan.data.dataset import load_dataset as load

    return load(data_cfg, progress=False)


def start_ray(opts: SweepOptions, uri: str) -> str:
    """Join/start Ray; the tracking URI and experiment reach workers via the runtime env."""
    how = common.init_ray(opts.address, opts.num_cpus, quiet=opts.quiet,
                          env_vars={"MLFLOW_TRACKING_URI": uri,
                                    "VAPLAN_MLFLOW_EXPERIMENT": opts.experiment,
                                    "RAY_USAGE_STATS_ENABLED": "0"})
    print(f"ray: {how} cluster, resources {_resources()}", flush=True)
    return how


@contextlib.contextmanager
def ray_session(opts: SweepOptions, uri: str) -> Iterator[str]:
    """Ray for one job; shut down afterwards unless it was already running in this process."""
    how = "failed"
    try:
        how = start_ray(opts, uri)
        yield how
    finally:
        if how not in ("existing", "failed"):
            common.shutdown_ray()


def _resources() -> dict:
    import ray

    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def share_dataset(dataset) -> common.Shared:
    return common.share(dataset, f"dataset:{dataset.digest}")


def refuse(err: Exception) -> int:
    """One line `error: ...` on stderr; exit status 2 (invalid input, nothing started)."""
    return report_user_error(err)


def prepare_job(spec: SweepSpec, args: argparse.Namespace):
    """(options, plan, dataset, tracking URI) of a sweep job; invalid input raises before Ray."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    opts = options_from_args(args)
    plan = plan_sweep(spec, opts)
    dataset = load_dataset(plan.base.data)
    uri = plan.state.tracking_uri if plan.state else job_tracking_uri(opts)
    return opts, plan, dataset, uri


def run_single(spec: SweepSpec, args: argparse.Namespace, make_data: MakeData) -> int:
    """One sweep job from parsed arguments."""
    try:
        opts, plan, dataset, uri = prepare_job(spec, args)
    except (UserError, FileNotFoundError) as err:
        return refuse(err)
    with ray_session(opts, uri):
        outcome = run_sweep(plan, opts, make_data(plan, share_dataset(dataset)))
    from pipelines import tracking

    print(f"browse: {tracking.ui_command(uri)}")
    return EXIT_INTERRUPTED if outcome.interrupted else 0


def retrain_plan(retrain_spec: SweepSpec, plan: SweepPlan, outcome, opts: SweepOptions,
                 top: int) -> SweepPlan:
    """A second sweep retraining HAN on the N best PLD settings (a grid over them)."""
    from ray_jobs import runner, space as spaces
    from ray_jobs.sweep import STATE_FILE, SweepState

    name = f"{plan.name}-retrain"
    folder = plan.folder.parent / name
    if opts.resume and (folder / STATE_FILE).is_file():
        state = SweepState.load(folder)
        return SweepPlan(retrain_spec, name, folder, runner.experiment_of(state),
                         spaces.space_from_dict(state.space), state.num_samples, state)
    settings = [{key.split(".", 1)[1]: value for key, value in config.items()
                 if key.startswith("pld.")} for config in outcome.top[:top]]
    space = {"pld": spaces.Dimension("pld", "grid", tuple(settings))}
    return SweepPlan(retrain_spec, name, folder, runner.best_experiment(plan, outcome), space, 1)


def memo_data(make):
    """A data_fn that runs once per process (stage one feeds the sweep and the retraining)."""
    cache = {}

    def data_fn(base, uri, experiment_id, parent):
        if "payload" not in cache:
            cache["payload"] = make(base, uri, experiment_id, parent)
        return cache["payload"]
    return data_fn


def run_pld(spec: SweepSpec, retrain_spec: SweepSpec, args: argparse.Namespace,
            stage_one_data) -> int:
    """tune_pld: the PLD sweep on stage-one predictions, then optionally retrain the best N."""
    try:
        opts, plan, dataset, uri = prepare_job(spec, args)
    except (UserError, FileNotFoundError) as err:
        return refuse(err)
    with ray_session(opts, uri):
        shared = share_dataset(dataset)
        stage = memo_data(stage_one_data(opts, shared, args.checkpoint, args.retrain_top > 0))
        outcome = run_sweep(plan, opts, stage)
        if outcome.interrupted or not args.retrain_top:
            return EXIT_INTERRUPTED if outcome.interrupted else 0
        second = retrain_plan(retrain_spec, plan, outcome, opts, args.retrain_top)
        retrained = run_sweep(second, opts, lambda *a: {"dataset": shared, **stage(*a)},
                              tags={"vaplan.sweep_of": outcome.parent_run_id})
        return EXIT_INTERRUPTED if retrained.interrupted else 0
