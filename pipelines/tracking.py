"""The one place that wires MLflow: store, experiment, parent/child runs, params, metrics.

Nothing happens at import time; a driver calls `prepare_store` once before any worker logs.
URIs, UI links, run owners and signals are `vaplan.store_uri` / `vaplan.runs` (no MLflow);
the store's guarantees (lock, dead runs, KILLED on signals): docs/pipelines.md "Stores".
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from typing import Any, Iterator, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag

from vaplan.config import flatten
from vaplan.errors import StoreNotFoundError, TrackingAuthError
from vaplan.runs import HOST_TAG, KILLED_TAG, Terminated, owner_gone, process_tags
from vaplan.store_uri import (CREDENTIALS, WHERE_TO_POINT, auth_message, experiment_location,
                              is_server, local_store_missing, resolve_tracking_uri, sqlite_path,
                              uri_source)

DEFAULT_EXPERIMENT = "vaplan"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
PARENT_TAG = "mlflow.parentRunId"
LOCK_TIMEOUT = 600.0  # seconds to wait for another process creating/migrating the store
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI
# the UI opens an experiment of this kind in machine-learning mode, not GenAI (docs/pipelines.md)
EXPERIMENT_KIND_TAG, MACHINE_LEARNING_KIND = "mlflow.experimentKind", "custom_model_development"
PROMOTER = ("VAPLAN_PROMOTER_USERNAME", "VAPLAN_PROMOTER_PASSWORD")
AUTH_STATUS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}  # MLflow error code -> HTTP


def use_tracking_uri(uri: str | None = None) -> str:
    """Point this process's MLflow at `uri` (resolved); returns it. MLflow exports it as
    MLFLOW_TRACKING_URI, so subprocesses (Ray workers, `mlflow` CLIs) and later calls without
    a URI inherit it. The registry follows the tracking URI (MLflow's default)."""
    resolved = resolve_tracking_uri(uri)
    db = sqlite_path(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    _point_mlflow(resolved)
    return resolved


def _point_mlflow(resolved: str) -> None:
    # Set it explicitly even when mlflow.get_tracking_uri() already returns it: with nothing
    # set, that is MLflow's own default (sqlite:///<cwd>/mlflow.db), and a user passing exactly
    # that URI was never exported, so later calls without a URI fell back to ./mlruns/mlflow.db.
    if os.environ.get("MLFLOW_TRACKING_URI") != resolved or mlflow.get_tracking_uri() != resolved:
        mlflow.set_tracking_uri(None)  # MLflow exports the variable only on a change
        mlflow.set_tracking_uri(resolved)


def open_existing_store(uri: str | None = None, model: str | None = None,
                        alias: str | None = None, version: int | str | None = None) -> str:
    """Point MLflow at an EXISTING store for a read-only command; never creates one.

    A `sqlite:///` file or a file-store folder that does not exist raises StoreNotFoundError
    naming the store searched and how to point elsewhere; servers (http, postgresql, ...) are
    asked as they are. With `model` (and `alias` or `version`) the registered model and the
    alias/version must exist too (StoreNotFoundError naming what does exist).
    """
    resolved = resolve_tracking_uri(uri)
    missing = local_store_missing(resolved)
    if missing is not None:
        raise StoreNotFoundError(f"no MLflow store at {missing.resolve()} ({uri_source(uri)}: "
                                 f"{resolved}); {WHERE_TO_POINT}")
    _point_mlflow(resolved)
    if model is not None:
        with auth_errors(resolved):
            _require_model(resolved, model, alias, version)
    return resolved


@contextlib.contextmanager
def auth_errors(uri: str | None = None) -> Iterator[None]:
    """Within the block (or a function it decorates), an MLflow server's 401 (credentials) or
    403 (permission) becomes a TrackingAuthError: one line naming the server, the account and
    the refused request, instead of MLflow's traceback. Other errors pass unchanged."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        status, server = AUTH_STATUS.get(err.error_code), uri or mlflow.get_tracking_uri()
        if status is None or not is_server(server):
            raise
        raise TrackingAuthError(auth_message(status, server, str(err))) from err


@contextlib.contextmanager
def promoter_credentials() -> Iterator[None]:
    """Registry writes (new versions, version tags, aliases) as the promoter account: within
    the block MLflow's credentials are VAPLAN_PROMOTER_USERNAME/PASSWORD when those are set
    (the cluster's head, docs/deploy.md); without them nothing changes (a local store, or one
    account for everything). The previous credentials come back afterwards. Only the
    registering step (pipelines.registry) uses it, in the driver process. A 401/403 inside
    is a TrackingAuthError (`auth_errors`)."""
    user = os.environ.get(PROMOTER[0])
    if not user:
        with auth_errors():
            yield
        return
    if not os.environ.get(PROMOTER[1]):
        raise TrackingAuthError(f"{PROMOTER[0]} is set but {PROMOTER[1]} is not: set both (the "
                                f"promoter account, docs/deploy.md) or neither")
    previous = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ[CREDENTIALS[0]], os.environ[CREDENTIALS[1]] = user, os.environ[PROMOTER[1]]
    try:
        with auth_errors():
            yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _require_model(uri: str, model: str, alias: str | None, version: int | str | None) -> None:
    """StoreNotFoundError unless `model` (and its alias / version) is registered in `uri`."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        found = mlflow_client.get_registered_model(model)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = [item.name for item in
                 mlflow_client.search_registered_models(max_results=20)]
        raise StoreNotFoundError(f"no registered model {model!r} in {uri}; registered models: "
                                 f"{sorted(names) or 'none'}; {WHERE_TO_POINT}") from None
    if version is not None:
        versions = sorted(int(item.version) for item in mlflow_client.search_model_versions(
            f"name = '{_quote(model)}'", max_results=1000))
        if str(version) not in map(str, versions):
            raise StoreNotFoundError(f"model {model!r} has no version {version} in {uri}; "
                                     f"versions: {versions or 'none'}")
    elif alias is not None and alias not in dict(found.aliases):
        raise StoreNotFoundError(f"model {model!r} has no alias {alias!r} in {uri}; "
                                 f"aliases: {dict(found.aliases) or 'none'}")


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def client() -> MlflowClient:
    """A client for the current tracking (and registry) URI."""
    return MlflowClient()


def store_lock(uri: str):
    """A file lock next to a SQLite database (`<db>.lock`); a no-op for other stores (a
    server or database creates its own schema once)."""
    db = sqlite_path(uri)
    if db is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db.with_name(db.name + ".lock")), timeout=LOCK_TIMEOUT)


