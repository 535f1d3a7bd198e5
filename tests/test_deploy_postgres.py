"""The cluster's tracking configuration, proven on this machine (docs/deploy.md).

A real PostgreSQL (scripts/postgres_local.sh, loopback only) behind a real `mlflow server`
with artifacts served through the server and `--allowed-hosts` set as in docker/compose.yaml.
Eight trial PROCESSES (tests/deploy_writer.py) log concurrently; afterwards every run and every
metric point must be there. The same eight writers then run against an embedded SQLite store
that the tracking code creates before any writer starts (MLflow's schema creation races when
several processes create a fresh database at once).

Everything started here is stopped by the fixtures, also on failure. Needs the Debian package
`postgresql` (installed by the script when missing, as root) and the `psycopg` driver.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PG_SCRIPT = REPO / "scripts" / "postgres_local.sh"
WRITER = REPO / "tests" / "deploy_writer.py"
sys.path.insert(0, str(REPO / "tests"))
import deploy_writer  # noqa: E402
from servers import free_port, stop_process_group  # noqa: E402

N_WRITERS = 8
STEPS = 30  # x 4 score keys = 120 metric points per trial
SERVICE_HOST = "mlflow:5000"  # the compose service name, as other containers send it
SERVER_START_S = 180
WRITERS_S = 240

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _restore_mlflow_globals(monkeypatch):
    """pipelines.tracking points this process (and its environment) at each test's store:
    put both back so later tests in the session see what they saw before."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    saved = tracking_utils._tracking_uri
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(saved)


def _compose_allowed_hosts() -> str:
    """`--allowed-hosts` of the mlflow service in docker/compose.yaml, without ${...} extras."""
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    flag = next(a for a in compose["services"]["mlflow"]["command"]
                if a.startswith("--allowed-hosts="))
    hosts = flag.split("=", 1)[1].split(",")
    return ",".join(h for h in hosts if "${" not in h)


def _http_status(port: int, path: str, host: str) -> int:
    """GET `path` on 127.0.0.1:`port` with an explicit Host header; return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def _require_pg_driver() -> None:
    try:
        import psycopg  # noqa: F401  SQLAlchemy 2.1's default driver for postgresql://
    except ImportError:
        pytest.fail("the PostgreSQL driver is missing: pip install 'psycopg[binary]' (project dependency)")


@pytest.fixture(scope="module")
def postgres_uri():
    _require_pg_driver()
    out = subprocess.run(
        ["bash", str(PG_SCRIPT), "start"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"postgres_local.sh start failed:\n{out.stderr}"
    info = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    try:
        yield info["PGLOCAL_URI"]
    finally:
        subprocess.run(
            ["bash", str(PG_SCRIPT), "stop", info["PGLOCAL_DIR"]], timeout=120, check=False
        )


@pytest.fixture(scope="module")
def mlflow_server(postgres_uri, tmp_path_factory):
    """`mlflow server` on PostgreSQL with a local artifacts destination served through it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", postgres_uri,
        "--artifacts-destination", str(artifacts),
        "--serve-artifacts",
        "--allowed-hosts", _compose_allowed_hosts(),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "2",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"mlflow server exited:\n{(root / 'server.log').read_text()}"
            try:
                if _http_status(port, "/health", "127.0.0.1") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server not healthy in time"
            time.sleep(1.0)
        yield {"uri": f"http://127.0.0.1:{port}", "port": port, "artifacts": artifacts}
    finally:
        stop_process_group(proc, grace_s=10, kill_wait_s=30)
        log.close()


