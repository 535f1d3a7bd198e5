"""`plan_sweep` (validate, no Ray) and `run_sweep` (parent run + Tuner + winner) for every job."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from pipelines import tracking
from ray_jobs import common, space as spaces
from ray_jobs.sweep import (STATE_FILE, ParentRun, SweepOptions, SweepSpec, SweepState,
                            base_experiment, build_space, end_parent, experiment_of,
                            failure_pairs, job_tracking_uri, log_json_artifact,
                            log_table_artifact, new_state, resolve_name, storage_root)
from vaplan.config import ExperimentConfig, flatten, to_dict

DataFn = Callable[[ExperimentConfig, str, str, str], Mapping[str, Any]]
DONE = ("TERMINATED", "ERROR")


@dataclass
class SweepPlan:
    """A validated sweep, before Ray starts: where it lives, its base config and space."""

    spec: SweepSpec
    name: str
    folder: Path
    base: ExperimentConfig
    space: spaces.Space
    num_samples: int
    state: SweepState | None = None  # set when resuming

    @property
    def trials_planned(self) -> int:
        return spaces.grid_size(self.space) * self.num_samples


@dataclass
class SweepOutcome:
    """A finished (or interrupted) sweep."""

    name: str
    folder: Path
    parent_run_id: str
    best_config: dict = field(default_factory=dict)  # searched values of the best trial
    best_metrics: dict = field(default_factory=dict)
    best_run_id: str | None = None
    top: list = field(default_factory=list)  # searched values of the best trials, best first
    num_trials: int = 0
    num_errored: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        best = self.best_metrics.get("objective", float("nan"))
        state = "INTERRUPTED" if self.interrupted else "done"
        return (f"{self.name}: {state}, {self.num_trials} trials ({self.num_errored} failed) "
                f"in {self.seconds:.1f}s; best {best:.3f} with {self.best_config}")


def plan_sweep(spec: SweepSpec, opts: SweepOptions, root: Path | None = None,
               name: str | None = None, base: ExperimentConfig | None = None,
               space_items: list[str] | None = None, must_exist: bool = True) -> SweepPlan:
    """Validate everything a sweep needs (raises SpaceError naming the option); no Ray.

    With --resume the stored plan is used; a missing one is an error when `must_exist`
    (a stand-alone job), else (a pipeline stage not reached yet) a fresh plan is made."""
    root = root or storage_root(opts)
    name = name or resolve_name(spec.job, opts, root)
    folder = root / name
    if opts.resume and (folder / STATE_FILE).is_file():
        state = SweepState.load(folder)
        return SweepPlan(spec, name, folder, experiment_of(state),
                         spaces.space_from_dict(state.space), state.num_samples, state)
    if opts.resume and must_exist:
        raise FileNotFoundError(f"--resume: no sweep {name!r} under {root} ({STATE_FILE} missing)")
    base = base or base_experiment(opts, spec)
    space, num_samples = build_space(spec, opts, base, space_items)
    return SweepPlan(spec, name, folder, base, space, num_samples)


def run_sweep(plan: SweepPlan, opts: SweepOptions, data_fn: DataFn,
              tags: Mapping[str, str] | None = None, echo: Callable[[str], None] = print
              ) -> SweepOutcome:
    """Run (or resume) the planned sweep; trials get `data_fn(base, uri, exp_id, parent)`."""
    started, spec = time.perf_counter(), plan.spec
    if plan.state is not None and plan.state.finished:
        echo(f"{plan.name}: already finished; nothing to resume")
        return _outcome_from_state(plan)
    uri = plan.state.tracking_uri if plan.state else job_tracking_uri(opts)
    experiment_id = tracking.prepare_store(uri, opts.experiment)
    state = plan.state or new_state(spec, plan.name, uri, experiment_id, plan.base, plan.space,
                                    plan.num_samples)
    run_tags = {common.SWEEP_TAG: spec.job, "vaplan.sweep_name": plan.name,
                "vaplan.preset": opts.preset, "vaplan.pipeline": "sweep", **(tags or {})}
    with ParentRun(state.experiment_id, plan.name, run_tags, state.parent_run_id or None) as parent:
        if not state.parent_run_id:
            state.parent_run_id = parent
            state.save(plan.folder)
            _log_parent_inputs(plan, opts)
        else:
            _close_children(state, "KILLED", "vaplan.interrupted")
        echo(f"{plan.name}: parent run {parent} in {uri} ({plan.trials_planned} trials planned)")
        payload = data_fn(plan.base, uri, state.experiment_id, parent)
        ctx = common.SweepContext(spec.job, uri, state.experiment_id, parent, to_dict(plan.base),
                                  failure_pairs(opts))
        grid, interrupted = _fit(plan, opts, ctx, payload, state)
        outcome = _summarize(plan, grid, parent)
        outcome.seconds = time.perf_counter() - started
        if interrupted or _unfinished(grid):
            outcome.interrupted = True
            _kill_unfinished(state, grid)
            tracking.set_tags({"vaplan.interrupted": "true"})
            end_parent("KILLED")
            echo(f"{plan.name}: interrupted; resume with --resume --name {plan.name}")
            return outcome
        _log_parent_outcome(plan, grid, outcome)
        state.finished, state.best = True, {"config": outcome.best_config,
                                            "metrics": outcome.best_metrics,
                                            "run_id": outcome.best_run_id,
                                            "top": outcome.top,
                                            "num_trials": outcome.num_trials,
                                            "num_errored": outcome.num_errored}
        state.save(plan.folder)
        if outcome.best_run_id is None:
            raise RuntimeError(f"{plan.name}: every trial failed; see the child runs of {parent}")
    echo(outcome.summary())
    return outcome


def _trainable(plan: SweepPlan, opts: SweepOptions, ctx: common.SweepContext,
               payload: Mapping[str, Any]):
    trainable = tune.with_parameters(plan.spec.trainable, ctx=ctx, **payload)
    resources = {"cpu": opts.cpus_per_trial}
    if plan.spec.uses_gpu and opts.gpus_per_trial > 0:
        resources["gpu"] = opts.gpus_per_trial
    return tune.with_resources(trainable, resources)


def _fit(plan: SweepPlan, opts: SweepOptions, ctx: common.SweepContext,
         payload: Mapping[str, Any], state: SweepState):
    trainable = _trainable(plan, opts, ctx, payload)
    common.INTERRUPT_AFTER["trials"] = opts.interrupt_after
    with common.Interruption() as stop:
        if plan.state is not None and tune.Tuner.can_restore(str(plan.folder)):
            tuner = tune.Tuner.restore(str(plan.folder), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = _new_tuner(plan, opts, trainable, state)
        grid = tuner.fit()
    return grid, stop.interrupted


def _new_tuner(plan: SweepPlan, opts: SweepOptions, trainable, state: SweepState):
    spec = plan.spec
    scheduler = spec.scheduler(opts, plan.base) if spec.scheduler else None
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode="max", scheduler=scheduler, num_samples=plan.num_samples,
        reuse_actors=True,  # TuneConfig.max_concurrent_trials is ignored with this generator:
        search_alg=BasicVariantGenerator(random_state=opts.seed,
                                         max_concurrent=opts.max_concurrent))
    callbacks = [common.ChildRunCallback(state.tracking_uri, state.experiment_id,
                                         state.parent_run_id), common.InterruptAfter()]
    run_config = tune.RunConfig(
        name=plan.name, storage_path=str(plan.folder.parent), callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        verbose=0 if opts.quiet else 1)
    return tune.Tuner(trainable, param_space=spaces.to_param_space(plan.space),
                      tune_config=tune_config, run_config=run_config)


def _statuses(grid) -> list[str]:
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    return [str(trial.status) for trial in trials]


def _unfinished(grid) -> bool:
    return any(status not in DONE for status in _statuses(grid))


def _summarize(plan: SweepPlan, grid, parent: str) -> SweepOutcome:
    outcome = SweepOutcome(plan.name, plan.folder, parent, num_trials=len(grid),
                           num_errored=grid.num_errors)
    objective = plan.spec.objective or plan.spec.metric
    scored = [r for r in grid if r.error is None and r.metrics
              and math.isfinite(float(r.metrics.get(objective, float("nan"))))]
    if not scored:  # every trial failed before reporting
        return outcome
    scored.sort(key=lambda r: float(r.metrics[objective]), reverse=True)
    best = scored[0]
    outcome.top = [common.flat_config(r.config) for r in scored[:10]]
    outcome.best_config = common.flat_config(best.config)
    outcome.best_metrics = {k: float(v) for k, v in best.metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)
                            and "/" in k}
    outcome.best_metrics["objective"] = float(best.metrics[objective])
    outcome.best_run_id = best.metrics.get(common.RUN_ID_KEY)
    return outcome


def _outcome_from_state(plan: SweepPlan) -> SweepOutcome:
    best = plan.state.best
    return SweepOutcome(plan.name, plan.folder, plan.state.parent_run_id, best.get("config", {}),
                        best.get("metrics", {}), best.get("run_id"), best.get("top", []),
                        best.get("num_trials", 0), best.get("num_errored", 0))


def _log_parent_inputs(plan: SweepPlan, opts: SweepOptions) -> None:
    """Base config, the space and the sweep's settings on the parent run."""
    tracking.log_flat_params(plan.base)
    tracking.log_flat_params({f"space.{k}": f"{d.kind} {list(d.values)}"
                              for k, d in plan.space.items()})
    tracking.log_flat_params({"sweep.job": plan.spec.job, "sweep.metric": plan.spec.metric,
                              "sweep.num_samples": plan.num_samples,
                              "sweep.trials_planned": plan.trials_planned,
                              "sweep.max_concurrent": opts.max_concurrent,
                              "sweep.cpus_per_trial": opts.cpus_per_trial,
                              "sweep.gpus_per_trial": opts.gpus_per_trial,
                              "sweep.storage": str(plan.folder), "sweep.preset": opts.preset})
    log_json_artifact({"space": spaces.space_to_dict(plan.space), "num_samples": plan.num_samples,
                       "base": to_dict(plan.base)}, "search_space.json")