def prepare_store(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create the store (SQLite schema) and the experiment if missing; returns its id.

    Call once in the driver before any parallel worker logs. Sets this process's tracking URI.
    Schema creation/migration and the experiment are made under `store_lock`, so processes
    that start together on a fresh store wait for each other. The experiment is tagged
    `mlflow.experimentKind = custom_model_development`, so the UI opens it in machine-learning
    mode (runs, Models), not GenAI mode. Then runs of dead processes of this host are marked
    KILLED (`mark_dead_runs`).
    """
    resolved = use_tracking_uri(uri)
    with auth_errors(resolved), store_lock(resolved):
        experiment_id = _ensure_experiment(resolved, experiment)
    with auth_errors(resolved):
        mark_dead_runs(experiment_id)
    return experiment_id


def _ensure_experiment(resolved: str, experiment: str) -> str:
    mlflow_client = client()
    mlflow_client.search_experiments(max_results=1)  # creates/migrates the schema
    mlflow_client.search_registered_models(max_results=1)  # the registry's too
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        if EXPERIMENT_KIND_TAG not in found.tags:  # made before the tag existed (or elsewhere)
            mlflow_client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                             MACHINE_LEARNING_KIND)
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(
            experiment, artifact_location=experiment_location(resolved, experiment),
            tags={EXPERIMENT_KIND_TAG: MACHINE_LEARNING_KIND})
    except Exception:  # another process (e.g. on a server store) created it meanwhile
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def mark_dead_runs(experiment_id: str) -> list[str]:
    """Set KILLED every RUNNING run of `experiment_id` owned by a process of this host that is
    gone (SIGKILL, OOM, power loss); returns their ids. Runs of other hosts are left alone
    (their processes cannot be checked from here)."""
    killed = []
    for run in search_runs(experiment_id, f"attributes.status = 'RUNNING' and "
                                          f"tags.`{HOST_TAG}` = '{_quote(socket.gethostname())}'"):
        why = owner_gone(run.data.tags, run.info.start_time / 1000.0)
        if why is not None:
            set_tags({KILLED_TAG: why}, run_id=run.info.run_id)
            client().set_terminated(run.info.run_id, "KILLED")
            killed.append(run.info.run_id)
    return killed


def search_runs(experiment_id: str, filter_string: str, newest: int | None = None) -> list:
    """Runs of `experiment_id` matching `filter_string` (MLflow's search syntax): the `newest`
    ones by start time, else all (up to 5000, oldest first)."""
    if newest is not None:
        return client().search_runs([experiment_id], filter_string=filter_string,
                                    order_by=["attributes.start_time DESC"], max_results=newest)
    return client().search_runs([experiment_id], filter_string=filter_string,
                                order_by=["attributes.start_time ASC"], max_results=5000)


@contextlib.contextmanager
def start_run(experiment_id: str, run_name: str | None = None,
              tags: Mapping[str, str] | None = None, description: str | None = None,
              run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A top-level (parent) run, or the existing run `run_id` re-opened (e.g. to resume a
    sweep; it then records this process as its owner); FINISHED on exit, KILLED on a signal
    (`Terminated`, KeyboardInterrupt), FAILED when the block raises anything else."""
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id)
        set_tags({**dict(tags or {}), **process_tags()}, run_id=run_id)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                               tags={**dict(tags or {}), **process_tags()},
                               description=description)
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
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested,
                           parent_run_id=parent_run_id,
                           tags={**dict(tags or {}), **process_tags()})
    with _finish(run):
        yield run


