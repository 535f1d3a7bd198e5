"""Helpers for tests that start real servers on loopback (MLflow, PostgreSQL, Ray)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys


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
