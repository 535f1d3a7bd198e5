"""The one place that wires Ray: cluster init/join, the per-worker data cache, tracked trials.

- `init_ray` joins a cluster (inside `ray job submit`, with RAY_ADDRESS, or a running local
  head) or starts a local one with a bounded number of CPUs.
- `share` puts a payload into the object store once per driver; `worker_data` resolves it at
  most once per worker process (Tune reuses trial actors), so a sweep loads the features and
  teacher scores once per worker, not once per trial or epoch.
- `tracked_trial` wraps a trial body in an MLflow child run of the sweep's parent run (through
  `pipelines.tracking`, `parent_run_id`): the trial's full config as params, every report as
  metrics with steps, status FINISHED/FAILED. A trial stopped by the scheduler (ASHA) ends
  FINISHED with the tag `vaplan.stopped_by_tune`.
- `ChildRunCallback` (driver side) closes child runs a dead trial actor left RUNNING.
The sweep driver itself (parent run, Tuner, resume) is `ray_jobs.sweep`.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import ray
from ray import tune

from pipelines import tracking
from vaplan.config import ExperimentConfig, from_dict, replace_path

TRIAL_TAG = "vaplan.trial_id"
SWEEP_TAG = "vaplan.sweep"
STOPPED_TAG = "vaplan.stopped_by_tune"
RUN_ID_KEY = "mlflow_run_id"  # reported with every Tune result
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in the driver of a submitted job
MAX_CACHED = 4  # payloads kept per worker


# ---------------------------------------------------------------- cluster

def inside_ray_job() -> bool:
    return JOB_ENV in os.environ


def init_ray(address: str | None = None, num_cpus: int | None = None,
             env_vars: Mapping[str, str] | None = None, quiet: bool = False) -> str:
    """Join or start Ray; returns how ("job", "address", "auto", "local").

    address: "local" forces a new local cluster, "auto"/None joins a running one (inside a
    submitted job, RAY_ADDRESS or a local head) and falls back to local, anything else is a
    cluster address. env_vars reach every worker through the runtime env (not inside a
    submitted job, whose runtime env comes from `ray job submit --runtime-env-json`).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return "existing"
    _reload_auth_mode()
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    kwargs = {"log_to_driver": not quiet, "logging_level": "WARNING"}
    if inside_ray_job():
        ray.init(**kwargs)
        return "job"
    if address not in (None, "auto", "local"):
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
        return "address"
    if address != "local":
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", runtime_env=runtime_env,
                     **kwargs)
            return "auto"
        except ConnectionError:
            pass
    cpus = num_cpus or min(os.cpu_count() or 1, 8)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env,
             object_store_memory=1 << 30, **kwargs)
    return "local"


def _reload_auth_mode() -> None:
    """Ray caches RAY_AUTH_MODE when it first reads its config; make it see the current env
    (a process that set RAY_AUTH_MODE/RAY_AUTH_TOKEN after importing ray)."""
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # private API: without it the env must be set before importing ray
        pass


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------- shared data

@dataclass(frozen=True)
class Shared:
    """A payload in the object store with a cache key (a dataset digest plus what it holds)."""

    key: str
    ref: Any  # ray.ObjectRef


_CACHE: dict[str, Any] = {}
_MEMO: dict[str, Any] = {}
CACHE_STATS = {"hits": 0, "loads": 0}


def share(obj: Any, key: str) -> Shared:
    """Put `obj` into the object store once (numpy arrays are read zero-copy by workers)."""
    return Shared(key, ray.put(obj))


def worker_data(shared: Shared) -> Any:
    """The payload of `shared`, fetched at most once per worker process."""
    if shared.key in _CACHE:
        CACHE_STATS["hits"] += 1
        return _CACHE[shared.key]
    while len(_CACHE) >= MAX_CACHED:
        _CACHE.pop(next(iter(_CACHE)))
    CACHE_STATS["loads"] += 1
    _CACHE[shared.key] = ray.get(shared.ref)
    return _CACHE[shared.key]


def worker_memo(key: str, build: Callable[[], Any]) -> Any:
    """A value derived from shared data, computed once per worker process (e.g. train labels)."""
    if key not in _MEMO:
        while len(_MEMO) >= MAX_CACHED:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = build()
    return _MEMO[key]


# ---------------------------------------------------------------- trials

@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep needs besides its config (passed with tune.with_parameters)."""

    job: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    base: dict  # vaplan.config.to_dict(ExperimentConfig)
    inject_failure: tuple[tuple[str, str], ...] = ()
    tags: dict = field(default_factory=dict)


class InjectedFailure(RuntimeError):
    """Raised by trials matching --inject-failure (to exercise the failure path)."""


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (configs from Tune samplers)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) \
        else value


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"pld": {"visual_k": 5}} and {"pld.visual_k": 5} -> {"pld.visual_k": 5}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = plain(value)
    return flat


def apply_config(base: ExperimentConfig, config: Mapping[str, Any]) -> ExperimentConfig:
    """The base experiment with a trial's (flat or nested) searched values applied."""
    for key, value in flat_config(config).items():
        base = replace_path(base, key, value)
    return base


