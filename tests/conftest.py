"""Shared test setup: offline Hugging Face, repo root importable (benchmarks oracle)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import contextlib  # noqa: E402
import secrets  # noqa: E402

import pytest  # noqa: E402


@contextlib.contextmanager
def fresh_sqlite_store(root: Path):
    """`sqlite:///<root>/mlruns/mlflow.db` with MLFLOW_TRACKING_URI unset; MLflow's
    process-wide tracking URI is reset afterwards (so later tests start clean)."""
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            yield f"sqlite:///{root}/mlruns/mlflow.db"
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite store URI per test module (MLflow's URI reset afterwards)."""
    with fresh_sqlite_store(tmp_path_factory.mktemp("store")) as uri:
        yield uri


@pytest.fixture(scope="module")
def dataset(sim_tiny):
    return sim_tiny


@pytest.fixture(scope="module")
def sim_tiny():
    """The sim-tiny Dataset, built once per test module."""
    from vaplan.config import get_preset
    from vaplan.data.dataset import load_dataset

    return load_dataset(get_preset("sim-tiny").data)


# One Ray auth token for every in-process Ray test: a driver keeps the token it read first for
# the life of the process, so a later test with a fresh token would start a GCS the driver
# cannot talk to (InvalidAuthToken).
RAY_TEST_TOKEN = secrets.token_hex(32)


@pytest.fixture(scope="module")
def roberta_stand_in(tmp_path_factory):
    """Redirect laion_clap's two `from_pretrained('roberta-base')` calls to a tiny local copy
    (vaplan.teachers.synthetic.use_tiny_roberta); undone after the module."""
    from vaplan.teachers.synthetic import use_tiny_roberta, write_tiny_roberta

    folder = write_tiny_roberta(tmp_path_factory.mktemp("roberta"))
    patch = pytest.MonkeyPatch()
    use_tiny_roberta(folder, patch)
    yield folder
    patch.undo()
