"""`vaplan doctor`'s service checks: the MLflow tracking store and, for sweeps, Ray.

Nothing is created: a SQLite store that does not exist yet is reported with where `vaplan run`
will create it; a server is asked for one experiment; Ray is probed over the network only
(no `import ray`, no cluster started). The data checks are `vaplan.doctor`.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

from vaplan.doctor import Check

TIMEOUT_S = 5.0
# A down server answers in seconds, not after MLflow's default retries with backoff (minutes).
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(TIMEOUT_S))}


def check_tracking(uri: str | None = None) -> Check:
    """Can `vaplan run` use the tracking store (`--tracking-uri`, MLFLOW_TRACKING_URI, default)?"""
    from pipelines import tracking

    resolved = tracking.resolve_tracking_uri(uri)
    db = tracking.sqlite_path(resolved)
    if db is not None:
        if db.is_file():
            return _ask_store(resolved, f"SQLite {db}")
        parent = next((p for p in [db.parent, *db.parent.parents] if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check("tracking store", "ok", f"{resolved}: not created yet; vaplan run "
                                                 f"creates it (writable {parent})")
        return Check("tracking store", "fail", f"{resolved}: {parent} is not writable; pass "
                                               f"--tracking-uri or set MLFLOW_TRACKING_URI")
    return _ask_store(resolved, resolved)


def _ask_store(resolved: str, what: str) -> Check:
    """One read request against an existing store (or a server)."""
    from mlflow import MlflowClient

    quick = {name: value for name, value in _QUICK_HTTP.items() if not os.environ.get(name)}
    try:
        with mock.patch.dict(os.environ, quick):  # the user's own settings win; restored after
            found = MlflowClient(tracking_uri=resolved).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure: the run cannot use this store
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return Check("tracking store", "fail", f"{what}: not reachable ({first})")
    return Check("tracking store", "ok", f"{what}: reachable ({len(found)} experiment(s) listed)")


def check_ray(address: str | None = None) -> Check:
    """Is the Ray cluster a sweep will join reachable? (RAY_ADDRESS; none: a local one starts)."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address or address == "local":
        return Check("ray", "ok", f"no RAY_ADDRESS: the sweep starts a local Ray "
                                  f"({os.cpu_count()} CPUs here)")
    if address == "auto":
        return Check("ray", "ok", "RAY_ADDRESS=auto: joins a head on this machine if one runs, "
                                  "else starts a local one")
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    if parsed.scheme in ("http", "https"):  # the dashboard / job server
        try:
            with urllib.request.urlopen(f"{address.rstrip('/')}/api/version",
                                        timeout=TIMEOUT_S) as reply:
                return Check("ray", "ok", f"{address}: job server answers ({reply.status})")
        except (urllib.error.URLError, OSError) as err:
            return Check("ray", "fail", f"{address}: no answer ({err}); start the cluster or "
                                        f"fix RAY_ADDRESS")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            pass
    except OSError as err:
        return Check("ray", "fail", f"{address}: cannot connect to {host}:{port} ({err}); start "
                                    f"the cluster or fix RAY_ADDRESS")
    return Check("ray", "ok", f"{address}: {host}:{port} accepts connections")


def check_services(tracking_uri: str | None = None, sweep: bool = False) -> list[Check]:
    """The tracking store, plus Ray when the run is a sweep."""
    checks = [check_tracking(tracking_uri)]
    if sweep:
        checks.append(check_ray())
    return checks
