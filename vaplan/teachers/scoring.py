"""Eq. 3: segment probabilities from raw cosine similarities (no logit scale).

s_t = softmax_c( cos(e_t, w_c) ), with e_t the L2-normalised segment embedding and w_c the
L2-normalised prompt embedding of class c. Without CLIP's logit scale (100) every s_t,c stays
near 1/25 = 0.04, which is why the paper's thresholds are 0.041 / 0.038 (docs/fidelity.md).
Computed in float32 numpy whatever precision the encoders ran in.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """x / ||x|| along `axis`, float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def cosine_similarities(segment_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """(..., D) segment embeddings x (C, D) prompt embeddings -> (..., C) raw cosines."""
    if segment_emb.shape[-1] != text_emb.shape[-1]:
        raise ValueError(f"embedding sizes differ: segments {segment_emb.shape}, "
                         f"prompts {text_emb.shape}")
    return l2_normalize(segment_emb) @ l2_normalize(text_emb).T


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, float32."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return (exp / exp.sum(axis=axis, keepdims=True)).astype(np.float32)


def segment_probabilities(cosines: np.ndarray) -> np.ndarray:
    """Eq. 3: softmax over the C classes of the raw cosines (logit scale 1)."""
    return softmax(cosines, axis=-1)


def score_segments(segment_emb: np.ndarray, text_embs: Mapping[str, np.ndarray]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and cosines of every prompt set.

    segment_emb: (N, T, D); text_embs: PID -> (C, D). Returns (probs, cosines), each
    PID -> (N, T, C) float32.
    """
    probs, cosines = {}, {}
    for pid, text in text_embs.items():
        cos = cosine_similarities(segment_emb, text)  # (N, T, C)
        cosines[pid] = cos.astype(np.float32)
        probs[pid] = segment_probabilities(cos)
    return probs, cosines
