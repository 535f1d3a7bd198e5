"""Helpers shared by the steps: label tables, quality metrics, dataset inputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source import DatasetSource

from pipelines.reuse import StepLog, StepResult
from vaplan.config import PLGConfig
from vaplan.data.types import Dataset, PseudoLabels, SplitData
from vaplan.label_table import LabelSplits, labels_table, write_labels
from vaplan.pseudo_labels import pseudo_label_report

PLG_FILE, PLD_FILE, CHECKPOINT = "labels/plg.parquet", "labels/pld.parquet", "checkpoint/han.pt"
DENOISED_FILE = "labels/denoised.parquet"  # raw PLD output; PLD_FILE = the labels retrain uses
MA_FILE = "labels/ma.parquet"  # labels.source=ma: MA's labels, each for all T segments
VIDEO_FILE = "labels/video.parquet"  # labels.source=video: the weak labels y (no segments)
# the evaluate step's per-video val scores, which the register step's gate resamples (LLP:
# {score key: [..]}, AVE: [..] per-video accuracy)
VIDEO_SCORES = "video_scores_val.json"
LABEL_SPLITS = ("train", "val")  # pseudo labels are made for train (targets) and val (quality)


def label_splits(dataset: Dataset) -> dict[str, SplitData]:
    """The splits that get pseudo labels: train (targets) and val (quality)."""
    return {name: getattr(dataset, name) for name in LABEL_SPLITS}


def write_label_table(path: Path, stage: str | dict[str, str], labels: LabelSplits,
                      dataset: Dataset, plg: PLGConfig) -> None:
    """Write the pseudo-label table of `labels` (train and val) with the teacher scores;
    `stage` for all rows or per modality (`vaplan.label_table.labels_table`)."""
    video_labels = {name: split.video_labels for name, split in label_splits(dataset).items()}
    write_labels(path, labels_table(stage, labels, video_labels, dataset.teachers, plg))


def log_quality(log: StepLog, stage: str, labels: PseudoLabels, val: SplitData) -> dict:
    """Log `<stage>/val/<modality>/<video_precision|seg|event|average>` of val labels."""
    report = pseudo_label_report(labels, val.gt_audio, val.gt_visual)
    log.scores(report, prefix=f"{stage}/val/")
    return report


class RunArtifactSource(DatasetSource):
    """Dataset source `runs:/<run_id>/<path>` (MLflow resolves no built-in source for it)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, dst_path: str | None = None) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=self._uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/")

    @classmethod
    def _resolve(cls, raw_source: Any) -> "RunArtifactSource":
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "RunArtifactSource":
        return cls(source_dict["uri"])


def log_label_input(step: StepResult, name: str, context: str) -> None:
    """Log a pseudo-label table as an MLflow dataset input of the active run."""
    import pyarrow.parquet as pq

    frame = pq.read_table(step.path(name), columns=["split", "video_id", "segment", "modality",
                                                   "stage", "labels"]).to_pandas()
    source = RunArtifactSource(step.artifact_uri(name))
    with warnings.catch_warnings():  # "integer column" schema hint: segment ids are never NaN
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=f"{Path(name).stem}-labels",
                                          digest=step.digest(name)[:16])
        mlflow.log_input(dataset, context=context)
