"""Plain functions behind `vaplan pull` and `vaplan evaluate` (docs/pipelines.md "Downstream
use"); `vaplan run` is `pipelines.pipeline.run_and_check`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from unittest import mock

import mlflow
from mlflow.models import Model

from pipelines import registry, tracking
from vaplan.config import ExperimentConfig, from_dict
from vaplan.data.types import Dataset
from vaplan.io import read_json, write_json
from vaplan.metrics import avvp_scores
from vaplan.serving import UnverifiedModelWarning, events_from_frame, model_input
from vaplan.store_uri import parse_model_uri

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
PULLED_FILES = {"checkpoint": "checkpoint.pt", "labels": "labels.parquet",
                "config": "config.json"}


@tracking.auth_errors()  # a server's 401/403: one line (docs/deploy.md)
def pull(model: str, dest: str, alias: str | None = "champion", version: int | None = None,
         tracking_uri: str | None = None) -> Path:
    """Write a registered version's checkpoint.pt, labels.parquet (the labels it was trained
    on: its label table, stage video/ma/plg/pld, or AVE's PLG labels), config.json and
    version.json (name, version, aliases, tags) into `dest`.

    `version` wins over `alias`. Every file is checked against the sha256 recorded at
    registration first (IntegrityError names the file and both digests); on any failure
    nothing is written into `dest`. Returns the destination folder.
    """
    found = registry.open_version(tracking_uri, model, alias, version)  # never creates one
    dest_dir = Path(dest)
    existed = dest_dir.is_dir()
    stage = _stage_dir(dest_dir if existed else dest_dir.parent)
    try:
        _, files = _download_verified(model, found, stage / "model")
        out = stage / "out"
        out.mkdir()
        for key, target in PULLED_FILES.items():
            shutil.copyfile(files[key], out / target)
        write_json(out / "version.json", {
            "model_name": model, "version": str(found.version), "aliases": list(found.aliases),
            "run_id": found.run_id, "source": found.source, "tags": dict(found.tags)})
        if existed:  # one os.replace per file, all verified
            for path in out.iterdir():
                path.replace(dest_dir / path.name)
        else:
            out.rename(dest_dir)  # the whole folder at once
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest_dir


def _stage_dir(parent: Path) -> Path:
    """A fresh hidden folder in `parent` (same file system as the destination; mode follows
    the umask, unlike tempfile's 0700)."""
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".vaplan-pull-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    return stage


def _download_verified(model: str, found, dst: Path) -> tuple[Path, dict[str, Path]]:
    """Download version `found` of `model` into `dst` and check its files' sha256 against the
    version tags and integrity.json (IntegrityError on a mismatch); returns the model folder
    and artifact key -> path (checkpoint, labels, config[, integrity]) as its MLmodel lists."""
    number = str(found.version)
    with no_progress_bar():  # keeps stdout/stderr of `vaplan evaluate` to its numbers
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{number}", dst_path=str(dst)))
    listed = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
    files = {key: local / entry["path"] for key, entry in listed.items()}
    missing = set(PULLED_FILES) - {key for key, path in files.items() if path.is_file()}
    if missing:
        raise FileNotFoundError(f"model {model} v{number}: artifacts {sorted(missing)} are "
                                f"missing; found {sorted(files)}")
    registry.verify_version(found, files)
    return local, files


def no_progress_bar():
    """Hide MLflow's per-file download bar (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR) for a block."""
    return mock.patch.dict(os.environ, {PROGRESS_BAR: "false"})


def _load_split(model, split: str, dataset: Dataset | None):
    """The split named by the model's recorded dataset config (rebuilt unless given)."""
    from vaplan.data.dataset import load_dataset

    python_model = model.unwrap_python_model()
    record = python_model.record
    if dataset is None:
        experiment: ExperimentConfig = from_dict(ExperimentConfig, record["experiment"])
        dataset = load_dataset(experiment.data)
    expected = record.get("dataset", {}).get("digest")
    if expected and dataset.digest != expected:
        print(f"warning: dataset digest {dataset.digest[:12]} differs from the one the model "
              f"recorded ({expected[:12]}); scores may not match the logged ones",
              file=sys.stderr)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return getattr(dataset, split)


@tracking.auth_errors()  # a server's 401/403: one line (docs/deploy.md)
def evaluate_registered(model_uri: str, split: str = "test", tracking_uri: str | None = None,
                        dataset: Dataset | None = None) -> dict[str, float]:
    """Load a registered pyfunc (`models:/vaplan-han@champion` or `models:/vaplan-han/3`), run
    it on `split` of the dataset recorded in its config, and return the ten AVVP scores.

    The model's events already follow the official protocol (p_seg >= 0.5 and p_video >= 0.5).
    The checkpoint and labels are checked against the version's sha256 tags and the model's
    integrity.json before the weights are loaded (IntegrityError on a mismatch).
    `dataset` skips rebuilding it (it must be the recorded one; its digest is checked).
    """
    name, alias, version = parse_model_uri(model_uri)
    found = registry.open_version(tracking_uri, name, alias, version)
    with tempfile.TemporaryDirectory(prefix="vaplan-evaluate-") as tmp:
        local, _ = _download_verified(name, found, Path(tmp))  # before the weights are read
        with warnings.catch_warnings():  # _download_verified already warned about old models
            warnings.simplefilter("ignore", UnverifiedModelWarning)
            model = mlflow.pyfunc.load_model(str(local))
        data = _load_split(model, split, dataset)
        if data.gt_audio is None or data.gt_visual is None or data.features is None:
            raise ValueError(f"split {split!r} has no features or segment ground truth")
        frame = model.predict(model_input(data.video_ids, data.features))
    audio = events_from_frame(frame, data.video_ids, "audio_events")
    visual = events_from_frame(frame, data.video_ids, "visual_events")
    return avvp_scores(audio, visual, data.gt_audio, data.gt_visual)


@tracking.auth_errors()  # a server's 401/403: one line (docs/deploy.md)
def logged_scores(model: str, alias: str | None = "champion", version: int | None = None,
                  split: str = "test", tracking_uri: str | None = None) -> dict[str, float]:
    """The `split` scores recorded at registration (registration.json of the version's run;
    versions registered before that record held them: their `<split>/<score>` tags)."""
    found = registry.open_version(tracking_uri, model, alias, version)
    recorded = registry.version_record(found).get("scores", {}).get(split)
    if recorded is not None:
        return {key: float(value) for key, value in recorded.items()}
    prefix = f"{split}/"
    return {key[len(prefix):]: float(value) for key, value in found.tags.items()
            if key.startswith(prefix)}


def read_pulled_config(folder: str | Path):
    """The experiment config stored in a pulled folder's config.json: an ExperimentConfig, or
    an AveExperimentConfig where it says `"task": "ave"` (an AVE model, docs/ave.md)."""
    record = read_json(Path(folder) / "config.json")
    if record.get("task") == "ave":
        from vaplan.ave.config import AveExperimentConfig

        return from_dict(AveExperimentConfig, record["experiment"])
    return from_dict(ExperimentConfig, record["experiment"])
