"""Stores that survive real use (real SQLite stores in tmp, real subprocesses, no mocks).

- read-only commands never create a store; a missing store, model, alias or version is one
  line naming the store searched and how to point elsewhere;
- any --tracking-uri works, including MLflow's own default (sqlite:///<cwd>/mlflow.db);
- processes creating a fresh store at the same moment wait on a file lock (two pipelines);
- runs of a dead process (SIGKILL) are marked KILLED by the next prepare_store; SIGTERM ends a
  pipeline's runs KILLED at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from servers import dead_pid

from pipelines import commands, tracking
from vaplan import runs as owner, store_uri
from vaplan.errors import StoreNotFoundError

PIPELINE = [sys.executable, "-m", "pipelines", "--preset", "sim-tiny", "--quiet",
            "--set", "train.num_threads=1"]


@pytest.fixture(autouse=True)
def no_store_env(monkeypatch):
    """No MLFLOW_TRACKING_URI from outside; this process's tracking URI restored afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(None)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    return env


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ------------------------------------------------------------ read-only commands

def test_read_only_commands_never_create_a_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreNotFoundError) as err:
        commands.evaluate_registered("models:/vaplan-han@champion")
    message = str(err.value)
    assert f"no MLflow store at {tmp_path.resolve()}/mlruns/mlflow.db (default:" in message
    assert "--tracking-uri" in message and "MLFLOW_TRACKING_URI" in message
    assert "\n" not in message
    with pytest.raises(StoreNotFoundError, match="no MLflow store at"):
        commands.pull("vaplan-han", str(tmp_path / "out"))
    missing = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    with pytest.raises(StoreNotFoundError, match=r"\(--tracking-uri: sqlite:///"):
        commands.logged_scores("vaplan-han", tracking_uri=missing)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/no-file-store")
    with pytest.raises(StoreNotFoundError, match=r"no-file-store \(MLFLOW_TRACKING_URI:"):
        tracking.open_existing_store()
    (tmp_path / "empty.db").touch()  # a zero-byte file is no store either
    with pytest.raises(StoreNotFoundError, match="empty.db"):
        tracking.open_existing_store(f"sqlite:///{tmp_path}/empty.db")
    assert tree(tmp_path) == ["empty.db"]


