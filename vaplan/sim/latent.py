"""Latent salience of every (video, segment, class): what the features and teachers both see.

Sharing one latent between the feature generator and the simulated teachers makes their errors
correlated the way real ones are: an occluded object is weak in the ResNet features and in CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaplan.sim.params import SimParams, class_table


@dataclass
class Latent:
    """Salience per (video, segment, class); zero where nothing of the class is present."""

    audio: np.ndarray  # (n, T, C) float32, loudness of audible events
    visual: np.ndarray  # (n, T, C) float32, clarity of visible events (misses included)
    context: np.ndarray  # (n, T, C) float32, visual context of labelled but not visible classes


def sample_latent(gt_audio: np.ndarray, gt_visual: np.ndarray, labels: np.ndarray,
                  params: SimParams, rng: np.random.Generator) -> Latent:
    """Draw the latent salience for a chunk of videos from its segment truth (N, T, C)."""
    audio = _audio_salience(gt_audio, params, rng)
    visual = _visual_salience(gt_visual, params, rng)
    context = _visual_context(gt_visual, labels, params, rng)
    return Latent(audio, visual, context)


def _lognormal(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    """Mean-one log-normal factors."""
    return np.exp(sd * rng.standard_normal(shape) - 0.5 * sd * sd)


def _audio_salience(gt: np.ndarray, params: SimParams, rng: np.random.Generator) -> np.ndarray:
    n, t, c = gt.shape
    loud = class_table(params.tables["audio_loudness"], 1.0)  # (C,)
    per_video = _lognormal(rng, (n, 1, c), params.audio_video_loudness_sd)  # (n, 1, C)
    per_segment = _lognormal(rng, (n, t, c), params.audio_segment_sd)  # (n, T, C)
    return (gt * loud * per_video * per_segment).astype(np.float32)


def _miss_chain(shape: tuple[int, int, int], rate: np.ndarray, stay: float,
                rng: np.random.Generator) -> np.ndarray:
    """(n, T, C) bool Markov chain with stationary P(missed)=rate (C,) and P(stay missed)=stay."""
    n, t, c = shape
    enter = np.clip(rate * (1.0 - stay) / np.maximum(1.0 - rate, 1e-6), 0.0, 1.0)  # (C,)
    draws = rng.random((n, t, c))
    missed = np.empty((n, t, c), dtype=bool)
    missed[:, 0] = draws[:, 0] < rate
    for step in range(1, t):
        p = np.where(missed[:, step - 1], stay, enter)  # (n, C)
        missed[:, step] = draws[:, step] < p
    return missed


def _visual_salience(gt: np.ndarray, params: SimParams, rng: np.random.Generator) -> np.ndarray:
    strength = class_table(params.tables["visual_strength"], 1.0)  # (C,)
    miss_rate = class_table(params.tables["visual_miss_rate"], 0.1)  # (C,)
    n, t, c = gt.shape
    per_video = _lognormal(rng, (n, 1, c), params.visual_video_sd)  # (n, 1, C)
    missed = _miss_chain(gt.shape, miss_rate, params.visual_miss_stay, rng)
    factor = np.where(missed, params.visual_miss_factor, 1.0)  # (n, T, C)
    return (gt * strength * per_video * factor).astype(np.float32)


def _visual_context(gt: np.ndarray, labels: np.ndarray, params: SimParams,
                    rng: np.random.Generator) -> np.ndarray:
    rate = class_table(params.tables["visual_context_rate"], 0.1)  # (C,)
    n, _, c = gt.shape
    has_context = rng.random((n, 1, c)) < rate  # (n, 1, C) persistent over the video
    level = params.visual_context_level * _lognormal(rng, (n, 1, c), 0.3)
    return (labels[:, None, :] * (1 - gt) * has_context * level).astype(np.float32)
