"""A straightforward per-video loop transcription of the official AVVP evaluation.

Used only as an oracle: tests check `vaplan.metrics` against it on random data, and
bench_eval.py times it against the vectorised implementation. Not part of the library.
"""

from __future__ import annotations

import numpy as np


def _extract_events(seq: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive 1s as indicator vectors (official extract_event)."""
    events, t = [], 0
    length = len(seq)
    while t < length:
        if seq[t] == 1:
            start = t
            while t < length and seq[t] == 1:
                t += 1
            vec = np.zeros(length)
            vec[start:t] = 1
            events.append(vec)
        else:
            t += 1
    return events


def _event_wise(pred_events, gt_events) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for x1 in pred_events:
        if any(np.sum(x1 * x2) >= 0.5 * np.sum(x1 + x2 - x1 * x2) for x2 in gt_events):
            tp += 1
        else:
            fp += 1
    for x1 in gt_events:
        if not any(np.sum(x1 * x2) >= 0.5 * np.sum(x1 + x2 - x1 * x2) for x2 in pred_events):
            fn += 1
    return tp, fp, fn


def _f(tp, fp, fn) -> float:
    scores = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])
              for c in range(len(tp)) if tp[c] + fp[c] != 0 or tp[c] + fn[c] != 0]
    return 1.0 if not scores else sum(scores) / len(scores)


def _video_scores(so_a, so_v, gt_a, gt_v, level: str) -> tuple[float, float, float, float]:
    """(f_a, f_v, f_event, f_av) of one video; arrays are (C, T) like the official code."""
    so_av, gt_av = so_a * so_v, gt_a * gt_v
    counts = []
    for so, gt in ((so_a, gt_a), (so_v, gt_v), (so_av, gt_av)):
        if level == "seg":
            tp = np.sum(so * gt, axis=1)
            fp = np.sum(so * (1 - gt), axis=1)
            fn = np.sum((1 - so) * gt, axis=1)
        else:
            tp, fp, fn = np.zeros(len(so)), np.zeros(len(so)), np.zeros(len(so))
            for c in range(len(so)):
                tp[c], fp[c], fn[c] = _event_wise(_extract_events(so[c]), _extract_events(gt[c]))
        counts.append((tp, fp, fn))
    (ta, pa, na), (tv, pv, nv), (tav, pav, nav) = counts
    return _f(ta, pa, na), _f(tv, pv, nv), _f(ta + tv, pa + pv, na + nv), _f(tav, pav, nav)


def reference_avvp_scores(pred_audio, pred_visual, gt_audio, gt_visual) -> dict[str, float]:
    """Loop over videos exactly as the official script does; (N, T, C) inputs."""
    out = {}
    for level in ("seg", "evt"):
        rows = [_video_scores(pred_audio[i].T.astype(float), pred_visual[i].T.astype(float),
                              gt_audio[i].T.astype(float), gt_visual[i].T.astype(float),
                              "seg" if level == "seg" else "event")
                for i in range(len(pred_audio))]
        f_a, f_v, f_e, f_av = (100 * np.mean([r[k] for r in rows]) for k in range(4))
        out.update({f"{level}_a": f_a, f"{level}_v": f_v, f"{level}_av": f_av,
                    f"{level}_type": (f_a + f_v + f_av) / 3, f"{level}_event": f_e})
    return out
