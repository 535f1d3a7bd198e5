"""One AVE experiment's pieces without MLflow (docs/ave.md "Tracked pipeline"): the data
(`load_data`), PLG's AV segment labels with thresholds from the config or searched on val
(`make_labels`), the weak training (+PLG) of the configured model (`train_model`), its
evaluation (`split_scores`, per-video `video_accuracy` for the promotion gate), checkpoints
that carry their config, and the pyfunc's input and output frames. `pipelines.ave` (the
tracked steps) and Table 9's units (`vaplan.ablation`) both call these.
Shapes: N videos, T = 10 segments, K = 29 segment classes (28 events + background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from vaplan.ave.config import AveExperimentConfig
from vaplan.ave.quality import plg_label_quality, search_thresholds
from vaplan.ave.train import (AveSplitTensors, AveTrainResult, plg_segment_classes,
                              predict_segments, train_weak)
from vaplan.config import from_dict, to_dict
from vaplan.data.ave import AVE_CLASSES, AUDIO_SHAPE, NUM_AVE_SEGMENTS, VISUAL_SHAPE
from vaplan.io import atomic_path
from vaplan.metrics import ave_segment_accuracy
from vaplan.serving import input_columns
from vaplan.sim.ave import AveDataset, load_ave_dataset, split_tensors, weak_train_tensors

EVAL_SPLITS = ("val", "test")
CLASS_NAMES = (*AVE_CLASSES, "background")  # index 28 = background
CHECKPOINT_FORMAT = 1


def load_data(cfg: AveExperimentConfig, progress: bool = False) -> AveDataset:
    """The experiment's AVE-sim dataset (`data.sim.*`)."""
    return load_ave_dataset(cfg.data.sim, progress=progress)


@dataclass(frozen=True)
class AveLabels:
    """PLG's AV segment classes of train (targets) and val (quality), and their thresholds."""

    visual_threshold: float
    audio_threshold: float
    searched: bool  # thresholds picked on val (plg.search)
    train: np.ndarray  # (n_train, T) int64 in [0, 28]
    val: np.ndarray  # (n_val, T)
    quality: dict[str, float]  # val: accuracy, seg, event (percent)


def make_labels(cfg: AveExperimentConfig, data: AveDataset) -> AveLabels:
    """PLG on train and val: thresholds from `plg.*`, or searched on val (never on test)."""
    plg, val = cfg.plg, data.val.annotations
    clip = {name: data.clip(name, plg.visual_prompt) for name in ("train", "val")}
    clap = {name: data.clap(name, plg.audio_prompt) for name in ("train", "val")}
    if plg.search:
        choice = search_thresholds(val.video_label, val.truth, clip["val"], clap["val"])
        tv, ta, quality = choice.visual_threshold, choice.audio_threshold, choice.quality
    else:
        tv, ta = plg.visual_threshold, plg.audio_threshold
        quality = plg_label_quality(val.video_label, val.truth, clip["val"], clap["val"], tv, ta)
    classes = {name: plg_segment_classes(getattr(data, name).annotations.video_label,
                                         clip[name], clap[name], tv, ta)
               for name in ("train", "val")}
    return AveLabels(tv, ta, plg.search, classes["train"], classes["val"], dict(quality))


LABEL_SPLITS = ("train", "val")


def write_labels(path: Path | str, data: AveDataset, labels: AveLabels) -> Path:
    """PLG's AV segment classes of train and val as Parquet (zstd, written atomically): one
    row per video x segment, `split`, `index` (the annotations.csv row, the video's identity),
    then `predictions_frame`'s video_id, segment, event (0..28; 28 = background), event_name."""
    frames = []
    for split in LABEL_SPLITS:
        annotations, classes = getattr(data, split).annotations, getattr(labels, split)
        frame = predictions_frame(annotations.video_ids, classes)  # (n * T) rows
        frame.insert(0, "index", np.repeat(annotations.indices, classes.shape[1]))
        frame.insert(0, "split", split)
        frames.append(frame)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path)) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, compression="zstd", index=False)
    return Path(path)


