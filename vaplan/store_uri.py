"""Tracking-store URIs and the links and messages around them, without MLflow.

Which store a command uses, where its artifacts live, how to open its UI in machine-learning
mode, and the one line a refusing server gets (docs/pipelines.md "Stores", docs/deploy.md).
`pipelines.tracking` points MLflow at what these functions resolve.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from vaplan.errors import ConfigError

STORE_DIR = "mlruns"
WHERE_TO_POINT = "pass --tracking-uri URI or set MLFLOW_TRACKING_URI to the store to use"
# MLflow 3.17's UI opens an experiment in GenAI mode (no Models entry, runs as "Evaluations")
# unless its kind says otherwise or the URL carries workflowType=machine_learning.
ML_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
# A server with MLflow's basic-auth app (docs/deploy.md, "Accounts"): MLflow reads the account
# from these variables on every request; the registering step switches to the promoter's.
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def is_server(uri: str) -> bool:
    """An MLflow server (http/https), which owns its artifacts and serves its own UI."""
    return uri.startswith(("http://", "https://"))


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` or `models:/name/3` -> (name, alias, version)."""
    match = MODEL_URI.match(uri)
    if match is None:
        raise ConfigError(f"model URI {uri!r} must look like models:/<name>@<alias> or "
                          f"models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


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


def uri_source(uri: str | None) -> str:
    """Where a command's store came from: --tracking-uri, MLFLOW_TRACKING_URI or default."""
    if uri:
        return "--tracking-uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "default"


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


def local_store_missing(uri: str) -> Path | None:
    """The path of a local store (SQLite file or file-store folder) that does not exist yet;
    None when it exists or the store is a server or database."""
    db = sqlite_path(uri)
    if db is not None:
        return None if db.is_file() and db.stat().st_size > 0 else db
    folder = file_store_path(uri)
    return None if folder is None or folder.is_dir() else folder


def default_artifact_root(uri: str) -> Path | None:
    """`<dir of mlflow.db>/artifacts` for a SQLite store; None where a server owns artifacts."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / "artifacts"


def experiment_location(uri: str, name: str) -> str | None:
    """A new experiment's artifact folder in a SQLite store (`artifacts/<name>`, as a file
    URI); None where the server decides (--artifacts-destination / --default-artifact-root)."""
    root = default_artifact_root(uri)
    if root is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
    return (root / slug).resolve().as_uri()


def ui_command(uri: str) -> str:
    """The command that serves this store's UI (`mlflow ui ...`); for a server, its URL."""
    root = default_artifact_root(uri)
    if is_server(uri):
        return uri
    if root is None:
        return f"mlflow ui --backend-store-uri {uri}"
    return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root}"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The experiment's (or run's) page in machine-learning mode: MLflow 3.17 opens an
    experiment as GenAI unless the URL says `workflowType=machine_learning` (or the experiment
    carries `mlflow.experimentKind`, which `pipelines.tracking.prepare_store` sets)."""
    base = uri.rstrip("/") if is_server(uri) else LOCAL_UI
    page = f"{base}/#/experiments/{experiment_id}"
    return f"{page}/runs/{run_id}?{ML_QUERY}" if run_id else f"{page}?{ML_QUERY}"


def ui_links(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """What a command that wrote runs prints last: how to open the UI, the experiment and run."""
    lines = [] if is_server(uri) else [f"browse the runs: {ui_command(uri)}"]
    lines.append(f"experiment: {ui_url(uri, experiment_id)}")
    if run_id:
        lines.append(f"run:        {ui_url(uri, experiment_id, run_id)}")
    return "\n".join(lines)


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