def _log_parent_outcome(plan: SweepPlan, grid, outcome: SweepOutcome) -> None:
    statuses = _statuses(grid)
    tracking.log_scores({"sweep/num_trials": outcome.num_trials,
                         "sweep/num_errored": outcome.num_errored,
                         "sweep/num_finished": sum(s == "TERMINATED" for s in statuses),
                         "sweep/seconds": outcome.seconds})
    if outcome.best_run_id is None:
        return
    tracking.log_scores({f"winner/{k}": v for k, v in outcome.best_metrics.items()})
    tracking.log_flat_params({f"best.{k}": v for k, v in outcome.best_config.items()})
    best_flat = flatten(_apply(plan.base, outcome.best_config))
    log_json_artifact({"best_config": outcome.best_config, "best_metrics": outcome.best_metrics,
                       "best_run_id": outcome.best_run_id, "experiment": best_flat},
                      "best_trial.json")
    tracking.set_tags({"vaplan.best_run_id": outcome.best_run_id,
                       "vaplan.best_objective": f"{outcome.best_metrics['objective']:.4f}"})
    frame = grid.get_dataframe()
    keep = [c for c in frame.columns if c.startswith("config/") or "/" in c
            or c in ("trial_id", common.RUN_ID_KEY, "training_iteration")]
    log_table_artifact(frame[keep], "trials.csv")