def read_labels(path: Path | str, split: str, annotations) -> np.ndarray:
    """(N, T) int64 PLG classes of `split` from a `write_labels` table, checked against the
    split's videos (`annotations.indices`, in order); ValueError naming the file otherwise."""
    frame = pd.read_parquet(path)
    frame = frame[frame["split"] == split]
    n, t = len(annotations.indices), NUM_AVE_SEGMENTS
    index = frame["index"].to_numpy(np.int64)
    segment = frame["segment"].to_numpy(np.int64)
    if len(frame) != n * t or not np.array_equal(index, np.repeat(annotations.indices, t)) \
            or not np.array_equal(segment, np.tile(np.arange(t), n)):
        raise ValueError(f"{path}: its {split} rows ({len(frame)}) are not the {n} videos x "
                         f"{t} segments of the dataset's {split} split, in order")
    return classes_from_frame(frame, annotations.video_ids)


def train_model(cfg: AveExperimentConfig, data: AveDataset, labels: np.ndarray | None,
                on_epoch: Callable[[Epoch], None] | None = None) -> AveTrainResult:
    """The configured model trained with its weak loss (+ the PLG segment objective when
    plg.use; `labels` are then the train split's PLG classes); the best val epoch.
    `on_epoch(Epoch)` after every epoch."""
    import torch

    from vaplan.ave import build_ave_model

    train_cfg = cfg.effective_train()
    pseudo = labels if train_cfg.plg_weight > 0 else None
    if train_cfg.plg_weight > 0 and labels is None:
        raise ValueError("plg.use=true needs the train split's PLG segment classes")
    torch.manual_seed(train_cfg.seed)  # the model's initial weights follow train.seed
    report = None if on_epoch is None else (lambda record: on_epoch(Epoch(record["epoch"],
                                                                          record)))
    return train_weak(build_ave_model(cfg.model.name), train_cfg,
                      weak_train_tensors(data, pseudo), split_tensors(data, "val"), report)


def video_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, T) predicted and true classes -> (N,) per-video segment accuracy (percent); its mean
    is `ave_segment_accuracy` (every video has T segments): what the promotion gate resamples."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"predictions {pred.shape} and truth {truth.shape} must both be (N, T)")
    return 100.0 * (pred == truth).mean(axis=1)


def video_scores(model, data: AveDataset, split: str = "val", device: str = "cpu") -> np.ndarray:
    """(N,) per-video segment accuracy (percent) of `model` on `split`: what the gate compares."""
    tensors = split_tensors(data, split)
    return video_accuracy(predict_segments(model, tensors, device), tensors.truth)


def split_scores(model, data: AveDataset, device: str = "cpu") -> dict[str, dict[str, float]]:
    """{"val": {"accuracy": ..}, "test": {"accuracy": ..}}: segment accuracy (percent, pooled
    over the split's segments, the references' evaluation)."""
    return scores_and_val_videos(model, data, device)[0]


def scores_and_val_videos(model, data: AveDataset, device: str = "cpu"
                          ) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """`split_scores` and val's (N,) per-video accuracy (`video_scores`, what the gate
    compares), from one prediction per split."""
    scores, val_videos = {}, None
    for name in EVAL_SPLITS:
        split = split_tensors(data, name)
        predicted = predict_segments(model, split, device)
        scores[name] = {"accuracy": ave_segment_accuracy(predicted, split.truth)}
        if name == "val":
            val_videos = video_accuracy(predicted, split.truth)
    return scores, val_videos


@dataclass(frozen=True)
class Epoch:
    """A `train_weak` epoch record as the runners' epoch loggers take it (`.epoch`,
    `.metrics()`, as `vaplan.train.EpochStats`)."""

    epoch: int
    record: dict

    def metrics(self) -> dict[str, float]:
        return epoch_metrics(self.record)


