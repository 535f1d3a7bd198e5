"""`vaplan doctor`'s service checks that need neither MLflow nor Ray (docs/real-data.md): a
SQLite store not created yet, and the Ray cluster probed over the network (no `import ray`).
Asking an existing store is `pipelines.doctor`."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from vaplan.doctor import Check
from vaplan.store_uri import sqlite_path

TIMEOUT_S = 5.0
# A down server answers in seconds, not after MLflow's default retries with backoff (minutes).
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(TIMEOUT_S))}


def new_sqlite_store(resolved: str) -> Check | None:
    """A SQLite store that does not exist yet: can `vaplan run` create it? None for an
    existing one or another kind of store (ask it)."""
    db = sqlite_path(resolved)
    if db is None or db.is_file():
        return None
    parent = next((p for p in [db.parent, *db.parent.parents] if p.exists()), Path("/"))
    if os.access(parent, os.W_OK):
        return Check("tracking store", "ok", f"{resolved}: not created yet; vaplan run "
                                             f"creates it (writable {parent})")
    return Check("tracking store", "fail", f"{resolved}: {parent} is not writable; pass "
                                           f"--tracking-uri or set MLFLOW_TRACKING_URI")


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