def _apply(base: ExperimentConfig, config: Mapping[str, Any]) -> ExperimentConfig:
    return common.apply_config(base, config)


def _kill_unfinished(state: SweepState, grid) -> None:
    """Child runs of trials the interruption cut short -> KILLED (also those that ended
    FINISHED through Tune's stop), so only really finished trials read FINISHED."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    cut = {trial.trial_id for trial in trials if str(trial.status) not in DONE}
    client = tracking.client()
    runs = tracking.child_runs(state.parent_run_id, state.experiment_id)
    for run in runs:
        if run.data.tags.get(common.TRIAL_TAG) in cut or run.info.status == "RUNNING":
            tracking.set_tags({"vaplan.interrupted": "true"}, run_id=run.info.run_id)
            tracking.retry_locked(client.set_terminated, run.info.run_id, "KILLED")


def _close_children(state: SweepState, status: str, tag: str) -> None:
    """Child runs left RUNNING (interrupted trials) -> `status`, tagged."""
    client = tracking.client()
    for run in common.running_children(state.experiment_id, state.parent_run_id):
        tracking.set_tags({tag: "true"}, run_id=run.info.run_id)
        tracking.retry_locked(client.set_terminated, run.info.run_id, status)


def best_experiment(plan: SweepPlan, outcome: SweepOutcome) -> ExperimentConfig:
    """The base experiment with the winner's searched values applied."""
    return _apply(plan.base, outcome.best_config)