def epoch_metrics(record: dict) -> dict[str, float]:
    """A `train_weak` epoch record under the names every run uses (docs/pipelines.md "Metric
    names"; step = epoch): epoch/train_loss, epoch/lr[, epoch/val/accuracy]."""
    metrics = {"epoch/train_loss": record["loss"], "epoch/lr": record["lr"]}
    if "val_accuracy" in record:
        metrics["epoch/val/accuracy"] = record["val_accuracy"]
    return metrics


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model, cfg: AveExperimentConfig, extra: dict[str, Any]) -> Path:
    """The model's weights with the experiment config that made them (written atomically)."""
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "model": cfg.model.name,
               "experiment": to_dict(cfg), "state_dict": model.state_dict(),
               "extra": dict(extra)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: Path | str, device: str = "cpu"):
    """(model in eval mode, AveExperimentConfig, extra) of an AVE checkpoint; ValueError
    naming the file when it is not one."""
    import torch

    from vaplan.ave import build_ave_model

    payload = torch.load(str(path), map_location=device, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT \
            or "experiment" not in payload:
        raise ValueError(f"{path}: not an AVE checkpoint (format {CHECKPOINT_FORMAT})")
    cfg = from_dict(AveExperimentConfig, payload["experiment"])
    model = build_ave_model(payload["model"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), cfg, payload["extra"]


# ---------------------------------------------------------------- the pyfunc's frames


def model_input(video_ids: np.ndarray, audio: np.ndarray, visual: np.ndarray) -> dict:
    """The dict-of-arrays input of the AVE pyfunc (features_from_input's inverse)."""
    return {"video_id": np.asarray(video_ids, dtype=object), "audio": audio, "visual": visual}


def features_from_input(model_input: Any) -> tuple[np.ndarray, AveSplitTensors]:
    """(video_ids (N,), features) from a dict of arrays or a one-row-per-video DataFrame with
    `audio` (N, 10, 128), `visual` (N, 10, 7, 7, 512) and optional `video_id`."""
    shapes = (f"audio (N, {', '.join(map(str, AUDIO_SHAPE))}), visual "
              f"(N, {', '.join(map(str, VISUAL_SHAPE))}), optional video_id")
    columns = input_columns(model_input, "the AVE model", shapes)
    audio, visual = _floats(columns["audio"]), _floats(columns["visual"])
    for name, array, shape in (("audio", audio, AUDIO_SHAPE), ("visual", visual, VISUAL_SHAPE)):
        if array.shape[1:] != shape:
            raise ValueError(f"the AVE model's {name} input must be (N, "
                             f"{', '.join(map(str, shape))}), got {array.shape}")
    if len(audio) != len(visual):
        raise ValueError(f"audio has {len(audio)} videos, visual {len(visual)}")
    ids = np.asarray(columns.get("video_id", np.arange(len(audio)).astype(str)), dtype=object)
    return ids, AveSplitTensors(audio, visual, np.zeros(len(audio), dtype=np.int64))


def _floats(value: Any) -> np.ndarray:
    """A floating array as given (float16 features stay float16: batches are cast), else
    float32 (nested lists of a DataFrame column)."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return value
    return np.asarray(value, dtype=np.float32)


def predictions_frame(video_ids: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """One row per video x segment: video_id, segment, event (0..28; 28 = background) and
    event_name."""
    n, t = classes.shape  # (N, T)
    flat = classes.reshape(n * t).astype(np.int64)
    return pd.DataFrame({"video_id": np.repeat(np.asarray(video_ids, dtype=object), t),
                         "segment": np.tile(np.arange(t), n), "event": flat,
                         "event_name": np.asarray(CLASS_NAMES, dtype=object)[flat]})


def classes_from_frame(frame: pd.DataFrame, video_ids: np.ndarray) -> np.ndarray:
    """predictions_frame -> (N, T) classes in the order of `video_ids` (rows in frame order)."""
    if len(frame) != len(video_ids) * NUM_AVE_SEGMENTS:
        raise ValueError(f"expected {len(video_ids) * NUM_AVE_SEGMENTS} rows (videos x "
                         f"{NUM_AVE_SEGMENTS} segments), got {len(frame)}")
    return frame["event"].to_numpy(np.int64).reshape(len(video_ids), NUM_AVE_SEGMENTS)
