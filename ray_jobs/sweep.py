"""The sweep driver every job shares: the parent run in `--experiment`, the Tuner (or
`Tuner.restore`), the winner by `ResultGrid.get_best_result`; the options and the plan are
`vaplan.sweep_options`, the state, trials table and description `vaplan.sweeps` (docs/ray.md)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pipelines import tracking
from ray_jobs import common
from vaplan.store_uri import is_server, ui_command, ui_links, ui_url
from vaplan.sweep_options import EXIT_INTERRUPTED, SweepSpec, job_metadata, plan
from vaplan.sweeps import (RANGES, SweepState, dotted, metrics_of, searched, sweep_description,
                           sweep_folder, trials_table)
from vaplan.trial_groups import MemberGrid


@contextlib.contextmanager
def ray_session(opts) -> Iterator[str]:
    """Ray for one job (`common.init_ray`); shut down afterwards unless it was running."""
    import ray

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    how = common.init_ray(opts.address, opts.num_cpus, verbose=opts.verbose)
    resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    print(f"ray: {how} cluster, resources {resources}", flush=True)
    try:
        yield how
    finally:
        if how != "existing":
            ray.shutdown()


def run_sweep(spec: SweepSpec, opts, state: SweepState, folder: Path,
              data_fn: Callable[[SweepState], Mapping[str, Any]],
              tags: Mapping[str, str] | None = None) -> SweepState:
    """Run (or resume) a planned sweep; trials get `data_fn(state)` via tune.with_parameters.
    Returns the state: `finished` (False: interrupted) and `best` (values, metrics, run)."""
    import mlflow

    if state.finished:
        print(f"{state.name}: already finished; nothing to resume", flush=True)
        return state
    started, job = time.perf_counter(), job_metadata()
    state.experiment_id = tracking.prepare_store(state.tracking_uri, opts.experiment)
    run_tags = {common.SWEEP_TAG: spec.job, "vaplan.sweep_name": state.name,
                "vaplan.preset": opts.preset, **(tags or {}),
                **{f"ray.{k}": v for k, v in job.items() if k in ("job_submission_id",
                                                                  "job_name")}}
    with tracking.start_run(state.experiment_id, tags=run_tags,
                            run_id=state.parent_run_id or None) as run:
        if not state.parent_run_id:
            state.parent_run_id = run.info.run_id
            tracking.client().update_run(state.parent_run_id, name=f"{spec.job} {opts.preset} "
                                         f"{job.get('job_submission_id') or run.info.run_id[:8]}")
            tracking.log_flat_params({"sweep.objective": spec.objective,
                                      "sweep.num_samples": state.num_samples})
            mlflow.log_dict(state.space, "search_space.json")
            folder.mkdir(parents=True, exist_ok=True)
            state.save(folder)
        print(f"{state.name}: parent run "
              f"{ui_url(state.tracking_uri, state.experiment_id, run.info.run_id)}")
        grid = _fit(spec, opts, state, folder, data_fn(state))
        state.best = _best(spec, state, grid)
        if common.STOP["stopping"]:
            tracking.set_tags({"vaplan.interrupted": "true"})
            mlflow.end_run("KILLED")
            print(f"{state.name}: interrupted; resume with --resume --name {state.name}")
            return state
        _log_parent(spec, opts, state, grid, time.perf_counter() - started)
        state.finished = True
        state.save(folder)
        if not state.best.get("run_id"):
            raise RuntimeError(f"{state.name}: every trial failed; see the runs of "
                               f"{state.parent_run_id}")
    print(ui_links(state.tracking_uri, state.experiment_id, state.parent_run_id), flush=True)
    return state


def param_space(space: Mapping) -> dict:
    """Tune's param_space of a checked space (`vaplan.sweeps`): each {kind: values} becomes
    `tune.<kind>(...)`; constants stay as they are."""
    from ray import tune

    params = dict(space)
    for key in searched(space):
        (kind, values), = space[key].items()
        params[key] = getattr(tune, kind)(*values) if kind in RANGES else \
            getattr(tune, kind)(list(values))
    return params


def _fit(spec: SweepSpec, opts, state: SweepState, folder: Path, data: Mapping[str, Any]):
    """Tuner.fit, or Tuner.restore + fit on --resume: the ResultGrid."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    done = {trial_id: dict(run.data.metrics) for trial_id, run in
            common.finished_trials(state.experiment_id, state.parent_run_id).items()}
    points = spec.points(state.space, state.experiment) if spec.points else []
    params, samples = param_space(state.space), state.num_samples + len(points)
    if getattr(opts, "group_size", 1) > 1:  # tune_train --group-size: docs/ray.md
        params, samples, points = common.group_space(params, samples, opts.group_size,
                                                     opts.seed), 1, []
    resources, base = common.trial_resources(opts, spec.trains, params, samples,
                                             state.experiment)  # --gpus-per-trial auto
    trainable = tune.with_resources(
        tune.with_parameters(common.run_trial, body=spec.body, base=base,
                             done=done, inject=tuple(tuple(item.split("=", 1))
                                                     for item in opts.inject_failure), **data),
        resources)
    common.STOP.update(after=opts.interrupt_after, stopping=False)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours below, for both signals

    def stop(signum, frame) -> None:  # SIGTERM (`ray job stop`), Ctrl+C: Tune's graceful
        common.STOP["stopping"] = True  # stop (its SIGUSR1 handler), which saves the state
        os.kill(os.getpid(), signal.SIGUSR1)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if opts.resume and tune.Tuner.can_restore(str(folder)):
            tuner = tune.Tuner.restore(str(folder), trainable, resume_errored=True)
        else:
            callback = common.TrialRuns(state.tracking_uri, state.experiment_id,
                                        state.parent_run_id, base,
                                        searched(state.space), spec.objective, spec.job)
            tuner = tune.Tuner(
                trainable, param_space=params,
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode="max",  # each point takes one sample:
                    num_samples=samples,
                    scheduler=spec.scheduler(opts, state.experiment) if spec.scheduler else None,
                    reuse_actors=True,  # max_concurrent_trials is ignored with this generator:
                    search_alg=BasicVariantGenerator(points_to_evaluate=points,
                                                     random_state=opts.seed,
                                                     max_concurrent=opts.max_concurrent)),
                run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent),
                                          callbacks=[callback], verbose=int(opts.verbose),
                                          failure_config=tune.FailureConfig(max_failures=0)))
        return MemberGrid.of(tuner.fit())  # a group trial: one result per member
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _best(spec: SweepSpec, state: SweepState, grid) -> dict:
    """The winner by `get_best_result` (NaN/inf skipped): its values, metrics and run, and
    the values of the ten best trials."""
    scored = sorted((r for r in grid if r.error is None
                     and math.isfinite(float(r.metrics.get(spec.objective, math.nan)))),
                    key=lambda r: float(r.metrics[spec.objective]), reverse=True)
    if not scored:
        return {}
    best = grid.get_best_result(spec.objective, "max")
    best = best if best.error is None else scored[0]  # not a trial that failed later
    run = common.finished_trials(state.experiment_id, state.parent_run_id).get(
        best.metrics.get("trial_id"))
    return {"best": dotted(best.config), "metrics": metrics_of(best.metrics),
            "run_id": run and run.info.run_id, "top": [dotted(r.config) for r in scored[:10]]}


