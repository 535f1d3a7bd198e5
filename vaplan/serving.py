"""The `vaplan-han` model's contract without MLflow: its input and output frames, and the
sha256 record (integrity.json) of its files. The pyfunc wrapper (pipelines/pyfunc_model.py)
and the registry use these; docs/pipelines.md has the schema.

predict input, per video (N videos, T=10 segments):
  * a dict of arrays {"audio": (N,T,Da), "visual": (N,T,Dv)[, "visual_3d": (N,T,D3)]
    [, "video_id": (N,)]}, or
  * a pandas DataFrame with one row per video and columns "audio", "visual"[, "visual_3d"]
    [, "video_id"], each cell a (T, D) array or nested list (the REST/JSON form).
predict output: a DataFrame with one row per video x segment: video_id, segment, audio_events,
visual_events, av_events (lists of class names, official protocol: p_seg >= 0.5 and
p_video >= 0.5, AV = A and V), prob_audio, prob_visual (segment probabilities, 25 each) and
prob_video (the video-level probabilities, 25).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from vaplan.categories import CLASS_INDEX, CLASSES
from vaplan.data.types import Features
from vaplan.errors import IntegrityError
from vaplan.metrics import filter_by_video
from vaplan.teachers.common import file_sha256

FEATURE_KEYS = ("audio", "visual", "visual_3d")
INTEGRITY = "integrity"  # artifact key of integrity.json
INTEGRITY_FILE = "integrity.json"


class UnverifiedModelWarning(UserWarning):
    """A model logged before sha256 digests were recorded: its files cannot be verified."""


def integrity_record(files: Mapping[str, str | Path]) -> dict:
    """The integrity.json content: {"algorithm": "sha256", "files": {key: {name, sha256}}}."""
    return {"algorithm": "sha256",
            "files": {key: {"name": Path(path).name, "sha256": file_sha256(path)}
                      for key, path in files.items()}}


def verify_digests(files: Mapping[str, str | Path], expected: Mapping[str, str], subject: str,
                   recorded_in: Mapping[str, str]) -> None:
    """Raise IntegrityError for the first file in `expected` whose sha256 differs.

    files: key -> local path; expected: key -> hex digest; recorded_in: key -> where the
    expected digest comes from (a version tag, integrity.json), for the message.
    """
    for key, want in expected.items():
        path = files.get(key)
        if path is None:
            raise IntegrityError(f"{subject}: the {key} file recorded in {recorded_in[key]} is "
                                 f"missing from the model's artifacts")
        got = file_sha256(path)
        if got != want:
            raise IntegrityError(
                f"{subject}: {key} file {Path(path).name} fails its sha256 check: expected "
                f"{want} ({recorded_in[key]}), actual {got}; the stored file changed after "
                f"registration (restore it or register the model again)")


def verify_integrity_file(files: Mapping[str, str | Path], subject: str) -> bool:
    """Check every file listed in the bundled integrity.json; False when the model has none."""
    if INTEGRITY not in files:
        return False
    try:
        listed = json.loads(Path(files[INTEGRITY]).read_text())["files"]
        expected = {key: str(entry["sha256"]) for key, entry in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise IntegrityError(f"{subject}: {INTEGRITY_FILE} is unreadable ({err!r}); expected "
                             f'{{"files": {{key: {{"sha256": ...}}}}}}') from None
    verify_digests(files, expected, subject, {key: INTEGRITY_FILE for key in expected})
    return True


def input_columns(model_input: Any, model: str, expected: str) -> dict[str, Any]:
    """A pyfunc input, a dict of arrays or a one-row-per-video DataFrame, as {column: values};
    TypeError / ValueError (no `audio` or `visual`) naming `model` and the `expected` columns.
    Shared by vaplan-han and the AVE models (vaplan.ave.experiment)."""
    if isinstance(model_input, pd.DataFrame):
        columns = {key: model_input[key].tolist() for key in model_input.columns}
    elif isinstance(model_input, dict):
        columns = dict(model_input)
    else:
        raise TypeError(f"{model} expects a dict of arrays or a DataFrame, got "
                        f"{type(model_input).__name__}")
    missing = {"audio", "visual"} - set(columns)
    if missing:
        raise ValueError(f"{model} input lacks {sorted(missing)}; expected columns {expected}")
    return columns


def features_from_input(model_input: Any) -> tuple[np.ndarray, Features]:
    """(video_ids (N,), Features) from a dict of arrays or a one-row-per-video DataFrame."""
    columns = input_columns(model_input, "vaplan-han", "audio (N,T,Da), visual (N,T,Dv), "
                                                      "optional visual_3d and video_id")
    arrays = {key: _stack(columns[key]) for key in FEATURE_KEYS if columns.get(key) is not None}
    n = arrays["audio"].shape[0]
    ids = columns.get("video_id")
    video_ids = np.asarray(ids if ids is not None else [str(i) for i in range(n)], dtype=object)
    return video_ids, Features(arrays["audio"], arrays["visual"], arrays.get("visual_3d"))


def model_input(video_ids: np.ndarray, features: Features) -> dict[str, np.ndarray]:
    """The dict-of-arrays input of `predict` for these videos (features_from_input's inverse)."""
    inputs = {"audio": features.audio, "visual": features.visual,
              "video_id": np.asarray(video_ids, dtype=object)}
    if features.visual_3d is not None:
        inputs["visual_3d"] = features.visual_3d
    return inputs


def _stack(value: Any) -> np.ndarray:
    """An (N,T,D) float32 array from an array or a list of per-video (T,D) arrays/lists."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.astype(np.float32, copy=False)
    return np.stack([np.asarray(item, np.float32) for item in value])


def _names(mask: np.ndarray) -> list[list[str]]:
    """(R, C) {0,1} -> class-name lists."""
    return [[CLASSES[c] for c in np.flatnonzero(row)] for row in mask]


def predictions_frame(video_ids: np.ndarray, prob_seg: np.ndarray,
                      prob_video: np.ndarray) -> pd.DataFrame:
    """One row per video x segment with events (official protocol) and probabilities."""
    n, t, _, c = prob_seg.shape  # (N, T, 2, C)
    audio = filter_by_video(prob_seg[:, :, 0], prob_video).reshape(n * t, c)  # (N*T, C)
    visual = filter_by_video(prob_seg[:, :, 1], prob_video).reshape(n * t, c)
    return pd.DataFrame({
        "video_id": np.repeat(np.asarray(video_ids, dtype=object), t),
        "segment": np.tile(np.arange(t), n),
        "audio_events": _names(audio), "visual_events": _names(visual),
        "av_events": _names(audio & visual),
        "prob_audio": list(prob_seg[:, :, 0].reshape(n * t, c).astype(np.float32)),
        "prob_visual": list(prob_seg[:, :, 1].reshape(n * t, c).astype(np.float32)),
        "prob_video": list(np.repeat(prob_video, t, axis=0).astype(np.float32)),
    })


def events_from_frame(frame: pd.DataFrame, video_ids: np.ndarray,
                      column: str) -> np.ndarray:
    """(N, T, C) uint8 events of `column` ("audio_events", ...) aligned with `video_ids`."""
    index = {vid: i for i, vid in enumerate(video_ids)}
    t = int(frame["segment"].max()) + 1
    out = np.zeros((len(video_ids), t, len(CLASSES)), np.uint8)
    for vid, segment, names in zip(frame["video_id"], frame["segment"], frame[column]):
        for name in names:
            out[index[vid], int(segment), CLASS_INDEX[name]] = 1
    return out
