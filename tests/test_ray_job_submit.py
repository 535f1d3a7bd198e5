"""`ray job submit` through the real CLI against a head started here with `ray start --head`,
with token authentication on and off, following the README's commands.

Both heads get a HOME of their own in which `ray get-auth-token --generate` wrote
`~/.ray/auth_token` (what a first local `ray.init()` leaves behind, and what turns token auth
on for a later `ray start --head` when RAY_AUTH_MODE is unset). The README has head and client
agree through one exported variable: RAY_AUTH_MODE=token (the token read from that file by
both) or RAY_AUTH_MODE=disabled (the file ignored). The head listens on loopback with free
ports and its own --temp-dir; the job's MLflow store is a temp SQLite URI passed with
--runtime-env-json. The head runs with --block so that terminating that one process stops
exactly the Ray processes it started (`ray stop` would stop every Ray on the machine);
leftovers under its temp dir are killed by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ray_jobs import common
from servers import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def _kill_leftovers(marker: str) -> None:
    """Kill (by pid) processes whose command line names our head's temp dir."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@pytest.fixture(scope="module", params=["token", "disabled"])
def ray_head(request, tmp_path_factory):
    temp = Path(tempfile.mkdtemp(prefix="vrh-", dir="/tmp"))  # short: Unix socket paths
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    gcs, dash, client, agent, agent_grpc, metrics, runtime_env = free_ports(7)
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": request.param,
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_JOB_STOP_WAIT_TIME_S": "30",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True, timeout=60)
    assert (home / ".ray" / "auth_token").is_file()
    log = open(temp / "head.log", "w")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", str(temp),
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(runtime_env), "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_jobs_api(address, env, head, temp)
        yield address, env, request.param
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        _kill_leftovers(str(temp))
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_jobs_api(address: str, env: dict, head, temp: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited: {(temp / 'head.log').read_text()[-3000:]}")
        done = subprocess.run([RAY, "job", "list", "--address", address], env=env,
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        time.sleep(2)
    raise TimeoutError(f"jobs API at {address} not up: {(temp / 'head.log').read_text()[-3000:]}")


def test_client_without_the_auth_mode_is_refused(ray_head):
    """The README's failure: a token file in ~/.ray turned auth on, the client did not say
    RAY_AUTH_MODE=token, so it sends no token (401). With auth disabled it is let in."""
    address, env, mode = ray_head
    unset = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([RAY, "job", "list", "--address", address], env=unset,
                          capture_output=True, text=True, timeout=60)
    if mode == "token":
        assert done.returncode != 0
        assert "401" in done.stdout + done.stderr or "nauthorized" in done.stdout + done.stderr
    else:
        assert done.returncode == 0, done.stdout + done.stderr


def test_ray_job_submit_tune_plg(ray_head, tmp_path):
    """The README's submit: a submission id and metadata, the job joins the head's cluster,
    the sweep's parent run is named and tagged after the job, the output is quiet."""
    address, env, mode = ray_head
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    job_id = f"vaplan-test-{mode}-{uuid.uuid4().hex[:6]}"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri, "RAY_USAGE_STATS_ENABLED": "0"}}
    submit = [RAY, "job", "submit", "--address", address, "--submission-id", job_id,
              "--metadata-json", json.dumps({"job_name": f"tune_plg sim-tiny {job_id}"}),
              "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
              "python", "-m", "ray_jobs.tune_plg", "--preset", "sim-tiny",
              "--storage-path", str(tmp_path / "ray"), "--name", "submitted",
              "--space", "plg.visual_threshold=0.040,0.041", "--space", "plg.visual_prompt=VP1",
              "--space", "plg.audio_threshold=0.038,0.039", "--space", "plg.audio_prompt=AP2"]
    done = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    logs = done.stdout[-4000:] + done.stderr[-2000:]
    status = subprocess.run([RAY, "job", "status", "--address", address, job_id], env=env,
                            capture_output=True, text=True, timeout=60)
    assert f"job '{job_id}' succeeded" in (status.stdout + status.stderr).lower(), \
        logs + status.stdout + status.stderr
    assert "ray: job cluster" in logs  # the driver joined the head, it did not start a Ray
    job_logs = subprocess.run([RAY, "job", "logs", "--address", address, job_id], env=env,
                              capture_output=True, text=True, timeout=60).stdout
    assert sum(line.startswith("[") and "/4] " in line for line in job_logs.splitlines()) == 4
    assert len(job_logs.splitlines()) < 30, job_logs  # quiet: a line per trial, a table, links

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("vaplan-sweeps")
    parent, = client.search_runs([exp.experiment_id], "tags.`vaplan.sweep_name` = 'submitted'")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == f"tune_plg sim-tiny {job_id}"
    assert parent.data.tags["ray.job_submission_id"] == job_id
    assert parent.data.tags["ray.job_name"] == f"tune_plg sim-tiny {job_id}"
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    assert all(run.info.status == "FINISHED" and common.TRIAL_TAG in run.data.tags
               and "plg/val/average" in run.data.metrics for run in children)
    assert {run.data.params["plg.audio_threshold"] for run in children} == {"0.038", "0.039"}
    assert parent.data.params["plg.visual_prompt"] == "VP1"