def _log_parent(spec: SweepSpec, opts, state: SweepState, grid, seconds: float) -> None:
    """The winner's config (params) and metrics, counts, the trials table (also printed),
    the description; the best trial's run gets `vaplan.best_trial=true`."""
    import mlflow

    metric, run_id, uri = spec.objective, state.best.get("run_id"), state.tracking_uri
    tracking.log_scores({"sweep/num_trials": len(grid), "sweep/num_errored": grid.num_errors,
                         "sweep/num_finished": grid.num_terminated, "sweep/seconds": seconds})
    table = trials_table([(r.config, r.error is not None, r.metrics) for r in grid
                          if r.config is not None], searched(state.space), metric)
    if run_id is None:
        return
    tracking.log_flat_params(state.winner)
    tracking.log_scores(state.best["metrics"])
    tracking.set_tags({"vaplan.best_run_id": run_id})
    tracking.set_tags({"vaplan.best_trial": "true"}, run_id=run_id)
    mlflow.log_table(table, "trials.json")
    tracking.set_description(sweep_description(
        spec.job, opts.preset, state.space, state.best, len(grid), grid.num_errors, seconds,
        metric, ui_url(uri, state.experiment_id, run_id),
        "" if is_server(uri) else f"The links work with `{ui_command(uri)}` running."))
    shown = [c for c in table.columns if "/" not in c or c == metric]
    more = f"\n... {len(table) - 10} more in trials.json" if len(table) > 10 else ""
    print(f"best trials:\n{table[shown].head(10).to_string(index=False)}{more}", flush=True)


def run_job(spec: SweepSpec, opts, data_fn: Callable[[SweepState, Any], Mapping]) -> int:
    """A single sweep job: plan (checked before Ray), load data, run; the exit status."""
    folder = sweep_folder(spec.job, opts)
    state = plan(spec, opts, folder)
    dataset = state.dataset()
    with ray_session(opts):
        state = run_sweep(spec, opts, state, folder, lambda s: data_fn(s, dataset))
    return 0 if state.finished else EXIT_INTERRUPTED


