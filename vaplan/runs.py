"""Who owns a tracked run, stopping on signals, readable run names; without MLflow.

Every run records its host, pid and process start time; a RUNNING run whose process is gone
is set KILLED by `pipelines.tracking.mark_dead_runs`, and SIGTERM/SIGINT end open runs KILLED
(docs/pipelines.md "Stores that survive real use").
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Iterator, Mapping

HOST_TAG, PID_TAG, PID_STARTED_TAG = "vaplan.host", "vaplan.pid", "vaplan.pid_started"
KILLED_TAG = "vaplan.killed"  # why a run was set KILLED (dead process, signal)


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


def owner_gone(tags: Mapping[str, str], run_started: float) -> str | None:
    """Why a RUNNING run of this host is dead ("process <pid> on <host> is gone"), or None
    while its owner runs (or its tags name no pid). `run_started`: epoch seconds."""
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return None
    started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
    if process_alive(pid, started, run_started):
        return None
    return f"process {pid} on {socket.gethostname()} is gone"


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


def short_name(*parts: str, run_id: str, limit: int = 120) -> str:
    """A readable run name: the non-empty parts and the run id's first 4 characters, e.g.
    `sim-small train.lr=1e-3 3f2a` (long part lists are cut at `limit` characters)."""
    text = " ".join(part for part in parts if part)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{text} {run_id[:4]}".strip()
