"""Quality of PLG's audio-visual segment labels for AVE (docs/ave.md "AVE-sim").

The AV pseudo label of a segment is the video's event where both teachers' thresholded labels
carry it, background elsewhere (`vaplan.ave.train.plg_segment_classes`). Its quality against the
segment truth: the AVE segment accuracy (`vaplan.metrics.ave_segment_accuracy`) and the AVVP
segment- and event-level F of the event segments (`vaplan.metrics.modality_scores`, per video,
averaged; a video with no event segment in either scores 100). Thresholds are PLG's own
hyper-parameters, chosen on val (`search_thresholds`), never on test.
Shapes: N videos, T = 10 segments, C = 28 event classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaplan.ave.train import plg_segment_classes
from vaplan.data.ave import NUM_AVE_CLASSES
from vaplan.metrics import ave_segment_accuracy, modality_scores

# Thresholds searched by default: Eq. 3 probabilities over 28 classes sit near 1/28 = 0.0357.
THRESHOLD_GRID = tuple(round(0.030 + 0.0005 * i, 4) for i in range(31))  # 0.030 .. 0.045


def event_one_hot(classes: np.ndarray) -> np.ndarray:
    """(N, T) classes in [0, 28] -> (N, T, 28) uint8, background segments all zero."""
    classes = np.asarray(classes)
    eye = np.vstack([np.eye(NUM_AVE_CLASSES, dtype=np.uint8),
                     np.zeros((1, NUM_AVE_CLASSES), dtype=np.uint8)])  # row 28 = background
    return eye[classes]


def ave_label_quality(pseudo: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """(N, T) pseudo classes vs (N, T) truth -> {"accuracy", "seg", "event"} in percent."""
    pseudo, truth = np.asarray(pseudo), np.asarray(truth)
    if pseudo.shape != truth.shape:
        raise ValueError(f"AVE label quality: pseudo {pseudo.shape} and truth {truth.shape} "
                         f"must both be (N, T) classes")
    f_scores = modality_scores(event_one_hot(pseudo), event_one_hot(truth))
    return {"accuracy": ave_segment_accuracy(pseudo, truth), "seg": f_scores["seg"],
            "event": f_scores["event"]}


def plg_label_quality(video_label: np.ndarray, truth: np.ndarray, clip: np.ndarray,
                      clap: np.ndarray, visual_threshold: float, audio_threshold: float
                      ) -> dict[str, float]:
    """Quality of one split's AV pseudo labels (`plg_segment_classes`) at the given thresholds;
    (N,) video labels, (N, T) truth, (N, T, 28) CLIP and CLAP probabilities."""
    pseudo = plg_segment_classes(video_label, clip, clap, visual_threshold, audio_threshold)
    return ave_label_quality(pseudo, truth)


@dataclass(frozen=True)
class ThresholdChoice:
    visual_threshold: float
    audio_threshold: float
    quality: dict[str, float]  # at the chosen thresholds


def search_thresholds(video_label: np.ndarray, truth: np.ndarray, clip: np.ndarray,
                      clap: np.ndarray, grid: tuple[float, ...] = THRESHOLD_GRID,
                      key: str = "accuracy") -> ThresholdChoice:
    """The (visual, audio) threshold pair of `grid` x `grid` with the best `key` quality (val).
    Ties keep the first pair (smaller visual, then audio threshold)."""
    video_label = np.asarray(video_label)
    best: ThresholdChoice | None = None
    for tv in grid:
        for ta in grid:
            quality = plg_label_quality(video_label, truth, clip, clap, tv, ta)
            if best is None or quality[key] > best.quality[key]:
                best = ThresholdChoice(tv, ta, quality)
    assert best is not None, "empty threshold grid"
    return best