def _run_writers(uri: str, experiment_id: str, parent_run_id: str) -> list[str]:
    """Start N_WRITERS trial processes at once; wait for all; return their run ids."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), "--uri", uri, "--experiment-id", experiment_id,
             "--parent-run-id", parent_run_id, "--trial", str(trial), "--steps", str(STEPS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        for trial in range(N_WRITERS)
    ]
    deadline = time.monotonic() + WRITERS_S
    run_ids, errors = [], []
    try:
        for trial, proc in enumerate(procs):
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                errors.append(f"trial {trial} exited {proc.returncode}:\n{err[-3000:]}")
                continue
            run_ids.append(out.strip().splitlines()[-1].removeprefix("RUN_ID="))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert not errors, "\n".join(errors)
    return run_ids


def _assert_nothing_lost(uri: str, experiment_id: str, parent_run_id: str, run_ids: list[str]) -> int:
    """Every child run is there, nested under the parent, with every point; return the count."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in client.search_runs([experiment_id], max_results=1000)}
    assert set(runs) == {parent_run_id, *run_ids}, "runs missing or unexpected"
    points = 0
    for run_id in run_ids:
        run = runs[run_id]
        assert run.info.status == "FINISHED", f"{run_id}: {run.info.status}"
        assert run.data.tags.get("mlflow.parentRunId") == parent_run_id
        trial = int(run.data.params["trial"])
        for key in deploy_writer.SCORE_KEYS:
            history = client.get_metric_history(run_id, f"{deploy_writer.PREFIX}/{key}")
            got = sorted((m.step, m.value) for m in history)
            want = [(s, deploy_writer.expected_scores(trial, s)[key]) for s in range(STEPS)]
            assert got == want, f"trial {trial} {key}: {len(got)} of {STEPS} points, or wrong values"
            points += len(history)
    assert points == N_WRITERS * STEPS * len(deploy_writer.SCORE_KEYS)
    return points


def _concurrent_trials(uri: str, experiment: str) -> int:
    """The driver's part: store and experiment first, a parent run, then the trial processes."""
    from pipelines import tracking
    from vaplan import store_uri

    experiment_id = tracking.prepare_store(uri, experiment)
    db = store_uri.sqlite_path(uri)
    assert db is None or db.exists(), "prepare_store must create the SQLite store up front"
    with tracking.start_run(experiment_id, run_name="sweep") as parent:
        parent_run_id = parent.info.run_id
        run_ids = _run_writers(uri, experiment_id, parent_run_id)
    assert len(run_ids) == N_WRITERS
    return _assert_nothing_lost(uri, experiment_id, parent_run_id, run_ids)


def test_server_health_and_allowed_hosts(mlflow_server):
    port = mlflow_server["port"]
    api = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _http_status(port, "/health", SERVICE_HOST) == 200
    assert _http_status(port, api, SERVICE_HOST) == 200
    assert _http_status(port, api, "evil.example.com") == 403
    # /health is exempt from host validation: a 200 there says nothing about the allow-list.
    assert _http_status(port, "/health", "evil.example.com") == 200


def test_postgres_server_concurrent_trials_lose_nothing(mlflow_server):
    points = _concurrent_trials(mlflow_server["uri"], "deploy-postgres")
    print(f"postgres server: {N_WRITERS} trials, {points} metric points, none lost")


def test_artifacts_and_registry_promotion_over_http(mlflow_server, tmp_path):
    """Artifacts go through the server; the registry gate moves aliases over HTTP."""
    import mlflow

    from pipelines import registry, tracking

    uri = mlflow_server["uri"]
    experiment_id = tracking.prepare_store(uri, "deploy-registry")
    client = tracking.client()
    name = "vaplan-han-deploy-test"
    client.create_registered_model(name)
    decisions, scores = [], (50.0, 60.0, 55.0)
    for score in scores:
        with tracking.start_run(experiment_id, run_name=f"pipeline-{score:.0f}") as run:
            tracking.log_scores({"seg_type": score}, prefix="val/")
            model_dir = tmp_path / f"model-{score:.0f}"
            model_dir.mkdir()
            (model_dir / "config.json").write_text(f'{{"score": {score}}}')
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
        run_id = run.info.run_id
        # Stored by the server under its --artifacts-destination, read back over HTTP.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        stored = Path(mlflow_server["artifacts"]).rglob("config.json")
        assert any(f'"score": {score}' in p.read_text() for p in stored)
        got = client.download_artifacts(run_id, "model/config.json", str(tmp_path))
        assert Path(got).read_text() == f'{{"score": {score}}}'
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
        decisions.append(registry.apply_promotion_gate(  # one score per "video", 3 videos
            name, version.version, np.full(3, score),
            champion_scores=lambda held: np.full(3, scores[int(held) - 1])))

    assert [d.promoted for d in decisions] == [True, True, False]
    assert registry.resolve_version(name, registry.CHAMPION).version == "2"
    assert registry.resolve_version(name, registry.CANDIDATE).version == "3"
    tags = client.get_model_version(name, "3").tags
    assert tags["vaplan.promotion.decision"] == "kept"


def test_sqlite_fresh_store_concurrent_trials_lose_nothing(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    assert not db.exists()
    points = _concurrent_trials(uri, "deploy-sqlite")
    print(f"fresh sqlite: {N_WRITERS} trials, {points} metric points, none lost")
