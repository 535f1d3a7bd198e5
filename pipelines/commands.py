"""Plain functions behind `vaplan run`, `vaplan pull` and `vaplan evaluate`.

    run_and_check(cfg)                                  -> the tracked pipeline, then the
                                                           champion pulled back and re-evaluated
    pull("vaplan-han", "out/", alias="champion")       -> out/ with checkpoint, labels, config
    evaluate_registered("models:/vaplan-han@champion")  -> the ten test numbers (percent)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
from mlflow.models import Model

from pipelines import registry, tracking
from pipelines.artifacts import read_json, write_json
from pipelines.pyfunc_model import UnverifiedModelWarning
from vaplan.config import ExperimentConfig, from_dict
from vaplan.data.types import Dataset
from vaplan.metrics import avvp_scores

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
PULLED_FILES = {"checkpoint": "checkpoint.pt", "labels": "labels.parquet",
                "config": "config.json"}


def pull(model: str, dest: str, alias: str | None = "champion", version: int | None = None,
         tracking_uri: str | None = None) -> Path:
    """Write a registered version's checkpoint.pt, labels.parquet (the denoised labels it was
    trained on), config.json and version.json (name, version, aliases, tags) into `dest`.

    `version` wins over `alias`. Every file is checked against the sha256 recorded at
    registration first (IntegrityError names the file and both digests); on any failure
    nothing is written into `dest`. Returns the destination folder.
    """
    tracking.open_existing_store(tracking_uri, model, alias, version)  # never creates one
    found = registry.resolve_version(model, alias=alias, version=version)
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


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """Hide MLflow's per-file download bar (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR) for a block."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = previous


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


def evaluate_registered(model_uri: str, split: str = "test", tracking_uri: str | None = None,
                        dataset: Dataset | None = None) -> dict[str, float]:
    """Load a registered pyfunc (`models:/vaplan-han@champion` or `models:/vaplan-han/3`), run
    it on `split` of the dataset recorded in its config, and return the ten AVVP scores.

    The model's events already follow the official protocol (p_seg >= 0.5 and p_video >= 0.5).
    The checkpoint and labels are checked against the version's sha256 tags and the model's
    integrity.json before the weights are loaded (IntegrityError on a mismatch).
    `dataset` skips rebuilding it (it must be the recorded one; its digest is checked).
    """
    from pipelines.pyfunc_model import events_from_frame

    tracking.open_existing_store(tracking_uri, *registry.parse_model_uri(model_uri))
    name, alias, version = registry.parse_model_uri(model_uri)
    found = registry.resolve_version(name, alias=alias, version=version)
    with tempfile.TemporaryDirectory(prefix="vaplan-evaluate-") as tmp:
        local, _ = _download_verified(name, found, Path(tmp))  # before the weights are read
        with warnings.catch_warnings():  # _download_verified already warned about old models
            warnings.simplefilter("ignore", UnverifiedModelWarning)
            model = mlflow.pyfunc.load_model(str(local))
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
                  split: str = "test", tracking_uri: str | None = None) -> dict[str, float]:
    """The `split` scores recorded at registration (registration.json of the version's run;
    versions registered before that record held them: their `<split>/<score>` tags)."""
    tracking.open_existing_store(tracking_uri, model, alias, version)
    found = registry.resolve_version(model, alias=alias, version=version)
    recorded = registry.version_record(found).get("scores", {}).get(split)
    if recorded is not None:
        return {key: float(value) for key, value in recorded.items()}
    prefix = f"{split}/"
    return {key[len(prefix):]: float(value) for key, value in found.tags.items()
            if key.startswith(prefix)}


def read_pulled_config(folder: str | Path) -> ExperimentConfig:
    """The ExperimentConfig stored in a pulled folder's config.json."""
    return from_dict(ExperimentConfig, read_json(Path(folder) / "config.json")["experiment"])


# ---------------------------------------------------------------- vaplan run

def run_and_check(cfg, console=None) -> dict:
    """`vaplan run` / `make demo`: run the tracked pipeline, print which labels the model was
    trained on and the gate's decision, pull the champion back from the registry, re-evaluate
    it on test next to the logged numbers, and print the UI links. Returns the summary."""
    import time

    from rich.console import Console

    from pipelines.pipeline import run
    from vaplan.data.dataset import load_dataset

    os.environ.setdefault(PROGRESS_BAR, "false")  # keep the output readable
    started, console = time.perf_counter(), console or Console()
    console.print(f"building the {cfg.preset or 'custom'} dataset ...")
    dataset = load_dataset(cfg.experiment.data)
    result = run(cfg, dataset=dataset)
    summary = {"parent_run_id": result.parent_run_id, "run_name": result.run_name}
    if result.registration is not None:
        _print_registration(console, cfg, result)
        summary["drift"] = _check_champion(console, cfg, dataset, result)
    console.print(f"done in {time.perf_counter() - started:.0f}s: run {result.run_name!r}")
    print(tracking.ui_links(result.tracking_uri, result.experiment_id, result.parent_run_id))
    return summary


def _print_registration(console, cfg, result) -> None:
    choice = result.registration["labels"]
    for modality, made in choice["modalities"].items():  # which labels retrain trained on
        console.print(f"labels ({modality}): {made['source'].upper()} "
                      f"(pld.apply={choice['apply']}): {made['reason']}", markup=False)
    decision = result.registration["decision"]
    reused = " (reused: nothing changed since that registration)" \
        if result.steps["register"].reused else ""
    console.print(f"registered {cfg.model_name} v{result.registration['version']}: "
                  f"{'promoted to champion' if decision['promoted'] else 'kept as candidate'} "
                  f"({decision['reason']}){reused}", markup=False)


def _check_champion(console, cfg, dataset: Dataset, result) -> float:
    """Pull the champion, re-evaluate it on test, print it next to the logged numbers;
    returns the largest difference to the numbers logged for it."""
    from rich.table import Table

    from vaplan.metrics import SCORE_KEYS

    uri = result.tracking_uri  # the store this run used, never a default
    with tempfile.TemporaryDirectory(prefix="vaplan-pull-") as dest:
        record = read_json(pull(cfg.model_name, dest, tracking_uri=uri) / "version.json")
    version = record["version"]
    logged = logged_scores(cfg.model_name, version=version, tracking_uri=uri)
    same_data = record["tags"].get(registry.DATASET_TAG) == dataset.digest
    scores = evaluate_registered(f"models:/{cfg.model_name}@champion", "test", tracking_uri=uri,
                                 dataset=dataset if same_data else None)
    columns = {"re-evaluated": scores, "logged": logged, "this run": result.test_scores}
    table = Table(title=f"test scores of {cfg.model_name}@champion (v{version}), "
                        f"pulled from the registry")
    table.add_column("score")
    for name in columns:
        table.add_column(name, justify="right")
    for key in SCORE_KEYS:
        table.add_row(key, *(f"{values.get(key, float('nan')):.2f}" for values in columns.values()))
    console.print(table)
    drift = max((abs(scores[k] - logged[k]) for k in SCORE_KEYS if k in logged),
                default=float("nan"))
    console.print(f"re-evaluation matches the numbers logged for v{version}: {drift < 1e-3} "
                  f"(max difference {drift:.2e})")
    return drift
