"""Pseudo-label denoising (PLD, Eq. 10-11), vectorised over videos.

After training with the richness-aware loss, the forward loss M = BCE(P, Y) (elementwise,
(T, C) per video) is masked by the video-level pseudo label, M' = M * repeat_T(y). For each
class j, mu_j is the mean of the K smallest values of M'[:, j]; segments with
M'[t, j] >= alpha * mu_j are considered noisy and their label is flipped. Only classes with
y_j = 1 can flip.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vaplan.categories import NUM_SEGMENTS
from vaplan.config import PLDConfig, option_rule

EPS = 1e-7


def forward_loss_map(prob_seg: np.ndarray, labels_seg: np.ndarray) -> np.ndarray:
    """Elementwise BCE(P, Y) with P clipped to [1e-7, 1-1e-7]: (N,T,C) float64."""
    p = np.clip(np.asarray(prob_seg, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels_seg, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def check_pld_options(k: int, alpha: float, num_segments: int = NUM_SEGMENTS,
                      prefix: str = "") -> None:
    """Guard for direct calls: K and alpha follow the rules of pld.*_k / pld.*_alpha
    (vaplan.config), K also at most the T segments of the labels."""
    rule_k = option_rule(PLDConfig, "visual_k")
    dataclasses.replace(rule_k, hi=min(rule_k.hi, num_segments)).check(f"{prefix}k", k)
    option_rule(PLDConfig, "visual_alpha").check(f"{prefix}alpha", alpha)


def noisy_segments(prob_seg: np.ndarray, labels_seg: np.ndarray, labels_video: np.ndarray,
                   k: int = 5, alpha: float = 30.0) -> np.ndarray:
    """Boolean (N,T,C) mask of the segment labels PLD flips (Eq. 11)."""
    check_pld_options(k, alpha, num_segments=np.shape(labels_seg)[1])
    video = np.asarray(labels_video).astype(bool)  # (N, C)
    loss = forward_loss_map(prob_seg, labels_seg) * video[:, None, :]  # M' (N, T, C)
    smallest = np.partition(loss, k - 1, axis=1)[:, :k, :]  # (N, K, C)
    mu = smallest.mean(axis=1)  # (N, C)
    return (loss >= alpha * mu[:, None, :]) & video[:, None, :]


def denoise_labels(prob_seg: np.ndarray, labels_seg: np.ndarray, labels_video: np.ndarray,
                   k: int = 5, alpha: float = 30.0) -> np.ndarray:
    """Denoised segment labels (N,T,C) uint8 from model probabilities and pseudo labels."""
    labels = np.asarray(labels_seg).astype(bool)
    flips = noisy_segments(prob_seg, labels, labels_video, k, alpha)
    return (labels ^ flips).astype(np.uint8)
