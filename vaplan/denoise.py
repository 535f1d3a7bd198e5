"""Pseudo-label denoising (PLD, Eq. 10-11), vectorised over videos.

After training with the richness-aware loss, the forward loss M = BCE(P, Y) (elementwise,
(T, C) per video) is masked by the video-level pseudo label, M' = M * repeat_T(y). For each
class j, mu_j is the mean of the K smallest values of M'[:, j]; segments with
M'[t, j] >= alpha * mu_j are considered noisy and their label is flipped. Only classes with
y_j = 1 can flip.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def forward_loss_map(prob_seg: np.ndarray, labels_seg: np.ndarray) -> np.ndarray:
    """Elementwise BCE(P, Y) with P clipped to [1e-7, 1-1e-7]: (N,T,C) float64."""
    p = np.clip(np.asarray(prob_seg, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels_seg, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def check_pld_options(k: int, alpha: float, num_segments: int = 10, prefix: str = "") -> None:
    """Refuse K outside 1..T and non-positive alpha, naming the option."""
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= num_segments):
        raise ValueError(f"{prefix}k must be an integer in 1..{num_segments}, got {k!r}")
    if not float(alpha) > 0:
        raise ValueError(f"{prefix}alpha must be > 0, got {alpha!r}")


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
