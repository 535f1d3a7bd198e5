"""The one place that wires MLflow: store URI, experiment, parent/child runs, params, metrics.

Nothing happens at import time. A process calls `prepare_store` once (the pipeline driver, or a
Ray Tune driver BEFORE any trial starts: many processes creating a fresh SQLite database at once
race on the schema), then runs with `start_run` / `start_child_run`. Trials in other processes
call `use_tracking_uri(uri)` and `start_child_run(parent_run_id, experiment_id, ...)`.

The embedded default store is `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts under
`<cwd>/mlruns/artifacts`; `MLFLOW_TRACKING_URI` or an explicit URI (e.g. an `http://` server)
switches. Every call that writes goes through `retry_locked`, which retries SQLite's
"database is locked" with backoff.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from vaplan.config import flatten

T = TypeVar("T")
DEFAULT_EXPERIMENT = "vaplan"
STORE_DIR = "mlruns"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
BATCH = 900  # below MLflow's 1000-entity log_batch limit
PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """`sqlite:///<cwd>/mlruns/mlflow.db` (absolute, so it works from any directory later)."""
    root = Path(cwd or Path.cwd()).resolve() / STORE_DIR
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None, cwd: str | Path | None = None) -> str:
    """The URI to use: explicit argument > MLFLOW_TRACKING_URI > the embedded SQLite default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cwd)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def default_artifact_root(uri: str) -> Path | None:
    """`<dir of mlflow.db>/artifacts` for a SQLite store; None where a server owns artifacts."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / "artifacts"


def is_locked_error(err: BaseException) -> bool:
    """True for SQLite's transient "database is locked" (also when wrapped by MLflow)."""
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def retry_locked(fn: Callable[..., T], *args: Any, attempts: int = 8, delay: float = 0.2,
                 **kwargs: Any) -> T:
    """Call fn(*args, **kwargs), retrying with exponential backoff while SQLite is locked."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException, sqlalchemy OperationalError, ...
            if not is_locked_error(err) or attempt == attempts - 1:
                raise
            time.sleep(delay * 2 ** attempt)
    raise AssertionError("unreachable")


def use_tracking_uri(uri: str | None = None) -> str:
    """Point this process's MLflow at `uri` (resolved); returns it. MLflow exports it as
    MLFLOW_TRACKING_URI, so subprocesses (Ray workers, `mlflow` CLIs) inherit it."""
    resolved = resolve_tracking_uri(uri)
    db = sqlite_path(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if mlflow.get_tracking_uri() != resolved:
        mlflow.set_tracking_uri(resolved)
    return resolved


def client() -> MlflowClient:
    """A client for the current tracking (and registry) URI."""
    return MlflowClient()


def _experiment_location(uri: str, name: str) -> str | None:
    root = default_artifact_root(uri)
    if root is None:
        return None  # the server decides (--artifacts-destination / --default-artifact-root)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
    return (root / slug).resolve().as_uri()


def prepare_store(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create the store (SQLite schema) and the experiment if missing; returns its id.

    Call once in the driver before any parallel worker logs. Sets this process's tracking URI.
    """
    resolved = use_tracking_uri(uri)
    mlflow_client = client()
    retry_locked(mlflow_client.search_experiments, max_results=1)  # creates/migrates the schema
    found = retry_locked(mlflow_client.get_experiment_by_name, experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            retry_locked(mlflow_client.restore_experiment, found.experiment_id)
        return found.experiment_id
    try:
        return retry_locked(mlflow_client.create_experiment, experiment,
                            artifact_location=_experiment_location(resolved, experiment))
    except Exception:  # another process created it between our lookup and create
        found = retry_locked(mlflow_client.get_experiment_by_name, experiment)
        if found is None:
            raise
        return found.experiment_id


@contextlib.contextmanager
def start_run(experiment_id: str, run_name: str | None = None,
              tags: Mapping[str, str] | None = None, description: str | None = None,
              run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A top-level (parent) run, or the existing run `run_id` re-opened (e.g. to resume a
    sweep); FINISHED on exit, FAILED when the block raises."""
    if run_id is not None:
        run = retry_locked(mlflow.start_run, run_id=run_id)
        if tags:
            set_tags(tags, run_id=run_id)
    else:
        run = retry_locked(mlflow.start_run, experiment_id=experiment_id, run_name=run_name,
                           tags=dict(tags or {}), description=description)
    with _finish(run):
        yield run


@contextlib.contextmanager
def start_child_run(parent_run_id: str, experiment_id: str, run_name: str | None = None,
                    tags: Mapping[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run nested under `parent_run_id` (tag mlflow.parentRunId), in this or another process.

    In the process that holds the parent as its active run this nests on the active-run stack;
    elsewhere (a Ray trial) there is no active run and MLflow only records the parent tag.
    """
    active = mlflow.active_run()
    nested = active is not None and active.info.run_id == parent_run_id
    run = retry_locked(mlflow.start_run, experiment_id=experiment_id, run_name=run_name,
                       nested=nested, parent_run_id=parent_run_id, tags=dict(tags or {}))
    with _finish(run):
        yield run


@contextlib.contextmanager
def _finish(run: mlflow.ActiveRun) -> Iterator[None]:
    try:
        yield
    except BaseException:
        retry_locked(mlflow.end_run, status="FAILED")
        raise
    retry_locked(mlflow.end_run, status="FINISHED")


def _param_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[:MAX_PARAM_LENGTH - 3] + "..."


def log_flat_params(cfg: Any, prefix: str = "", run_id: str | None = None) -> dict[str, str]:
    """Log a config dataclass (flattened, "train.lr") or a flat dict as params; returns them."""
    flat = cfg if isinstance(cfg, Mapping) else flatten(cfg)
    params = {f"{prefix}{key}": _param_value(value) for key, value in flat.items()}
    run_id = run_id or _active_run_id()
    items = [Param(key, value) for key, value in sorted(params.items())]
    for start in range(0, len(items), BATCH):
        retry_locked(client().log_batch, run_id, params=items[start:start + BATCH])
    return params


def log_scores(scores: Mapping[str, float], prefix: str = "", step: int | None = None,
               run_id: str | None = None) -> dict[str, float]:
    """Log finite numbers as metrics `<prefix><name>` at `step` in one batch; returns them."""
    logged = {f"{prefix}{key}": float(value) for key, value in scores.items()
              if value is not None and math.isfinite(float(value))}
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step or 0) for key, value in sorted(logged.items())]
    run_id = run_id or _active_run_id()
    for start in range(0, len(metrics), BATCH):
        retry_locked(client().log_batch, run_id, metrics=metrics[start:start + BATCH])
    return logged


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set string tags on a run (the active one by default)."""
    from mlflow.entities import RunTag

    items = [RunTag(key, str(value)) for key, value in tags.items()]
    if items:
        retry_locked(client().log_batch, run_id or _active_run_id(), tags=items)


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: start one with pipelines.tracking.start_run")
    return run.info.run_id


def child_runs(parent_run_id: str, experiment_id: str) -> list:
    """Runs tagged with `parent_run_id`, oldest first."""
    return retry_locked(client().search_runs, [experiment_id],
                        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                        order_by=["attributes.start_time ASC"], max_results=1000)


def ui_command(uri: str) -> str:
    """The command that browses this store: `mlflow ui ...` for SQLite, the URL otherwise."""
    root = default_artifact_root(uri)
    if root is None:
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root}"
