"""Integrity of registered models: sha256 recorded at registration, verified on use.

Bad input first: digest helpers on plain files. Then one sim-tiny pipeline against a temp SQLite
store registers a champion; bytes are flipped inside the stored checkpoint (size kept) and in
the stored labels: `pull`, `evaluate_registered`, `mlflow.pyfunc.load_model` and the `vaplan
evaluate` CLI must refuse, naming the file and both digests, and `pull` must leave its
destination untouched. A clean model pulls and evaluates, and the version tags equal the
sha256 of the pulled files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.models import Model

from pipelines import commands
from pipelines.config import pipeline_config_from_preset
from pipelines.pipeline import run
from pipelines.pyfunc_model import VaplanHanModel
from vaplan.errors import IntegrityError, UserError
from vaplan.metrics import SCORE_KEYS
from vaplan.serving import (INTEGRITY_FILE, UnverifiedModelWarning, integrity_record,
                            verify_digests, verify_integrity_file)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "vaplan-han-integrity"
CHAMPION_URI = f"models:/{MODEL}@champion"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- bad input first: the digest helpers on plain files -------------------------------------

def test_verify_digests_names_file_and_both_digests(tmp_path):
    good = tmp_path / "han.pt"
    good.write_bytes(b"weights" * 1000)
    record = integrity_record({"checkpoint": good})
    want = record["files"]["checkpoint"]["sha256"]
    assert record["algorithm"] == "sha256" and want == sha256(good)
    assert record["files"]["checkpoint"]["name"] == "han.pt"
    verify_digests({"checkpoint": good}, {"checkpoint": want}, "model m v1",
                   {"checkpoint": "version tag"})  # unchanged: passes
    good.write_bytes(b"weightz" * 1000)
    with pytest.raises(IntegrityError) as err:
        verify_digests({"checkpoint": good}, {"checkpoint": want}, "model m v1",
                       {"checkpoint": "version tag vaplan.sha256.checkpoint"})
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "han.pt" in message and want in message and sha256(good) in message
    assert "vaplan.sha256.checkpoint" in message and "model m v1" in message
    with pytest.raises(IntegrityError, match="labels file .* missing"):
        verify_digests({}, {"labels": want}, "model m v1", {"labels": INTEGRITY_FILE})


def test_integrity_file_checks_every_listed_file(tmp_path):
    files = {}
    for key, name in (("checkpoint", "han.pt"), ("labels", "pld.parquet"),
                      ("config", "config.json")):
        files[key] = tmp_path / name
        files[key].write_bytes(name.encode() * 100)
    assert verify_integrity_file(files, "m") is False  # no integrity.json: nothing to check
    files["integrity"] = tmp_path / INTEGRITY_FILE
    files["integrity"].write_text(json.dumps(integrity_record(
        {k: v for k, v in files.items() if k != "integrity"})))
    assert verify_integrity_file(files, "m") is True
    files["config"].write_text("{}")
    with pytest.raises(IntegrityError, match=r"config file config\.json .*integrity\.json"):
        verify_integrity_file(files, "m")
    files["integrity"].write_text("{not json")
    with pytest.raises(IntegrityError, match="integrity.json is unreadable"):
        verify_integrity_file(files, "m")


def test_pyfunc_without_integrity_file_warns(tmp_path):
    """A model logged before digests were recorded loads with a warning (not an error)."""
    context = SimpleNamespace(artifacts={"checkpoint": str(tmp_path / "artifacts/missing.pt")},
                              model_config=None)
    with pytest.warns(UnverifiedModelWarning, match="not verified"):
        with pytest.raises(FileNotFoundError):  # the warning comes before the weights
            VaplanHanModel().load_context(context)


# --- a registered champion in a real SQLite store -------------------------------------------

@pytest.fixture(scope="module")
def result(store, dataset):
    cfg = pipeline_config_from_preset("sim-tiny", ["train.num_threads=1"], tracking_uri=store,
                                      model_name=MODEL, progress=False)
    return run(cfg, dataset=dataset)


@pytest.fixture(scope="module")
def stored(result):
    """artifact key -> the file in the artifact store that the champion's model bundles."""
    version = MlflowClient().get_model_version(MODEL, result.registration["version"])
    model_id = version.model_id or version.source.rsplit("/", 1)[-1]
    location = mlflow.get_logged_model(model_id).artifact_location
    folder = Path(location.removeprefix("file://"))
    listed = Model.load(str(folder)).flavors["python_function"]["artifacts"]
    files = {key: folder / entry["path"] for key, entry in listed.items()}
    assert files["checkpoint"].name == "han.pt" and files["checkpoint"].is_file()
    return files


@contextlib.contextmanager
def flipped(path: Path):
    """Invert 16 bytes in the middle of `path` (size kept); restore them afterwards."""
    original = path.read_bytes()
    middle = len(original) // 2
    tampered = bytearray(original)
    tampered[middle:middle + 16] = bytes(b ^ 0xFF for b in original[middle:middle + 16])
    path.write_bytes(bytes(tampered))
    assert path.stat().st_size == len(original)
    try:
        yield sha256(path)
    finally:
        path.write_bytes(original)


