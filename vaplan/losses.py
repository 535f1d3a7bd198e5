"""Training objectives: baseline (Eq. 2), L_V (Eq. 5), richness L_S (Eq. 6-8), L'_S.

The equations and every interpretation of them are mapped in docs/fidelity.md.

Shapes: B videos, T=10 segments, C=25 classes, modality index 0 audio, 1 visual.

Reductions: every BCE term is the mean over all its elements (like torch's BCELoss, which the
official HAN uses): over (B, C) for video-level terms, over (B, T) for the category-richness term,
over (B, C) for the segment-richness term and over (B, T, C) for the naive segment term. So every
term is a mean over the batch; terms of the two modalities are summed, as in the equations.
Probabilities are clamped to [1e-7, 1 - 1e-7] before the log (p_video of HAN may exceed 1 by a
hair, since its two attentions do not bound it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaplan.config import LossConfig
from vaplan.models import HANOutput

PROB_EPS = 1e-7  # clamp for BCE inputs
RATIO_EPS = 1e-6  # clamp for the predicted richness ratios pcr / psr
MODALITIES = ("audio", "visual")


@dataclass
class BatchTargets:
    """Targets of one batch as float tensors on the model's device."""

    video_labels: Tensor  # (B, C) y, the weak video label
    video_audio: Tensor  # (B, C) y^a (pseudo video label, or y for the baseline)
    video_visual: Tensor  # (B, C) y^v
    seg_audio: Tensor | None = None  # (B, T, C) segment pseudo labels Ŷ^a
    seg_visual: Tensor | None = None  # (B, T, C) Ŷ^v

    def seg(self, modality: str) -> Tensor:
        """Segment pseudo labels of one modality; raises if the targets carry none."""
        labels = self.seg_audio if modality == "audio" else self.seg_visual
        if labels is None:
            raise ValueError(f"this loss needs segment pseudo labels for {modality}; "
                             "build the targets from PseudoLabels, not the weak labels only")
        return labels


def bce(prob: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy; prob clamped to [1e-7, 1-1e-7], target may be soft."""
    p = prob.clamp(PROB_EPS, 1.0 - PROB_EPS)
    loss = -(target * torch.log(p) + (1.0 - target) * torch.log1p(-p))
    return loss.mean()


def smooth_labels(labels: Tensor, s: float) -> Tensor:
    """Label smoothing of Eq. 2: s*y + (1-s)*0.5."""
    return s * labels + (1.0 - s) * 0.5


def baseline_loss(cfg: LossConfig, out: HANOutput, y: Tensor) -> dict[str, Tensor]:
    """Eq. 2: BCE(p_video, y) + BCE(p_a, smooth(y, s_a)) + BCE(p_v, smooth(y, s_v)); y (B,C)."""
    return {
        "video": bce(out.video, y),
        "audio": bce(out.audio, smooth_labels(y, cfg.smooth_audio)),
        "visual": bce(out.visual, smooth_labels(y, cfg.smooth_visual)),
    }


def video_loss(out: HANOutput, targets: BatchTargets) -> dict[str, Tensor]:
    """Eq. 5 (L_V): BCE(p_video, y) + BCE(p_a, y^a) + BCE(p_v, y^v)."""
    return {
        "video": bce(out.video, targets.video_labels),
        "audio": bce(out.audio, targets.video_audio),
        "visual": bce(out.visual, targets.video_visual),
    }


def category_richness(seg: Tensor, video_labels: Tensor) -> Tensor:
    """cr_t = sum_c seg[t, c] / sum_c y_c: (B,T,C), (B,C) -> (B,T).

    Videos without any label (none in LLP) divide by 1 instead of 0.
    """
    count = video_labels.sum(dim=-1).clamp(min=1.0)  # (B,)
    return seg.sum(dim=-1) / count[:, None]  # (B, T)


def segment_richness(seg: Tensor) -> Tensor:
    """sr_c = (1/T) sum_t seg[t, c]: (B,T,C) -> (B,C)."""
    return seg.mean(dim=1)


def richness_loss(out: HANOutput, targets: BatchTargets, use_category: bool = True,
                  use_segment: bool = True) -> dict[str, Tensor]:
    """Eq. 6-8: per modality BCE(pcr, cr) (over (B,T)) and BCE(psr, sr) (over (B,C)).

    Returns the enabled terms, keyed "cr_audio", "sr_audio", "cr_visual", "sr_visual".
    """
    parts: dict[str, Tensor] = {}
    for m, name in enumerate(MODALITIES):
        prob = out.seg[:, :, m]  # (B, T, C) P^m
        labels = targets.seg(name)  # (B, T, C) Ŷ^m
        if use_category:
            # Only the video's classes count: unmasked, sum_c P_tc over all 25 classes exceeds
            # sum_c y_c (e.g. 12.5 / 1.6 at initialisation), the ratio leaves [0, 1], the BCE
            # is undefined there and the clamp would silence the term. Y is masked the same way.
            masked = prob * targets.video_labels[:, None, :]  # (B, T, C)
            pcr = category_richness(masked, targets.video_labels).clamp(RATIO_EPS, 1 - RATIO_EPS)
            cr = category_richness(labels, targets.video_labels).clamp(0.0, 1.0)  # (B, T)
            parts[f"cr_{name}"] = bce(pcr, cr)
        if use_segment:
            psr = segment_richness(prob).clamp(RATIO_EPS, 1 - RATIO_EPS)  # (B, C)
            parts[f"sr_{name}"] = bce(psr, segment_richness(labels))
    return parts


def naive_segment_loss(out: HANOutput, targets: BatchTargets) -> dict[str, Tensor]:
    """L'_S: segment-wise BCE(P^m, Ŷ^m) over (B,T,C), keyed "seg_audio", "seg_visual"."""
    return {f"seg_{name}": bce(out.seg[:, :, m], targets.seg(name))
            for m, name in enumerate(MODALITIES)}


def compute_loss(cfg: LossConfig, out: HANOutput,
                 targets: BatchTargets) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective named by cfg.variant -> (total, parts).

    parts holds every term (video, audio, visual, l_v; for naive/richness also the segment
    terms and l_s) and "total". baseline: Eq. 2 on the weak label y (the modality targets are
    ignored); video: L_V; naive: L_V + lambda*L'_S; richness: L_V + lambda*L_S.
    """
    if cfg.variant == "baseline":
        parts = baseline_loss(cfg, out, targets.video_labels)
    elif cfg.variant in ("video", "naive", "richness"):
        parts = video_loss(out, targets)
    else:
        raise ValueError(f"unknown loss variant {cfg.variant!r}; "
                         "expected baseline, video, naive or richness")
    parts["l_v"] = parts["video"] + parts["audio"] + parts["visual"]
    total = parts["l_v"]
    if cfg.variant in ("naive", "richness"):
        if cfg.variant == "naive":
            seg_parts = naive_segment_loss(out, targets)
        else:
            seg_parts = richness_loss(out, targets, cfg.use_category_richness,
                                      cfg.use_segment_richness)
        parts.update(seg_parts)
        parts["l_s"] = sum(seg_parts.values(), torch.zeros((), device=total.device))
        total = total + cfg.richness_weight * parts["l_s"]
    parts["total"] = total
    return total, parts
