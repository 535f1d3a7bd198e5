"""The one place that wires MLflow: store URI, experiment, parent/child runs, params, metrics.

Nothing happens at import time. A process calls `prepare_store` once (the pipeline driver, or a
Ray Tune driver BEFORE any trial starts: many processes creating a fresh SQLite database at once
race on the schema), then runs with `start_run` / `start_child_run`. Trials in other processes
call `use_tracking_uri(uri)` and `start_child_run(parent_run_id, experiment_id, ...)`.

The embedded default store is `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts under
`<cwd>/mlruns/artifacts`; `MLFLOW_TRACKING_URI` or an explicit URI (e.g. an `http://` server)
switches. Concurrent SQLite writers wait for each other: MLflow 3.17 opens every SQLite
session with `PRAGMA busy_timeout = 20000` (20 s), and only the driver process writes (sweep
trials are logged from the Ray driver), so no retry wrapper is needed.

Stores that survive real use:
- `prepare_store` holds a file lock next to a SQLite database (`mlflow.db.lock`) while it
  creates or migrates the schema and the experiment, so processes starting together on a fresh
  store do not race; read-only commands use `open_existing_store`, which never creates one.
- Every run records the host, pid and process start time that own it (`vaplan.host`,
  `vaplan.pid`, `vaplan.pid_started`); `prepare_store` marks RUNNING runs of this host whose
  process is gone KILLED (`mark_dead_runs`). Runs of other hosts are left alone.
- `stop_on_signals` turns SIGTERM (and SIGINT) into an exception, and the run context
  managers end runs KILLED on it (and on KeyboardInterrupt) instead of FAILED.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag

from vaplan.config import flatten
from vaplan.errors import StoreNotFoundError, TrackingAuthError

DEFAULT_EXPERIMENT = "vaplan"
STORE_DIR = "mlruns"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
PARENT_TAG = "mlflow.parentRunId"
HOST_TAG, PID_TAG, PID_STARTED_TAG = "vaplan.host", "vaplan.pid", "vaplan.pid_started"
KILLED_TAG = "vaplan.killed"  # why a run was set KILLED (dead process, signal)
LOCK_TIMEOUT = 600.0  # seconds to wait for another process creating/migrating the store
WHERE_TO_POINT = "pass --tracking-uri URI or set MLFLOW_TRACKING_URI to the store to use"
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI
# MLflow 3.17's UI opens an experiment in GenAI mode (no Models entry, runs as "Evaluations")
# unless its kind says otherwise or the URL carries workflowType=machine_learning.
EXPERIMENT_KIND_TAG, MACHINE_LEARNING_KIND = "mlflow.experimentKind", "custom_model_development"
ML_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
# A server with MLflow's basic-auth app (docs/deploy.md, "Accounts"): MLflow reads the account
# from these variables on every request; the registering step switches to the promoter's.
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
PROMOTER = ("VAPLAN_PROMOTER_USERNAME", "VAPLAN_PROMOTER_PASSWORD")
AUTH_STATUS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}  # MLflow error code -> HTTP


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """`sqlite:///<cwd>/mlruns/mlflow.db` (absolute, so it works from any directory later)."""
    root = Path(cwd or Path.cwd()).resolve() / STORE_DIR
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None, cwd: str | Path | None = None) -> str:
    """The URI to use: explicit argument > MLFLOW_TRACKING_URI > the embedded SQLite default.

    A relative SQLite path (MLflow's own default is `sqlite:///mlflow.db`) is made absolute
    against the cwd, so workers started elsewhere find the same file."""
    resolved = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cwd)
    db = sqlite_path(resolved)
    if db is not None and not db.is_absolute():
        query = resolved.partition("?")[1] + resolved.partition("?")[2]
        resolved = f"sqlite:///{Path(cwd or Path.cwd()).resolve() / db}{query}"
    return resolved


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative ones against the cwd, as MLflow reads
    them; any `?query` dropped), None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0]))


def file_store_path(uri: str) -> Path | None:
    """The folder of a file store (`file:///x/mlruns` or a plain path), None for others."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if uri.startswith("databricks"):
        return None
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def default_artifact_root(uri: str) -> Path | None:
    """`<dir of mlflow.db>/artifacts` for a SQLite store; None where a server owns artifacts."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / "artifacts"


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
    where = "--tracking-uri" if uri else ("MLFLOW_TRACKING_URI" if
                                          os.environ.get("MLFLOW_TRACKING_URI") else "default")
    local = sqlite_path(resolved) or file_store_path(resolved)
    if local is not None and not _store_exists(local, sqlite_path(resolved) is not None):
        raise StoreNotFoundError(f"no MLflow store at {local.resolve()} ({where}: {resolved}); "
                                 f"{WHERE_TO_POINT}")
    _point_mlflow(resolved)
    if model is not None:
        with auth_errors(resolved):
            _require_model(resolved, model, alias, version)
    return resolved


# ---------------------------------------------------------------- authenticated servers

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
        if status is None or not server.startswith(("http://", "https://")):
            raise
        raise TrackingAuthError(auth_message(status, server, str(err))) from err


def auth_message(status: int, uri: str, detail: str = "") -> str:
    """The one line for a 401/403 of the server at `uri` (credentials in the URI hidden)."""
    parsed = urlparse(uri)
    server = uri if parsed.password is None else uri.replace(parsed.netloc,
                                                             parsed.netloc.rpartition("@")[2])
    user = os.environ.get(CREDENTIALS[0])
    account = f"account {user!r}" if user else f"no account ({CREDENTIALS[0]} is not set)"
    if status == 401:
        return (f"the MLflow server {server} refused the credentials of {account} (401): set "
                f"{CREDENTIALS[0]} and {CREDENTIALS[1]} to a valid account (docs/deploy.md)")
    if "Invalid Host header" in detail:  # the server's --allowed-hosts, not an account
        return (f"the MLflow server {server} refused this host name (403): add it to the "
                f"server's --allowed-hosts (MLFLOW_EXTRA_ALLOWED_HOSTS, docs/deploy.md)")
    endpoint = re.search(r"endpoint (\S+)", detail)
    request = f" for {endpoint[1]}" if endpoint else ""
    return (f"the MLflow server {server} denied {account} permission{request} (403): the "
            f"account lacks that permission (accounts table in docs/deploy.md)")


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


def _store_exists(path: Path, is_sqlite: bool) -> bool:
    if is_sqlite:
        return path.is_file() and path.stat().st_size > 0
    return path.is_dir()


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


def _experiment_location(uri: str, name: str) -> str | None:
    root = default_artifact_root(uri)
    if root is None:
        return None  # the server decides (--artifacts-destination / --default-artifact-root)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
    return (root / slug).resolve().as_uri()


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
            experiment, artifact_location=_experiment_location(resolved, experiment),
            tags={EXPERIMENT_KIND_TAG: MACHINE_LEARNING_KIND})
    except Exception:  # another process (e.g. on a server store) created it meanwhile
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


# ---------------------------------------------------------------- runs of dead processes

def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_tags() -> dict[str, str]:
    """Who owns a run: this host, pid and process start time (epoch seconds)."""
    started = _process_started(os.getpid())
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_STARTED_TAG: f"{started:.2f}" if started is not None else ""}


def process_alive(pid: int, started: float | None = None,
                  run_started: float | None = None) -> bool:
    """True when process `pid` of this host runs and is the one that owned the run: its start
    time equals `started` (when recorded), else it began before the run (`run_started`, epoch
    seconds). A zombie counts as dead; a process we may not inspect counts as alive."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    if started is not None:
        return abs(created - started) < 1.0  # else the pid was reused
    return run_started is None or created <= run_started + 1.0


def mark_dead_runs(experiment_id: str) -> list[str]:
    """Set KILLED every RUNNING run of `experiment_id` owned by a process of this host that is
    gone (SIGKILL, OOM, power loss); returns their ids. Runs of other hosts are left alone
    (their processes cannot be checked from here)."""
    host = socket.gethostname()
    mlflow_client = client()
    runs = mlflow_client.search_runs([experiment_id],
                                     filter_string=f"attributes.status = 'RUNNING' and "
                                                   f"tags.`{HOST_TAG}` = '{_quote(host)}'",
                                     max_results=1000)
    killed = []
    for run in runs:
        tags = run.data.tags
        try:
            pid = int(tags.get(PID_TAG, ""))
        except ValueError:
            continue
        started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
        if process_alive(pid, started, run.info.start_time / 1000.0):
            continue
        set_tags({KILLED_TAG: f"process {pid} on {host} is gone"}, run_id=run.info.run_id)
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
    return killed


# ---------------------------------------------------------------- signals

class Terminated(SystemExit):
    """Raised by `stop_on_signals` on SIGTERM/SIGINT; exits 128 + signal number. The run
    context managers end their runs KILLED on it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise `Terminated` (open runs end KILLED at once).

    Only handlers left at Python's defaults are replaced (a Ray worker's or Tune's own
    handlers are kept), only in the main thread; a second signal while the runs are being
    closed is ignored. The previous handlers are restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handle(signum, frame):
        if fired:
            return  # already stopping: let the runs be closed
        fired.append(signum)
        raise Terminated(signum)

    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    previous = {}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    return client().search_runs([experiment_id],
                                filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                                order_by=["attributes.start_time ASC"], max_results=1000)


def set_description(markdown: str, run_id: str | None = None) -> None:
    """The run's description (markdown, shown on its page in the UI: `mlflow.note.content`)."""
    set_tags({NOTE_TAG: markdown}, run_id=run_id)


def short_name(*parts: str, run_id: str, limit: int = 120) -> str:
    """A readable run name: the non-empty parts and the run id's first 4 characters, e.g.
    `sim-small train.lr=1e-3 3f2a` (long part lists are cut at `limit` characters)."""
    text = " ".join(part for part in parts if part)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{text} {run_id[:4]}".strip()


def ui_command(uri: str) -> str:
    """The command that serves this store's UI (`mlflow ui ...`); for a server, its URL."""
    root = default_artifact_root(uri)
    if uri.startswith(("http://", "https://")):
        return uri
    if root is None:
        return f"mlflow ui --backend-store-uri {uri}"
    return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root}"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The experiment's (or run's) page in machine-learning mode: MLflow 3.17 opens an
    experiment as GenAI unless the URL says `workflowType=machine_learning` (or the experiment
    carries `mlflow.experimentKind`, which `prepare_store` sets)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    page = f"{base}/#/experiments/{experiment_id}"
    return f"{page}/runs/{run_id}?{ML_QUERY}" if run_id else f"{page}?{ML_QUERY}"


def ui_links(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """What a command that wrote runs prints last: how to open the UI, the experiment and run."""
    lines = [] if uri.startswith(("http://", "https://")) else \
        [f"browse the runs: {ui_command(uri)}"]
    lines.append(f"experiment: {ui_url(uri, experiment_id)}")
    if run_id:
        lines.append(f"run:        {ui_url(uri, experiment_id, run_id)}")
    return "\n".join(lines)
