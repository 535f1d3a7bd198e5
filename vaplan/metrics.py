"""The one AVVP evaluation: segment- and event-level F-scores, vectorised over videos.

Semantics are exactly those of the official AVVP evaluation (Tian et al. 2020, eval_metrics.py):
per video and class, TP/FP/FN are counted over the T segments (segment level) or over runs of
consecutive 1s (event level, a predicted run is a TP when it overlaps some ground-truth run with
intersection >= 0.5 * union); F_c = 2TP / (2TP + FP + FN) for classes with any prediction or
ground truth; a video's score is the mean F_c, or 1.0 when no class is active; Event@AV pools the
audio and visual counts per class; Type@AV is the mean of the A, V and AV scores. Results are
means over videos in percent. All inputs are (N, T, C) {0,1} arrays.

`avvp_video_scores` / `modality_video_scores` return the per-video scores, (N,) arrays in percent
(what the paired bootstrap of `vaplan.stats` resamples); `avvp_scores` / `modality_scores` are
their means over videos.
"""

from __future__ import annotations

import numpy as np

SCORE_KEYS = ("seg_a", "seg_v", "seg_av", "seg_type", "seg_event",
              "evt_a", "evt_v", "evt_av", "evt_type", "evt_event")


def filter_by_video(prob_seg: np.ndarray, prob_video: np.ndarray,
                    threshold: float = 0.5) -> np.ndarray:
    """Official inference protocol: 1[p_seg >= thr] * 1[p_video >= thr], (N,T,C) uint8."""
    seg = np.asarray(prob_seg) >= threshold  # (N, T, C)
    video = np.asarray(prob_video) >= threshold  # (N, C)
    return (seg & video[:, None, :]).astype(np.uint8)


