"""Pseudo-label generation (PLG, Eq. 3-4) and its quality report (the columns of Tables 1-4).

Teacher probabilities s_t (softmax over classes of raw cosine similarities, Eq. 3) are
thresholded per segment and masked by the video label: Y_t = 1[s_t >= tau] * y. The
video-level pseudo label is y_c = 1[sum_t Y_{t,c} > 0].
"""

from __future__ import annotations

import numpy as np

from vaplan.config import PLGConfig, option_rule
from vaplan.data.types import PseudoLabels, TeacherScores
from vaplan.metrics import modality_scores, modality_video_scores, video_precision


def check_threshold(name: str, value: float) -> None:
    """Guard for direct calls: a threshold follows the rule of plg.*_threshold (vaplan.config)."""
    option_rule(PLGConfig, "visual_threshold").check(name, value)


def threshold_segments(probs: np.ndarray, video_labels: np.ndarray,
                       threshold: float | np.ndarray) -> np.ndarray:
    """Segment pseudo labels 1[s >= tau] * y: probs (N,T,C), video_labels (N,C) -> (N,T,C) uint8.

    threshold: one tau, or a (C,) vector of per-class taus (each in [0, 1]).
    """
    if np.ndim(threshold) == 0:
        check_threshold("threshold", threshold)
    else:
        threshold = np.asarray(option_rule(PLGConfig, "visual_threshold_per_class").check(
            "threshold", threshold))  # (C,)
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != video_labels.shape[0] or probs.shape[2] != video_labels.shape[1]:
        raise ValueError(f"teacher probabilities {probs.shape} do not match video labels "
                         f"{video_labels.shape}; expected (N, T, C) and (N, C)")
    if np.ndim(threshold) and probs.dtype.kind == "f":  # compare in the probabilities' dtype,
        threshold = threshold.astype(probs.dtype)  # as numpy does for a scalar tau
    above = probs >= threshold  # (N, T, C); a (C,) tau broadcasts over the last axis
    return (above & video_labels.astype(bool)[:, None, :]).astype(np.uint8)


def class_thresholds(plg: PLGConfig, modality: str) -> float | np.ndarray:
    """The tau PLG applies to `modality`: the per-class (C,) vector when set, else the global."""
    per_class = getattr(plg, f"{modality}_threshold_per_class")
    return np.asarray(per_class, dtype=np.float64) if per_class else \
        getattr(plg, f"{modality}_threshold")


def generate_pseudo_labels(teachers: TeacherScores, video_labels: np.ndarray,
                           plg: PLGConfig) -> PseudoLabels:
    """PLG for both modalities: the prompt sets and thresholds (global or per class) of `plg`."""
    # PLGConfig checked its prompt ids (of the right modality) and thresholds when it was built.
    visual = threshold_segments(teachers.get(plg.visual_prompt), video_labels,
                                class_thresholds(plg, "visual"))
    audio = threshold_segments(teachers.get(plg.audio_prompt), video_labels,
                               class_thresholds(plg, "audio"))
    return PseudoLabels(seg_audio=audio, seg_visual=visual)


def label_quality(seg_labels: np.ndarray, gt_seg: np.ndarray) -> dict[str, float]:
    """Quality of one modality's segment labels against ground truth (percent).

    video_precision: per-video precision of the video-level labels; seg/event: the AVVP
    segment- and event-level F of that modality; average: (seg + event) / 2 (Tables 2-4).
    """
    scores = modality_scores(seg_labels, gt_seg)
    return {"video_precision": video_precision(seg_labels.max(axis=1), gt_seg.max(axis=1)),
            "seg": scores["seg"], "event": scores["event"],
            "average": (scores["seg"] + scores["event"]) / 2}


def video_label_quality(seg_labels: np.ndarray, gt_seg: np.ndarray) -> np.ndarray:
    """Per-video "average" quality (percent): (seg F + event F) / 2 of each video, (N,).

    Its mean over videos is `label_quality(...)["average"]`; `vaplan.stats.paired_bootstrap`
    resamples it to compare two label sets of the same videos (`vaplan.method.choose_labels`).
    """
    scores = modality_video_scores(seg_labels, gt_seg)
    return (scores["seg"] + scores["event"]) / 2


def pseudo_label_report(pseudo: PseudoLabels, gt_audio: np.ndarray,
                        gt_visual: np.ndarray) -> dict[str, float]:
    """Flat {"audio/seg": ..., "visual/video_precision": ...} quality of both modalities."""
    report = {}
    for modality, labels, gt in (("audio", pseudo.seg_audio, gt_audio),
                                 ("visual", pseudo.seg_visual, gt_visual)):
        for key, value in label_quality(labels, gt).items():
            report[f"{modality}/{key}"] = value
    return report