def create_child_run(parent_run_id: str, experiment_id: str, run_name: str,
                     tags: Mapping[str, str]) -> str:
    """A RUNNING child run written with the client (no active run: a Tune callback in the
    driver); returns its id. End it with `end_run`."""
    tags = {**tags, PARENT_TAG: parent_run_id, **process_tags()}
    return client().create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def end_run(run_id: str, status: str, tags: Mapping[str, Any] | None = None) -> None:
    """End a run written with the client as `status`, with `tags` (e.g. the error) first."""
    set_tags(tags or {}, run_id=run_id)
    client().set_terminated(run_id, status)


@contextlib.contextmanager
def _finish(run: mlflow.ActiveRun) -> Iterator[None]:
    try:
        yield
    except (Terminated, KeyboardInterrupt) as stop:
        with contextlib.suppress(Exception):  # the run is being closed: best effort
            set_tags({KILLED_TAG: str(stop) or type(stop).__name__}, run_id=run.info.run_id)
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def log_flat_params(cfg: Any, prefix: str = "", run_id: str | None = None) -> dict[str, str]:
    """Log a config dataclass (flattened, "train.lr") or a flat dict as params; returns them.
    (MLflow batches them; values longer than its limit are cut.)"""
    flat = cfg if isinstance(cfg, Mapping) else flatten(cfg)
    params = {f"{prefix}{key}": "" if value is None else str(value)[:MAX_PARAM_LENGTH]
              for key, value in flat.items()}
    mlflow.log_params(params, run_id=run_id or _active_run_id())
    return params


def log_scores(scores: Mapping[str, float], prefix: str = "", step: int | None = None,
               run_id: str | None = None) -> dict[str, float]:
    """Log finite numbers as metrics `<prefix><name>` at `step`; returns them."""
    logged = {f"{prefix}{key}": float(value) for key, value in scores.items()
              if value is not None and math.isfinite(float(value))}
    mlflow.log_metrics(logged, step=step or 0, run_id=run_id or _active_run_id())
    return logged


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set string tags on a run (the active one by default)."""
    items = [RunTag(key, str(value)) for key, value in tags.items()]
    if items:
        client().log_batch(run_id or _active_run_id(), tags=items)


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: start one with pipelines.tracking.start_run")
    return run.info.run_id


def child_runs(parent_run_id: str, experiment_id: str) -> list:
    """Runs tagged with `parent_run_id`, oldest first."""
    return search_runs(experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")


def finished_children(parent_run_id: str, experiment_id: str, tag: str) -> dict[str, Any]:
    """{value of `tag`: the newest FINISHED child run of `parent_run_id` with it}: the steps
    of a pipeline run, the units of an ablation, the trials of a sweep."""
    return {run.data.tags[tag]: run for run in search_runs(
        experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
                       f"attributes.status = 'FINISHED'") if tag in run.data.tags}


def set_description(markdown: str, run_id: str | None = None) -> None:
    """The run's description (markdown, shown on its page in the UI: `mlflow.note.content`)."""
    set_tags({NOTE_TAG: markdown}, run_id=run_id)
