"""A tiny pipeline against a real `mlflow server` subprocess over HTTP (no mocks).

The server runs on a free 127.0.0.1 port with a temp SQLite backend and a temp
`--artifacts-destination`; results are read back through MlflowClient; the server is always
stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines import commands, tracking
from servers import free_port, stop_process_group
from pipelines.config import STEP_NAMES, pipeline_config_from_preset
from pipelines.pipeline import run
from vaplan.metrics import SCORE_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "vaplan-han-server-test"
START_TIMEOUT_S = 90


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {START_TIMEOUT_S}s:\n"
                       f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port, log = free_port(), root / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # MLflow 3 servers start ~6 background "huey" job workers (~300 MB each); not needed here.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(log, "w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                  cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, log)
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            yield url, root
            mlflow.set_tracking_uri(None)
    finally:
        stop_process_group(server, grace_s=20, kill_wait_s=10)  # it forks workers


def test_pipeline_over_http(server_uri):
    url, root = server_uri
    overrides = ["train.epochs=1", "train.num_threads=1"]
    cfg = pipeline_config_from_preset("sim-tiny", overrides, tracking_uri=url, model_name=MODEL,
                                      progress=False)
    result = run(cfg)
    assert result.tracking_uri == url and mlflow.get_tracking_uri() == url

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    children = tracking.child_runs(result.parent_run_id, result.experiment_id)
    assert [r.info.run_name for r in children] == list(STEP_NAMES)
    assert {f"test/{k}" for k in SCORE_KEYS} <= set(parent.data.metrics)
    retrain = next(r for r in children if r.info.run_name == "retrain")
    history = client.get_metric_history(retrain.info.run_id, "epoch/val_seg_type")
    assert [m.step for m in history] == [1]
    names = {item.path for item in client.list_artifacts(retrain.info.run_id, "checkpoint")}
    assert names == {"checkpoint/han.pt"}
    assert any((root / "artifacts").rglob("han.pt"))  # proxied into --artifacts-destination

    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == result.registration["version"]
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"candidate": str(version.version), "champion": str(version.version)}
    scores = commands.evaluate_registered(f"models:/{MODEL}@champion", "test", tracking_uri=url)
    assert scores == pytest.approx(result.test_scores, abs=1e-4)
