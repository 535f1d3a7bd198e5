"""MA labels: modality-aware video-level labels by exchanging audio and visual tracks
(Wu & Yang, CVPR 2021, "Exploring Heterogeneous Clues for Weakly-Supervised Audio-Visual Video
Parsing", §3.2), written from the paper; the Table 8 "+MA" rows (docs/backbones.md).

A model trained on the video-level labels y (any backbone) is run on each video i, paired with
a random partner j whose labels share no event with i's, three times:

    (a_i, v_i)  -> p_a, p_v                 the original video
    (a_i, v_j)  -> p_a^{v}, p_v^{v}         i's audio with j's visual track
    (a_j, v_i)  -> p_a^{a}, p_v^{a}         j's audio with i's visual track

An event c of y_i that is really visible in v_i should still be predicted when i's audio is
replaced by j's (which has no c). So c is dropped from i's visual labels when both predictions
for c of (a_j, v_i), scaled per class, are below the threshold:
    p_v^{a}[c] / w_v[c] < 0.5  and  p_a^{a}[c] / w_v[c] < 0.5
and from i's audio labels when both predictions of (a_i, v_j) are:
    p_a^{v}[c] / w_a[c] < 0.5  and  p_v^{v}[c] / w_a[c] < 0.5.
w_m[c] = err_m[c] / max_c err_m[c] is the model's per-class error rate of modality m on the
original videos (err_m[c] = share of videos where 1[p_m[c] > 0.5] != y[c]), so classes the
model already gets right need a lower exchanged prediction to be dropped (a class with no error
is never dropped). Events outside y_i stay absent. Shapes: N videos, T=10, C=25.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vaplan.categories import NUM_SEGMENTS
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.pseudo_labels import pseudo_label_report
from vaplan.train import TrainTargets

MA_THRESHOLD = 0.5  # the paper's threshold on the scaled exchanged predictions
PARTNER_TRIES = 64  # random draws per video before an exhaustive search for a partner


@dataclass
class MALabels:
    """Modality-aware video-level labels of one split (uint8 {0,1}, subsets of y)."""

    video_audio: np.ndarray  # (N, C)
    video_visual: np.ndarray  # (N, C)
    partner: np.ndarray  # (N,) int64, the exchange partner of each video (no shared event)
    weight_audio: np.ndarray  # (C,) w_a, per-class scaled error of the audio predictions
    weight_visual: np.ndarray  # (C,) w_v


def disjoint_partners(video_labels: np.ndarray, seed: int = 0,
                      video_ids: np.ndarray | None = None) -> np.ndarray:
    """For each video a random other video sharing no event: (N, C) labels -> (N,) indices.

    Raises ValueError naming the first video that has no such partner.
    """
    y = np.asarray(video_labels).astype(bool)  # (N, C)
    n = y.shape[0]
    if y.ndim != 2 or n < 2:
        raise ValueError(f"MA labels need at least 2 videos with (N, C) labels, got shape "
                         f"{y.shape}")
    rng = np.random.default_rng(seed)
    partner = np.full(n, -1, dtype=np.int64)
    pending = np.arange(n)
    for _ in range(PARTNER_TRIES):
        if pending.size == 0:
            break
        draw = rng.integers(0, n, size=pending.size)
        ok = (draw != pending) & ~(y[pending] & y[draw]).any(axis=1)
        partner[pending[ok]] = draw[ok]
        pending = pending[~ok]
    for i in pending:  # rare: videos whose events almost every other video shares
        candidates = np.flatnonzero(~(y & y[i]).any(axis=1))
        candidates = candidates[candidates != i]
        if candidates.size == 0:
            name = video_ids[i] if video_ids is not None else f"row {i}"
            raise ValueError(f"MA labels: video {name} has no partner sharing none of its "
                             f"events among the {n} videos")
        partner[i] = rng.choice(candidates)
    return partner


@torch.inference_mode()
def exchange_probabilities(model: nn.Module, features: Features, partner: np.ndarray,
                           device: str = "cpu", batch_size: int = 256) -> dict[str, np.ndarray]:
    """Video-level audio/visual probabilities (N, C) of the original and exchanged videos.

    Keys: "a", "v" (a_i, v_i); "a_v", "v_v" (a_i with the partner's visual and 3D tracks);
    "a_a", "v_a" (the partner's audio with v_i).
    """
    was_training = model.training
    model.eval().to(device)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("a", "v", "a_v", "v_v", "a_a", "v_a")}
    tensor = lambda array, rows: (None if array is None else  # noqa: E731
                                  torch.from_numpy(np.asarray(array[rows])).to(device).float())
    for start in range(0, len(features), batch_size):
        own = np.arange(start, min(start + batch_size, len(features)))
        other = partner[own]
        audio, visual, third = (tensor(x, own) for x in
                                (features.audio, features.visual, features.visual_3d))
        audio2, visual2, third2 = (tensor(x, other) for x in
                                   (features.audio, features.visual, features.visual_3d))
        for suffix, args in (("", (audio, visual, third)), ("_v", (audio, visual2, third2)),
                             ("_a", (audio2, visual, third))):
            pred = model(*args)
            out["a" + suffix].append(pred.audio.float().cpu().numpy())
            out["v" + suffix].append(pred.visual.float().cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def class_weights(prob: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """w[c] = err[c] / max err, err[c] = mean over videos of 1[prob > 0.5] != y: (N,C) -> (C,).

    All zero when the model makes no error (then nothing is dropped).
    """
    err = ((np.asarray(prob) > 0.5) != np.asarray(labels).astype(bool)).mean(axis=0)  # (C,)
    top = err.max()
    return (err / top if top > 0 else np.zeros_like(err)).astype(np.float32)


def _below(prob: np.ndarray, weight: np.ndarray, threshold: float) -> np.ndarray:
    """prob / weight < threshold per (video, class); a zero weight never counts as below."""
    w = np.broadcast_to(weight, prob.shape)
    scaled = np.divide(prob, w, out=np.full(prob.shape, np.inf, np.float64), where=w > 0)
    return scaled < threshold


def modality_aware_labels(model: nn.Module, split: SplitData, seed: int = 0,
                          threshold: float = MA_THRESHOLD, device: str = "cpu",
                          batch_size: int = 256) -> MALabels:
    """MA labels of `split` from a model trained on its video-level labels (see the module)."""
    if split.features is None:
        raise ValueError(f"MA labels: split {split.name!r} has no features")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"MA labels: threshold must be in (0, 1), got {threshold!r}")
    y = np.asarray(split.video_labels).astype(bool)  # (N, C)
    partner = disjoint_partners(y, seed, split.video_ids)
    p = exchange_probabilities(model, split.features, partner, device, batch_size)
    w_a, w_v = class_weights(p["a"], y), class_weights(p["v"], y)
    drop_visual = y & _below(p["v_a"], w_v, threshold) & _below(p["a_a"], w_v, threshold)
    drop_audio = y & _below(p["a_v"], w_a, threshold) & _below(p["v_v"], w_a, threshold)
    return MALabels((y & ~drop_audio).astype(np.uint8), (y & ~drop_visual).astype(np.uint8),
                    partner, w_a, w_v)


def ma_targets(split: SplitData, ma: MALabels) -> TrainTargets:
    """Training targets: y for the video output, the MA labels per modality (loss `video`)."""
    y = np.asarray(split.video_labels, dtype=np.uint8)
    if ma.video_audio.shape != y.shape or ma.video_visual.shape != y.shape:
        raise ValueError(f"MA labels have shape {ma.video_audio.shape}; expected {y.shape} for "
                         f"split {split.name!r}")
    return TrainTargets(y, ma.video_audio, ma.video_visual)


def ma_pseudo_labels(ma: MALabels) -> PseudoLabels:
    """MA labels as segment labels: each video label for all T segments, (N, C) -> (N, T, C).

    Their video-level union is the MA labels again, so `vaplan.train.build_targets` of them
    equals `ma_targets` for the losses that read video-level labels only (`video`); the
    tracked pipeline stores them this way in its label table (stage `ma`)."""
    def repeat(labels: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(labels, np.uint8)[:, None, :], NUM_SEGMENTS, axis=1)
    return PseudoLabels(seg_audio=repeat(ma.video_audio), seg_visual=repeat(ma.video_visual))


def ma_label_quality(ma: MALabels, split: SplitData) -> dict[str, float]:
    """Quality like PLG's (`vaplan.pseudo_labels.pseudo_label_report`, percent), per
    modality: {"audio/video_precision", "audio/seg", "audio/event", "audio/average", ...}.

    MA labels have no timing: each video label counts for all T segments (`ma_pseudo_labels`),
    so seg/event F measure the labels as a segment labeller would use them; video_precision
    is theirs alone.
    """
    if split.gt_audio is None or split.gt_visual is None:
        raise ValueError(f"split {split.name!r} has no segment ground truth to score MA "
                         f"labels against")
    return pseudo_label_report(ma_pseudo_labels(ma), split.gt_audio, split.gt_visual)
