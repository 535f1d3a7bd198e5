"""Plain functions behind `vaplan pull` and `vaplan evaluate` (downstream use of the registry).

    pull("vaplan-han", "out/", alias="champion")       -> out/ with checkpoint, labels, config
    evaluate_registered("models:/vaplan-han@champion")  -> the ten test numbers (percent)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from pipelines import registry, tracking
from pipelines.artifacts import read_json, write_json
from vaplan.config import ExperimentConfig, from_dict
from vaplan.data.types import Dataset
from vaplan.metrics import avvp_scores

PULLED_FILES = {"checkpoint": "checkpoint.pt", "labels": "labels.parquet",
                "config": "config.json"}


def pull(model: str, dest: str, alias: str | None = "champion", version: int | None = None,
         tracking_uri: str | None = None) -> Path:
    """Write a registered version's checkpoint.pt, labels.parquet (the denoised labels it was
    trained on), config.json and version.json (name, version, aliases, tags) into `dest`.

    `version` wins over `alias`. Returns the destination folder.
    """
    tracking.use_tracking_uri(tracking_uri)
    found = registry.resolve_version(model, alias=alias, version=version)
    number = str(found.version)
    dest_dir = Path(dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest_dir) as tmp:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{number}", dst_path=tmp))
        bundled = {path.name: path for path in (local / "artifacts").rglob("*") if path.is_file()}
        for key, target in PULLED_FILES.items():
            source = _bundled_file(bundled, key, model, number)
            shutil.copyfile(source, Path(tmp) / f".{target}")
            (Path(tmp) / f".{target}").replace(dest_dir / target)  # atomic per file
    write_json(dest_dir / "version.json", {
        "model_name": model, "version": number, "aliases": list(found.aliases),
        "run_id": found.run_id, "source": found.source, "tags": dict(found.tags)})
    return dest_dir


def _bundled_file(bundled: dict[str, Path], key: str, model: str, version: str) -> Path:
    """The model artifact stored for `key` (MLflow keeps the original file names)."""
    suffix = {"checkpoint": ".pt", "labels": ".parquet", "config": ".json"}[key]
    matches = [path for name, path in bundled.items() if name.endswith(suffix)]
    if len(matches) != 1:
        raise FileNotFoundError(f"model {model} v{version}: expected one {suffix} artifact for "
                                f"{key!r}, found {sorted(bundled)}")
    return matches[0]


def _load_split(model, split: str, dataset: Dataset | None):
    """The split named by the model's recorded dataset config (rebuilt unless given)."""
    from pipelines.steps import load_data

    python_model = model.unwrap_python_model()
    record = python_model.record
    if dataset is None:
        experiment: ExperimentConfig = from_dict(ExperimentConfig, record["experiment"])
        dataset = load_data(experiment.data)
    expected = record.get("dataset", {}).get("digest")
    if expected and dataset.digest != expected:
        print(f"warning: dataset digest {dataset.digest[:12]} differs from the one the model "
              f"recorded ({expected[:12]}); scores may not match the logged ones",
              file=sys.stderr)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return getattr(dataset, split)


def evaluate_registered(model_uri: str, split: str = "test", tracking_uri: str | None = None,
                        dataset: Dataset | None = None) -> dict[str, float]:
    """Load a registered pyfunc (`models:/vaplan-han@champion` or `models:/vaplan-han/3`), run
    it on `split` of the dataset recorded in its config, and return the ten AVVP scores.

    The model's events already follow the official protocol (p_seg >= 0.5 and p_video >= 0.5).
    `dataset` skips rebuilding it (it must be the recorded one; its digest is checked).
    """
    from pipelines.pyfunc_model import events_from_frame

    tracking.use_tracking_uri(tracking_uri)
    registry.parse_model_uri(model_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    data = _load_split(model, split, dataset)
    if data.gt_audio is None or data.gt_visual is None or data.features is None:
        raise ValueError(f"split {split!r} has no features or segment ground truth")
    features = data.features
    inputs = {"audio": features.audio, "visual": features.visual,
              "video_id": np.asarray(data.video_ids, dtype=object)}
    if features.visual_3d is not None:
        inputs["visual_3d"] = features.visual_3d
    frame = model.predict(inputs)
    audio = events_from_frame(frame, data.video_ids, "audio_events")
    visual = events_from_frame(frame, data.video_ids, "visual_events")
    return avvp_scores(audio, visual, data.gt_audio, data.gt_visual)


def logged_scores(model: str, alias: str | None = "champion", version: int | None = None,
                  prefix: str = "test/", tracking_uri: str | None = None) -> dict[str, float]:
    """The scores recorded as tags on a registered version (e.g. to compare with a re-run)."""
    tracking.use_tracking_uri(tracking_uri)
    found = registry.resolve_version(model, alias=alias, version=version)
    return {key[len(prefix):]: float(value) for key, value in found.tags.items()
            if key.startswith(prefix)}


def read_pulled_config(folder: str | Path) -> ExperimentConfig:
    """The ExperimentConfig stored in a pulled folder's config.json."""
    return from_dict(ExperimentConfig, read_json(Path(folder) / "config.json")["experiment"])