def test_version_tags_and_integrity_json_hold_the_digests(result, stored, tmp_path):
    version = MlflowClient().get_model_version(MODEL, result.registration["version"])
    digest_tags = {k: v for k, v in version.tags.items() if k.startswith("vaplan.sha256.")}
    assert set(digest_tags) == {"vaplan.sha256.checkpoint", "vaplan.sha256.labels"}
    bundled = json.loads(stored["integrity"].read_text())["files"]
    assert set(bundled) == {"checkpoint", "labels", "config"}
    dest = commands.pull(MODEL, str(tmp_path / "pulled"), alias="champion")
    assert digest_tags["vaplan.sha256.checkpoint"] == sha256(dest / "checkpoint.pt")
    assert digest_tags["vaplan.sha256.labels"] == sha256(dest / "labels.parquet")
    assert bundled["config"]["sha256"] == sha256(dest / "config.json")
    assert bundled["checkpoint"]["sha256"] == digest_tags["vaplan.sha256.checkpoint"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vaplan-pull-")]


def test_clean_model_pulls_and_evaluates(result, dataset, tmp_path):
    dest = tmp_path / "existing"
    dest.mkdir()
    (dest / "notes.txt").write_text("kept")
    commands.pull(MODEL, str(dest), alias="champion")
    assert {p.name for p in dest.iterdir()} == {"checkpoint.pt", "labels.parquet",
                                                "config.json", "version.json", "notes.txt"}
    scores = commands.evaluate_registered(CHAMPION_URI, "test", dataset=dataset)
    for key in SCORE_KEYS:
        assert scores[key] == pytest.approx(result.test_scores[key], abs=1e-4)


def test_flipped_checkpoint_is_refused_everywhere(result, stored, dataset, store, tmp_path):
    expected = json.loads(stored["integrity"].read_text())["files"]["checkpoint"]["sha256"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with flipped(stored["checkpoint"]) as actual:
        assert actual != expected
        with pytest.raises(IntegrityError) as err:
            commands.pull(MODEL, str(tmp_path / "new"), alias="champion")
        message = str(err.value)
        assert "han.pt" in message and expected in message and actual in message
        assert "vaplan.sha256.checkpoint" in message  # the registry's record is checked first
        assert not (tmp_path / "new").exists()
        with pytest.raises(IntegrityError, match="han.pt"):
            commands.pull(MODEL, str(existing), alias="champion")
        assert list(existing.iterdir()) == []  # nothing written, no staging left behind
        assert [p.name for p in tmp_path.iterdir()] == ["existing"]

        with pytest.raises(IntegrityError, match=f"expected {expected}.*actual {actual}"):
            commands.evaluate_registered(CHAMPION_URI, "test", dataset=dataset)
        with pytest.raises(IntegrityError, match=f"han.pt .*{actual}"):
            mlflow.pyfunc.load_model(CHAMPION_URI)

        cli = subprocess.run(
            [sys.executable, "-m", "vaplan.cli", "evaluate", "--model", CHAMPION_URI,
             "--tracking-uri", store], cwd=tmp_path, capture_output=True, text=True,
            timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert cli.returncode == 2, cli.stderr  # a UserError: one line, exit 2
        errors = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "sha256" in errors[0] and "han.pt" in errors[0]
        assert expected in errors[0] and actual in errors[0]
        assert "test/seg_a" not in cli.stdout  # refused before any number is printed
    commands.pull(MODEL, str(tmp_path / "restored"), alias="champion")  # clean again


def test_flipped_labels_are_refused(stored, dataset, tmp_path):
    expected = json.loads(stored["integrity"].read_text())["files"]["labels"]["sha256"]
    with flipped(stored["labels"]) as actual:
        with pytest.raises(IntegrityError) as err:
            commands.pull(MODEL, str(tmp_path / "new"), alias="champion")
        message = str(err.value)
        assert stored["labels"].name in message and expected in message and actual in message
        assert not (tmp_path / "new").exists()
        with pytest.raises(IntegrityError, match="labels file"):
            commands.evaluate_registered(CHAMPION_URI, "test", dataset=dataset)
        with pytest.raises(IntegrityError, match="labels file"):
            mlflow.pyfunc.load_model(CHAMPION_URI)


def test_version_tags_win_over_a_rewritten_integrity_json(stored, tmp_path):
    """Tampering with the file AND the bundled integrity.json is still caught by the tags."""
    original = stored["integrity"].read_text()
    with flipped(stored["checkpoint"]):
        files = {k: v for k, v in stored.items() if k != "integrity"}
        stored["integrity"].write_text(json.dumps(integrity_record(files)))
        try:
            mlflow.pyfunc.load_model(CHAMPION_URI)  # the bundled record alone is fooled
            with pytest.raises(IntegrityError, match="version tag vaplan.sha256.checkpoint"):
                commands.pull(MODEL, str(tmp_path / "new"), alias="champion")
        finally:
            stored["integrity"].write_text(original)


def test_version_without_digest_tags_warns_once_and_pulls(result, capsys, tmp_path):
    """A version registered before digests were recorded (no vaplan.sha256.* tags)."""
    client = MlflowClient()
    first = client.get_model_version(MODEL, result.registration["version"])
    old = client.create_model_version(MODEL, first.source, run_id=first.run_id)
    dest = commands.pull(MODEL, str(tmp_path / "old"), version=int(old.version))
    assert (dest / "checkpoint.pt").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "no vaplan.sha256.* tags" in warnings[0]
    assert "integrity.json only" in warnings[0]
