"""The one place that wires Ray: the cluster, every sweep's trainable (`run_trial`) and
`TrialRuns`, the driver's `tune.Callback` that writes each trial (or group member) as an
MLflow child run of the sweep's parent: workers never write to the store (docs/ray.md)."""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import ray
from ray import tune

from pipelines import tracking
from vaplan.config import ExperimentConfig, replace_path
from vaplan.sweep_options import JOB_ENV
from vaplan.sweeps import apply_config, dotted, metrics_of, trial_name
from vaplan.trial_groups import (auto_gpus_per_trial, check_group_space, member_id, pack,
                                 parse_gpus_per_trial)

TRIAL_TAG, SWEEP_TAG = "vaplan.trial_id", "vaplan.sweep"
STOP = {"after": 0, "stopping": False}  # --interrupt-after N; set by a SIGTERM/SIGINT


def init_ray(address: str | None = None, num_cpus: int | None = None,
             verbose: bool = False) -> str:
    """Join or start Ray; returns how. address "local": a private cluster; None/"auto": the
    job's cluster, RAY_ADDRESS or a local head, else a private one; else that address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not verbose:  # our own lines instead: one per finished trial and a final table
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter is silent at verbose=0
        for name in ("ray.tune", "ray._private.authentication"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return "existing"
    try:  # Ray caches RAY_AUTH_MODE when it first reads its config: make it see the env now
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # private API: without it the env must be set before importing ray
        pass
    kwargs = {"log_to_driver": verbose, "logging_level": "INFO" if verbose else "WARNING"}
    how = "job" if JOB_ENV in os.environ else \
        "address" if address not in (None, "auto", "local") else address or "auto"
    try:
        if how != "local":
            ray.init(address=None if how == "job" else address if how == "address"
                     else os.environ.get("RAY_ADDRESS") or "auto", **kwargs)
            return how
    except ConnectionError:
        if how != "auto":
            raise
    ray.init(address="local", num_cpus=num_cpus or min(os.cpu_count() or 1, 8),
             include_dashboard=False, object_store_memory=1 << 30, **kwargs)
    return "local"


def run_trial(config: dict, body: Callable, base: ExperimentConfig, done: Mapping[str, dict],
              inject: tuple = (), **data: Any) -> None:
    """Tune's trainable: `body(experiment, **data)`; a trial group ({"group": [values, ...]},
    --group-size) gets the list of its members' experiments. A trial whose MLflow run already
    FINISHED (Tune's saved state may lag behind a stop) reports that run's metrics and returns."""
    trial_id = tune.get_context().get_trial_id()
    if trial_id in done:
        return tune.report(done[trial_id])
    members = [dotted(v) for v in config["group"]] if "group" in config else [dotted(config)]
    for key, value in inject:
        if any(str(values.get(key)) == value for values in members):
            raise RuntimeError(f"injected failure for {key}={value} (--inject-failure)")
    experiments = [apply_config(base, values) for values in members]
    body(experiments if "group" in config else experiments[0], **data)  # a group: a list


def group_space(param_space: Mapping, num_samples: int, size: int, seed: int) -> dict:
    """--group-size: the search drawn up front (Tune's own variant generator: every grid point
    num_samples times, random domains seeded) and packed `size` per trial, as the param_space
    {"group": grid_search([[values, ...], ...])}; each trial trains one batched group."""
    from ray.tune.search.variant_generator import generate_variants

    check_group_space([k for k, v in param_space.items() if not _constant(v)], size)
    rng = np.random.default_rng(seed)
    members = [spec for _ in range(num_samples) for _, spec in
               generate_variants(dict(param_space), random_state=rng)]
    return {"group": tune.grid_search(pack(members, size))}


def _constant(value: Any) -> bool:
    return not isinstance(value, (Mapping, tune.search.sample.Domain))


def trial_resources(opts, trains: bool, params: Mapping, samples: int,
                    base: ExperimentConfig) -> tuple[dict, ExperimentConfig]:
    """A trial's {"cpu", "gpu"} and the base config its trials train with. --gpus-per-trial
    auto: the cluster's GPUs shared by the trials that run at once (0 without GPUs;
    `vaplan.trial_groups.auto_gpus_per_trial`); a trial with a GPU trains on train.device=cuda.
    `params`, `samples`: the Tuner's param_space and num_samples (grids multiply it)."""
    gpus = parse_gpus_per_trial(opts.gpus_per_trial) if trains else 0.0
    if gpus is None:
        trials = samples * math.prod(len(v["grid_search"]) for v in params.values()
                                     if isinstance(v, Mapping) and "grid_search" in v)
        cluster = ray.cluster_resources()
        gpus = auto_gpus_per_trial(cluster.get("GPU", 0), cluster.get("CPU", 1), trials,
                                   opts.cpus_per_trial, opts.max_concurrent)
        print(f"--gpus-per-trial auto: {gpus:g} GPU per trial ({cluster.get('GPU', 0):g} GPUs "
              f"in the cluster, {trials} trials)", flush=True)
    if gpus > 0 and base.train.device == "cpu":
        base = replace_path(base, "train.device", "cuda")
    return {"cpu": opts.cpus_per_trial, "gpu": gpus}, base