def test_missing_model_alias_or_version_names_what_exists(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.prepare_store(uri)
    with pytest.raises(StoreNotFoundError,
                       match=r"no registered model 'vaplan-han' in .*registered models: none"):
        tracking.open_existing_store(uri, "vaplan-han", "champion")
    client = MlflowClient(uri)
    client.create_registered_model("other")
    client.create_registered_model("vaplan-han")
    client.create_model_version("vaplan-han", source=(tmp_path / "model").as_uri())
    with pytest.raises(StoreNotFoundError, match=r"registered models: \['other', 'vaplan-han'\]"):
        tracking.open_existing_store(uri, "vaplan-hann", "champion")
    with pytest.raises(StoreNotFoundError, match=r"no alias 'champion' .*aliases: none"):
        tracking.open_existing_store(uri, "vaplan-han", "champion")
    with pytest.raises(StoreNotFoundError, match=r"no version 7 .*versions: \[1\]"):
        tracking.open_existing_store(uri, "vaplan-han", "champion", 7)
    client.set_registered_model_alias("vaplan-han", "candidate", "1")
    with pytest.raises(StoreNotFoundError, match=r"aliases: \{'candidate': 1\}"):
        tracking.open_existing_store(uri, "vaplan-han", "champion")
    assert tracking.open_existing_store(uri, "vaplan-han", "candidate") == uri
    assert tracking.open_existing_store(uri, "vaplan-han", None, "1") == uri


def test_vaplan_evaluate_in_an_empty_folder_is_one_line_and_leaves_it_empty(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vaplan.cli", "evaluate", "--model",
                           "models:/vaplan-han@champion"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert len(output) <= 5, output
    assert "no MLflow store at" in output[-1] and "--tracking-uri" in output[-1]
    assert tree(tmp_path) == []


# ------------------------------------------------------------ which store

def test_mlflow_default_uri_is_kept_for_later_calls(tmp_path, monkeypatch):
    """The cause of `--tracking-uri sqlite:///$PWD/mlflow.db` failing after registration:
    that is exactly what mlflow.get_tracking_uri() returns when nothing is set, so it was never
    exported, and the demo's pull then resolved to ./mlruns/mlflow.db."""
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(None)
    mlflow_default = mlflow.get_tracking_uri()
    assert mlflow_default == f"sqlite:///{tmp_path.resolve()}/mlflow.db"  # MLflow 3.17
    assert store_uri.resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert tracking.use_tracking_uri(mlflow_default) == mlflow_default
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_default
    assert store_uri.resolve_tracking_uri() == mlflow_default
    assert mlflow.get_registry_uri() == mlflow_default
    relative = store_uri.resolve_tracking_uri("sqlite:///mlflow.db?timeout=30")
    assert relative == f"sqlite:///{tmp_path.resolve()}/mlflow.db?timeout=30"
    assert tree(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("store, cwd, created", [
    ("x/mlflow.db", "cwd", []),
    # MLflow's own default, passed explicitly: the store lives in the cwd, ./mlruns is not made
    ("mlflow.db", ".", ["artifacts", "mlflow.db"]),
])
def test_any_tracking_uri_works_end_to_end(tmp_path, store, cwd, created):
    folder = tmp_path / cwd
    folder.mkdir(exist_ok=True)
    uri = f"sqlite:///{tmp_path / store}"
    proc = subprocess.run([*PIPELINE, "--tracking-uri", uri], cwd=folder, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-evaluation matches the numbers logged for v1: True" in proc.stdout
    top = sorted(name for name in os.listdir(folder) if not name.endswith(".lock"))
    assert top == created
    client = MlflowClient(uri)
    assert client.get_registered_model("vaplan-han").aliases["champion"] == 1


# ------------------------------------------------------------ fresh store, many processes

def _prepare_at(uri: str, start_at: float, experiment: str) -> str:
    time.sleep(max(0.0, start_at - time.time()))
    return tracking.prepare_store(uri, experiment)


@pytest.mark.slow  # ~20 s: four spawned interpreters importing mlflow
def test_prepare_store_on_a_fresh_store_from_many_processes(tmp_path):
    uri = f"sqlite:///{tmp_path}/s/mlflow.db"
    start_at = time.time() + 8  # every spawned process has imported mlflow by then
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.starmap(_prepare_at, [(uri, start_at, "vaplan")] * 4)
    assert len(set(ids)) == 1
    assert MlflowClient(uri).get_experiment_by_name("vaplan").experiment_id == ids[0]


@pytest.mark.slow
@pytest.mark.integration  # two real pipelines at once: ~2 min on 2 cores
def test_two_pipelines_started_together_on_a_fresh_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/s/mlflow.db"
    procs = [subprocess.Popen([*PIPELINE, "--tracking-uri", uri], cwd=tmp_path, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vaplan")
    parents = client.search_runs([experiment.experiment_id], "tags.`vaplan.pipeline` = 'parent'")
    assert sorted(run.info.status for run in parents) == ["FINISHED", "FINISHED"]
    assert {run.data.tags[owner.PID_TAG] for run in parents} == {str(p.pid) for p in procs}


# ------------------------------------------------------------ dead processes, signals

def test_prepare_store_marks_runs_of_dead_processes_killed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = tracking.prepare_store(uri)
    client = MlflowClient(uri)
    me, host = owner.process_tags(), socket.gethostname()
    cases = {
        "dead pid": {owner.HOST_TAG: host, owner.PID_TAG: str(dead_pid())},
        "pid reused": {**me, owner.PID_STARTED_TAG: "1000.00"},
        "other host": {owner.HOST_TAG: host + "-elsewhere", owner.PID_TAG: str(dead_pid())},
        "alive": me,
        "no owner": {},  # a run made outside the project: left alone
        "bad pid": {owner.HOST_TAG: host, owner.PID_TAG: "x"},
    }
    runs = {name: client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
            for name, tags in cases.items()}
    again = tracking.prepare_store(uri)  # the next pipeline or sweep opening the experiment
    assert again == experiment_id
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"dead pid": "KILLED", "pid reused": "KILLED", "other host": "RUNNING",
                      "alive": "RUNNING", "no owner": "RUNNING", "bad pid": "RUNNING"}
    assert "is gone" in client.get_run(runs["dead pid"]).data.tags[owner.KILLED_TAG]
    assert tracking.mark_dead_runs(experiment_id) == []  # nothing left to mark


def test_runs_record_their_process_and_end_killed_on_a_signal(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = tracking.prepare_store(uri)
    # Earlier tests in this process (ray.init) may have installed their own SIGTERM handler,
    # which stop_on_signals rightly keeps: start from Python's default so the signal this test
    # sends to itself reaches our handler and never the test runner.
    outside = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(owner.Terminated) as stopped:
            with owner.stop_on_signals():
                with tracking.start_run(experiment_id, run_name="parent") as parent:
                    with tracking.start_child_run(parent.info.run_id, experiment_id) as child:
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(5)  # the handler raises before this ends
        assert stopped.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, outside)
    client = MlflowClient(uri)
    for run_id in (parent.info.run_id, child.info.run_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[owner.PID_TAG] == str(os.getpid())
        assert run.data.tags[owner.HOST_TAG] == socket.gethostname()
        assert run.data.tags[owner.KILLED_TAG] == "stopped by SIGTERM"
    with pytest.raises(RuntimeError):
        with tracking.start_run(experiment_id, run_name="fails") as failed:
            raise RuntimeError("boom")
    assert client.get_run(failed.info.run_id).info.status == "FAILED"


def _train_running(db: Path) -> bool:
    """Read the database directly: an MLflow client here would race the subprocess creating
    the schema (exactly the race prepare_store's lock prevents between pipelines)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return bool(conn.execute(
                "SELECT 1 FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid WHERE "
                "tags.key = 'vaplan.step' AND tags.value = 'train' AND runs.status = 'RUNNING'"
            ).fetchall())
    except sqlite3.Error:  # not created yet
        return False


def _start_pipeline_until_training(tmp_path: Path, uri: str):
    """A pipeline subprocess (long training) and the client, once its train run is RUNNING."""
    proc = subprocess.Popen([*PIPELINE, "--tracking-uri", uri, "--set", "train.epochs=200"],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    db, deadline = Path(uri[len("sqlite:///"):]), time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if db.is_file() and _train_running(db):
            client = MlflowClient(uri)
            return proc, client, client.get_experiment_by_name("vaplan").experiment_id
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"train never ran: {proc.communicate()[1][-3000:]}")


def _statuses(client, experiment_id: str) -> dict[str, str]:
    runs = client.search_runs([experiment_id], "")
    return {run.data.tags.get("vaplan.step", run.data.tags.get("vaplan.pipeline")):
            run.info.status for run in runs}


@pytest.mark.slow
def test_sigkilled_pipeline_runs_are_killed_by_the_next_one(tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    proc, client, experiment_id = _start_pipeline_until_training(tmp_path, uri)
    proc.kill()
    proc.wait(timeout=60)
    assert _statuses(client, experiment_id) == {"parent": "RUNNING",
                                                "generate_labels": "FINISHED",
                                                "train": "RUNNING"}
    tracking.prepare_store(uri)  # what the next pipeline or sweep does first
    assert _statuses(client, experiment_id) == {"parent": "KILLED",
                                                "generate_labels": "FINISHED",
                                                "train": "KILLED"}


@pytest.mark.slow
def test_sigterm_ends_a_pipelines_runs_killed_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    proc, client, experiment_id = _start_pipeline_until_training(tmp_path, uri)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert _statuses(client, experiment_id) == {"parent": "KILLED",
                                                "generate_labels": "FINISHED",
                                                "train": "KILLED"}