Report = Callable[..., None]


class Reporter:
    """Logs metrics to the trial's MLflow run (with a step), then reports them to Tune."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.reports = 0

    def __call__(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        tracking.log_scores(finite, step=step, run_id=self.run_id)
        self.reports += 1
        tune.report({**finite, RUN_ID_KEY: self.run_id})


def tracked_trial(ctx: SweepContext, config: Mapping[str, Any],
                  body: Callable[[ExperimentConfig, Reporter], None]) -> None:
    """Run `body(experiment, report)` inside an MLflow child run of the sweep's parent.

    A trial whose child run already FINISHED (Tune saves its experiment state only now and
    then, so on --resume it may re-run trials that ended just before the stop) is not run
    again: its recorded metrics are reported to Tune and it returns."""
    os.environ.pop("MLFLOW_RUN_ID", None)  # never attach trials to a run named by the env
    tracking.use_tracking_uri(ctx.tracking_uri)
    trial = tune.get_context()
    done = finished_trial_run(ctx.experiment_id, ctx.parent_run_id, trial.get_trial_id())
    if done is not None:
        tune.report({**done.data.metrics, RUN_ID_KEY: done.info.run_id})
        return
    searched = flat_config(config)
    experiment = apply_config(from_dict(ExperimentConfig, ctx.base), searched)
    tags = {TRIAL_TAG: trial.get_trial_id(), SWEEP_TAG: ctx.job,
            "vaplan.worker_pid": str(os.getpid()), **cache_tags(), **ctx.tags}
    stopped = False
    with tracking.start_child_run(ctx.parent_run_id, ctx.experiment_id,
                                  run_name=trial.get_trial_name(), tags=tags) as run:
        tracking.log_flat_params(experiment)
        tracking.log_flat_params(searched, prefix="search.")
        reporter = Reporter(run.info.run_id)
        try:
            _maybe_fail(ctx, searched)
            body(experiment, reporter)
        except SystemExit:  # Tune stopped the trial at a report (ASHA): a normal end
            tracking.set_tags({STOPPED_TAG: "true"}, run_id=run.info.run_id)
            stopped = True
    if stopped:
        raise SystemExit(0)


def _maybe_fail(ctx: SweepContext, searched: Mapping[str, Any]) -> None:
    for key, value in ctx.inject_failure:
        if str(searched.get(key)) == value:
            raise InjectedFailure(f"injected failure for {key}={value} (--inject-failure)")


def cache_tags() -> dict[str, str]:
    """How often this worker process resolved vs reused shared payloads (logged as tags)."""
    return {"vaplan.worker_cache_loads": str(CACHE_STATS["loads"]),
            "vaplan.worker_cache_hits": str(CACHE_STATS["hits"])}


class ChildRunCallback(tune.Callback):
    """Driver side: a trial that ended while its child run is still RUNNING (its actor died)
    gets the run closed as FAILED (error) or FINISHED (completed)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id = parent_run_id

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "FAILED")

    def _close(self, trial, status: str) -> None:
        tracking.use_tracking_uri(self.tracking_uri)
        client = tracking.client()
        run_id = (trial.last_result or {}).get(RUN_ID_KEY)
        if run_id and status == "FINISHED":
            run = tracking.retry_locked(client.get_run, run_id)
            runs = [run] if run.info.status == "RUNNING" else []
        else:
            runs = running_children(self.experiment_id, self.parent_run_id, trial.trial_id)
        for run in runs:
            tracking.retry_locked(client.set_terminated, run.info.run_id, status)


def finished_trial_run(experiment_id: str, parent_run_id: str, trial_id: str):
    """The FINISHED child run of `parent_run_id` recorded for Tune trial `trial_id`, or None."""
    runs = tracking.retry_locked(
        tracking.client().search_runs, [experiment_id],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and "
                      f"tags.`{TRIAL_TAG}` = '{trial_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def running_children(experiment_id: str, parent_run_id: str,
                     trial_id: str | None = None) -> list:
    """Child runs of `parent_run_id` (of one trial) still RUNNING."""
    query = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    if trial_id:
        query += f" and tags.`{TRIAL_TAG}` = '{trial_id}'"
    return tracking.retry_locked(tracking.client().search_runs, [experiment_id],
                                 filter_string=query, max_results=1000)


# ---------------------------------------------------------------- interruption

class Interruption:
    """SIGTERM (what `ray job stop` sends) -> Tune's graceful stop (SIGUSR1), which saves the
    experiment state so `--resume` continues with every finished trial kept."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def __enter__(self) -> "Interruption":
        self.interrupted = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

    def _handle(self, signum, frame) -> None:
        self.interrupted = True
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune installs a SIGUSR1 handler during fit()


INTERRUPT_AFTER = {"trials": 0}  # set by the driver from --interrupt-after (0 = never)


class InterruptAfter(tune.Callback):
    """Send ourselves SIGTERM after N finished trials: `ray job stop` on cue (resume tests)."""

    def __init__(self) -> None:
        self.finished = 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        limit = INTERRUPT_AFTER["trials"]
        if limit and self.finished == limit:
            os.kill(os.getpid(), signal.SIGTERM)