def finished_trials(experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """{Tune trial id: FINISHED MLflow run} of the sweep's parent run."""
    return tracking.finished_children(parent_run_id, experiment_id, TRIAL_TAG)


def trial_error(trial) -> str:
    """A failed trial's exception: the last line of its error.txt ("error" when unreadable)."""
    try:
        return Path(trial.error_file).read_text().strip().splitlines()[-1]
    except (OSError, TypeError, IndexError):
        return "error"


class TrialRuns(tune.Callback):
    """Driver side: every trial as an MLflow child run of the sweep's parent run, and one
    printed line per finished trial. Pickled with the Tuner: it holds only plain data."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, base: ExperimentConfig,
                 keys: list[str], metric: str, job: str) -> None:
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.base, self.keys, self.metric, self.job = base, keys, metric, job

    def setup(self, total_num_samples: int = 0, **info) -> None:
        tracking.use_tracking_uri(self.uri)
        self.done = set(finished_trials(self.experiment_id, self.parent_run_id))
        self.runs, self.ended, self.total = {}, 0, total_num_samples  # open: trial id -> run

    def _members(self, trial, result: Mapping | None = None) -> list[tuple[str, dict, dict]]:
        """(run key, option values, its report) per MLflow run of a trial: the trial itself,
        or each member of a trial group (--group-size; docs/ray.md "Trial groups")."""
        result = result if result is not None else (trial.last_result or {})
        if "group" not in trial.config:
            return [(trial.trial_id, dotted(trial.config), result)]
        reports = result.get("members") or {}
        return [(member_id(trial.trial_id, g), dotted(values), reports.get(str(g), {}))
                for g, values in enumerate(trial.config["group"])]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        for key, values, _ in self._members(trial, {}):
            if key in self.done or key in self.runs:
                continue
            run_id = tracking.create_child_run(self.parent_run_id, self.experiment_id,
                                               trial_name(values, self.keys, key),
                                               {TRIAL_TAG: key, SWEEP_TAG: self.job})
            tracking.log_flat_params(apply_config(self.base, values), run_id=run_id)
            self.runs[key] = run_id

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        step = result.get("training_iteration")
        for key, _, report in self._members(trial, result):
            if key in self.runs and "error" not in report and report.get("epoch", step) == step:
                tracking.log_scores(metrics_of(report), step=step, run_id=self.runs[key])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FINISHED")
        if STOP["after"] and self.ended == STOP["after"]:
            os.kill(os.getpid(), signal.SIGTERM)  # `ray job stop` on cue (resume tests)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials, **info) -> None:
        """Runs still open belong to trials the stop cut short: KILLED."""
        for run_id in self.runs.values():
            tracking.end_run(run_id, "KILLED", {"vaplan.interrupted": "true"})

    def _end(self, trial, status: str) -> None:
        self.ended += 1
        result = trial.last_result or {}
        for key, values, report in self._members(trial, result):
            self._close(trial, key, values, report, status, result)

    def _close(self, trial, key: str, values: dict, report: Mapping, status: str,
               result: Mapping) -> None:
        run_id = self.runs.pop(key, None)
        line = f"{self.metric} {report.get(self.metric, float('nan')):.4g}"
        tags = {}  # done: it returned, or a scheduler (ASHA) stopped it; else the stop cut it
        error = report.get("error") if key != trial.trial_id else None  # a group member's
        if STOP["stopping"] and not result.get("done"):
            status, line, tags = "KILLED", "KILLED by the stop", {"vaplan.interrupted": "true"}
        elif error:
            status = "FAILED"
        if status == "FAILED":
            error = error or trial_error(trial)
            line, tags = f"FAILED: {error[:200]}", {"vaplan.error": error}
        if run_id:
            tracking.end_run(run_id, status, tags)
        elif key in self.done:
            line += " (recorded before the stop)"
        print(f"[{self.ended}/{self.total or '?'}] {trial_name(values, self.keys, key)}: {line}",
              flush=True)
