"""The one place that wires Ray: the cluster, the trainable, the trials' MLflow runs.

`run_trial` (every sweep's trainable) applies a trial's values to the base config and runs
the job's body (`vaplan.method` calls that `tune.report`), data from `tune.with_parameters`.
`TrialRuns`, a `tune.Callback` in the driver, makes each trial a child run of the sweep's
parent run: workers never write to the store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
from ray import tune
from ray.tune.utils import flatten_dict

from pipelines import tracking
from vaplan.config import ExperimentConfig, replace_path

TRIAL_TAG, SWEEP_TAG = "vaplan.trial_id", "vaplan.sweep"
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in the driver of a submitted job
STOP = {"after": 0, "stopping": False}  # --interrupt-after N; set by a SIGTERM/SIGINT


def job_metadata() -> dict:
    """The submitted job's metadata (`job_submission_id`, `job_name`, ...); {} outside a job."""
    return json.loads(os.environ.get(JOB_ENV) or "{}").get("metadata") or {}


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


def dotted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config with dotted keys ({"pld": {"visual_k": 5}} -> {"pld.visual_k": 5})."""
    return {k: v.item() if hasattr(v, "item") else v
            for k, v in flatten_dict(dict(config), delimiter=".").items()}


def apply_config(base: ExperimentConfig, config: Mapping[str, Any]) -> ExperimentConfig:
    """The base experiment with a trial's values applied (each checked by the config)."""
    for key, value in dotted(config).items():
        base = replace_path(base, key, value)
    return base


def run_trial(config: dict, body: Callable, base: ExperimentConfig, done: Mapping[str, dict],
              inject: tuple = (), **data: Any) -> None:
    """Tune's trainable: `body(experiment, **data)`. A trial whose MLflow run already FINISHED
    (Tune's saved state may lag behind a stop) reports that run's metrics and returns."""
    trial_id = tune.get_context().get_trial_id()
    if trial_id in done:
        return tune.report(done[trial_id])
    values = dotted(config)
    for key, value in inject:
        if str(values.get(key)) == value:
            raise RuntimeError(f"injected failure for {key}={value} (--inject-failure)")
    body(apply_config(base, values), **data)


def finished_trials(experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """{Tune trial id: FINISHED MLflow run} of the sweep's parent run."""
    runs = tracking.client().search_runs(
        [experiment_id], max_results=5000,
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and "
                      f"attributes.status = 'FINISHED'")
    return {run.data.tags[TRIAL_TAG]: run for run in runs if TRIAL_TAG in run.data.tags}


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """Our metrics in a Tune result (their names hold a "/"; Tune's own fields do not)."""
    return {k: float(v) for k, v in result.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_name(values: Mapping[str, Any], keys: list[str], trial_id: str = "") -> str:
    """A trial's name: its searched values (4 significant digits), then its number."""
    shown = [f"{k.split('.', 1)[-1]}={f'{v:.4g}' if isinstance(v, float) else v}"
             for k, v in values.items() if k.startswith(tuple(keys))]
    return " ".join([*shown, trial_id.rsplit("_", 1)[-1]]).strip()


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

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.done or trial.trial_id in self.runs:
            return
        values = dotted(trial.config)
        tags = {tracking.PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id,
                SWEEP_TAG: self.job, **tracking.process_tags()}
        run = tracking.client().create_run(
            self.experiment_id, run_name=run_name(values, self.keys, trial.trial_id), tags=tags)
        tracking.log_flat_params(apply_config(self.base, values), run_id=run.info.run_id)
        self.runs[trial.trial_id] = run.info.run_id

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.runs:
            tracking.log_scores(metrics_of(result), step=result.get("training_iteration"),
                                run_id=self.runs[trial.trial_id])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FINISHED")
        if STOP["after"] and self.ended == STOP["after"]:
            os.kill(os.getpid(), signal.SIGTERM)  # `ray job stop` on cue (resume tests)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials, **info) -> None:
        """Runs still open belong to trials the stop cut short: KILLED."""
        for run_id in self.runs.values():
            tracking.set_tags({"vaplan.interrupted": "true"}, run_id=run_id)
            tracking.client().set_terminated(run_id, "KILLED")

    def _end(self, trial, status: str) -> None:
        self.ended += 1
        run_id, result = self.runs.pop(trial.trial_id, None), trial.last_result or {}
        line = f"{self.metric} {result.get(self.metric, float('nan')):.4g}"
        tags = {}  # done: it returned, or a scheduler (ASHA) stopped it; else the stop cut it
        if STOP["stopping"] and not result.get("done"):
            status, line, tags = "KILLED", "KILLED by the stop", {"vaplan.interrupted": "true"}
        if status == "FAILED":
            try:  # the exception: the last line of the trial's error.txt
                error = Path(trial.error_file).read_text().strip().splitlines()[-1]
            except (OSError, TypeError, IndexError):
                error = "error"
            line, tags = f"FAILED: {error[:200]}", {"vaplan.error": error}
        if run_id:
            tracking.set_tags(tags, run_id=run_id)
            tracking.client().set_terminated(run_id, status)
        elif trial.trial_id in self.done:
            line += " (recorded before the stop)"
        name = run_name(dotted(trial.config), self.keys, trial.trial_id)
        print(f"[{self.ended}/{self.total or '?'}] {name}: {line}", flush=True)
