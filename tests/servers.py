"""Helpers for tests that start real servers on loopback (MLflow, PostgreSQL, Ray)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open until chosen)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20, kill_wait_s: float = 30) -> None:
    """SIGTERM the process group of a server started with start_new_session, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=kill_wait_s)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (for runs of dead processes)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def mlflow_server(root: Path, backend_uri: str, *store_args: str,
                  start_timeout_s: float = 90,
                  extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A real `mlflow server` on a free 127.0.0.1 port over `backend_uri` (`store_args` e.g.
    `--artifacts-destination DIR`), log in root/server.log; yields its URL once /health
    answers; always stopped. MLflow 3 servers start ~6 background "huey" job workers
    (~300 MB each): off here (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false). `extra_env` is added
    to the server's environment (which has no other MLFLOW_* variable)."""
    port, log = free_port(), Path(root) / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--backend-store-uri", backend_uri, *store_args, "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(extra_env or {})
    with open(log, "w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                  cwd=root, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + start_timeout_s
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {server.returncode}:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server at {url} not healthy after "
                                       f"{start_timeout_s}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(server, grace_s=20, kill_wait_s=10)  # it forks workers


@contextlib.contextmanager
def mlflow_auth_server(root: Path, admin_password: str, *store_args: str,
                       default_permission: str = "NO_PERMISSIONS",
                       start_timeout_s: float = 300) -> Iterator[str]:
    """`mlflow_server` with MLflow's basic-auth app (`--app-name basic-auth`) as
    docker/compose.yaml runs it: a SQLite backend and auth database in `root`, the admin
    account `admin` with `admin_password` (from the environment, not the file), a Flask secret
    key, `default_permission` for accounts without a grant. Yields the URL."""
    root = Path(root)
    config = root / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = {default_permission}\n"
                      "auth_cache_ttl_seconds = 60\n"  # as docker/compose.yaml
                      f"database_uri = sqlite:///{root / 'basic_auth.db'}\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    with mlflow_server(root, f"sqlite:///{root / 'mlflow.db'}", "--app-name", "basic-auth",
                       *store_args, start_timeout_s=start_timeout_s, extra_env=env) as url:
        yield url