def _as_bool(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a (N, T, C) array, got shape {array.shape}")
    return array.astype(bool)


def segment_codes(binary: np.ndarray) -> np.ndarray:
    """Pack the T segments of every (video, class) into one integer: (N,T,C) -> (N,C) int64."""
    binary = np.asarray(binary).astype(bool)
    codes = np.zeros((binary.shape[0], binary.shape[2]), dtype=np.int64)
    for t in range(binary.shape[1]):
        codes |= binary[:, t, :].astype(np.int64) << t
    return codes


def _popcount(codes: np.ndarray) -> np.ndarray:
    count = np.zeros(codes.shape, dtype=np.int64)
    work = codes.copy()
    while work.any():
        count += work & 1
        work >>= 1
    return count


def _segment_counts_from_codes(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(TP, FP, FN) per (video, class) from packed codes: (3, N, C)."""
    return np.stack([_popcount(pred & gt), _popcount(pred & ~gt), _popcount(~pred & gt)])


def _event_counts_from_codes(pred: np.ndarray, gt: np.ndarray, length: int) -> np.ndarray:
    """(TP, FP, FN) of run matching per (video, class) from packed codes: (3, N, C).

    Only the distinct (prediction, truth) pairs of non-empty rows are matched, then scattered.
    """
    key = (pred << length) | gt  # (N, C)
    counts = np.zeros((3,) + key.shape, dtype=np.int64)
    active = key != 0
    if not active.any():
        return counts
    unique, inverse = np.unique(key[active], return_inverse=True)
    bits = np.arange(length)
    pred_rows = ((unique[:, None] >> (bits + length)) & 1).astype(bool)  # (U, T)
    gt_rows = ((unique[:, None] >> bits) & 1).astype(bool)
    counts[:, active] = _match_runs(pred_rows, gt_rows)[:, inverse]
    return counts


def segment_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Segment-level (TP, FP, FN) per video and class: (3, N, C) int."""
    return _segment_counts_from_codes(segment_codes(pred), segment_codes(gt))


def event_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Event-level (TP, FP, FN) per video and class: (3, N, C) int."""
    return _event_counts_from_codes(segment_codes(pred), segment_codes(gt), np.shape(pred)[1])


def _runs(binary: np.ndarray, max_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of 1s per row of a (R, T) bool array -> start, end (R, K), -1 where absent."""
    rows, length = binary.shape
    padded = np.zeros((rows, length + 2), dtype=np.int8)
    padded[:, 1:-1] = binary
    step = np.diff(padded, axis=1)  # (R, T+1): +1 at a run start, -1 after its end
    start_row, start_pos = np.nonzero(step == 1)
    _, end_pos = np.nonzero(step == -1)  # same row order, one end per start
    first = np.searchsorted(start_row, np.arange(rows))  # first run index of each row
    rank = np.arange(start_row.size) - first[start_row]
    width = int(rank.max()) + 1 if rank.size else 1  # only as many columns as the busiest row
    starts = np.full((rows, min(width, max_runs)), -1, dtype=np.int8)
    ends = np.full((rows, min(width, max_runs)), -1, dtype=np.int8)
    starts[start_row, rank] = start_pos
    ends[start_row, rank] = end_pos
    return starts, ends


def _match_runs(pred_rows: np.ndarray, gt_rows: np.ndarray) -> np.ndarray:
    """(TP, FP, FN) of run matching with IoU >= 0.5 for each row pair: (3, R)."""
    max_runs = (pred_rows.shape[1] + 1) // 2
    p_start, p_end = _runs(pred_rows, max_runs)  # (R, K)
    g_start, g_end = _runs(gt_rows, max_runs)
    p_valid, g_valid = p_start >= 0, g_start >= 0
    inter = np.minimum(p_end[:, :, None], g_end[:, None, :]) - np.maximum(
        p_start[:, :, None], g_start[:, None, :])  # (R, K, K)
    np.clip(inter, 0, None, out=inter)
    union = (p_end - p_start)[:, :, None] + (g_end - g_start)[:, None, :] - inter
    match = (2 * inter >= union) & p_valid[:, :, None] & g_valid[:, None, :]
    pred_hit = match.any(axis=2)  # (R, K)
    gt_hit = match.any(axis=1)
    tp = pred_hit.sum(axis=1)
    fp = (p_valid & ~pred_hit).sum(axis=1)
    fn = (g_valid & ~gt_hit).sum(axis=1)
    return np.stack([tp, fp, fn])


def class_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F = 2TP / (2TP + FP + FN) and whether the class is active, from (3, ...) counts: (...)."""
    tp, fp, fn = counts.astype(np.float64)
    denominator = 2 * tp + fp + fn
    active = denominator > 0
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=active), active


def video_f(counts: np.ndarray) -> np.ndarray:
    """Per-video mean of per-class F over active classes; 1.0 when none is active. (N,)"""
    f, active = class_f(counts)  # (N, C)
    n_active = active.sum(axis=1)
    total = f.sum(axis=1)
    return np.where(n_active > 0, total / np.maximum(n_active, 1), 1.0)


def avvp_video_scores(pred_audio: np.ndarray, pred_visual: np.ndarray,
                      gt_audio: np.ndarray, gt_visual: np.ndarray) -> dict[str, np.ndarray]:
    """The ten AVVP scores of every video (percent): {key: (N,) float64} for SCORE_KEYS."""
    pa, pv = _as_bool("pred_audio", pred_audio), _as_bool("pred_visual", pred_visual)
    ga, gv = _as_bool("gt_audio", gt_audio), _as_bool("gt_visual", gt_visual)
    if not (pa.shape == pv.shape == ga.shape == gv.shape):
        raise ValueError(f"shape mismatch: pred_audio {pa.shape}, pred_visual {pv.shape}, "
                         f"gt_audio {ga.shape}, gt_visual {gv.shape}")
    length = pa.shape[1]
    ca, cv, cga, cgv = (segment_codes(x) for x in (pa, pv, ga, gv))  # (N, C) packed segments
    counters = {"seg": _segment_counts_from_codes,
                "evt": lambda p, g: _event_counts_from_codes(p, g, length)}
    scores: dict[str, np.ndarray] = {}
    for level, count in counters.items():
        a, v, av = count(ca, cga), count(cv, cgv), count(ca & cv, cga & cgv)
        scores[f"{level}_a"] = 100 * video_f(a)  # (N,)
        scores[f"{level}_v"] = 100 * video_f(v)
        scores[f"{level}_av"] = 100 * video_f(av)
        scores[f"{level}_type"] = (scores[f"{level}_a"] + scores[f"{level}_v"]
                                   + scores[f"{level}_av"]) / 3
        scores[f"{level}_event"] = 100 * video_f(a + v)
    return {key: scores[key] for key in SCORE_KEYS}


def avvp_scores(pred_audio: np.ndarray, pred_visual: np.ndarray,
                gt_audio: np.ndarray, gt_visual: np.ndarray) -> dict[str, float]:
    """The ten AVVP numbers (percent): the means over videos of `avvp_video_scores`."""
    per_video = avvp_video_scores(pred_audio, pred_visual, gt_audio, gt_visual)
    return {key: float(values.mean()) for key, values in per_video.items()}


def modality_video_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Segment- and event-level F (percent) of one modality per video: {"seg", "event"} (N,)."""
    pred, gt = _as_bool("pred", pred), _as_bool("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}")
    return {"seg": 100 * video_f(segment_counts(pred, gt)),
            "event": 100 * video_f(event_counts(pred, gt))}


def modality_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Segment- and event-level F (percent) of one modality, e.g. of pseudo labels."""
    return {key: float(values.mean()) for key, values in modality_video_scores(pred, gt).items()}


def per_class_f(pred: np.ndarray, gt: np.ndarray, level: str = "event") -> np.ndarray:
    """Per-class F (percent) pooled over videos, (C,), NaN for classes never present (Fig. 3)."""
    count = event_counts if level == "event" else segment_counts
    tp, fp, fn = count(_as_bool("pred", pred), _as_bool("gt", gt)).sum(axis=1).astype(float)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 100 * 2 * tp / np.maximum(denominator, 1), np.nan)


def video_precision(pred_video: np.ndarray, gt_video: np.ndarray) -> float:
    """Video-level precision (percent): per-video precision of the predicted class set, averaged
    over the videos that predict at least one class (precision is undefined for the others).

    On the real LLP val annotations, predicting every video label as visual gives 66.96, the
    paper's anchor (Table 1).
    """
    pred, gt = np.asarray(pred_video).astype(bool), np.asarray(gt_video).astype(bool)
    predicted = pred.sum(axis=1)  # (N,)
    correct = (pred & gt).sum(axis=1)
    has_prediction = predicted > 0
    if not has_prediction.any():
        return 0.0
    return 100 * float(np.mean(correct[has_prediction] / predicted[has_prediction]))


def ave_segment_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """AVE event localization (percent): the share of all segments whose predicted class
    (argmax over the 28 events + background) equals the truth, pooled over videos — the
    evaluation of the AVE references (AVEL, PSP, CMBS); docs/ave.md.

    pred, truth: (N, T) integer classes in [0, 28], or pred as (N, T, 29) scores (argmax taken).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.ndim == truth.ndim + 1:
        pred = pred.argmax(axis=-1)  # (N, T, K) scores -> (N, T) classes
    if pred.shape != truth.shape or truth.ndim != 2:
        raise ValueError(f"AVE accuracy: pred {pred.shape} and truth {truth.shape} must both be "
                         f"(N, T) classes (or pred (N, T, K) scores)")
    if truth.size == 0:
        raise ValueError("AVE accuracy: no segments to score")
    return 100 * float(np.mean(pred == truth))
