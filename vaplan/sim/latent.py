"""Latent salience of every (video, segment, class): what the features and teachers both see.

Sharing one latent between the feature generator and the simulated teachers makes their errors
correlated the way real ones are: an occluded object is weak in the ResNet features and in CLIP.
A share of the visual misses can instead be teacher-only ("bad frame": the one frame CLIP sees is
blurred, dark, occluded or cut), so the features still carry the event there (issue 19).
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
    # (n, T, C) float32: the visual salience the CLIP teacher sees (`visual` with the
    # teacher-only bad frames applied); None when there are none (teacher_only_share = 0)
    teacher_visual: np.ndarray | None = None

    @property
    def seen_by_teacher(self) -> np.ndarray:
        """(n, T, C) visual salience of the CLIP teacher."""
        return self.visual if self.teacher_visual is None else self.teacher_visual


def sample_latent(gt_audio: np.ndarray, gt_visual: np.ndarray, labels: np.ndarray,
                  params: SimParams, rng: np.random.Generator,
                  teacher_only_share: float = 0.0) -> Latent:
    """Draw the latent salience for a chunk of videos from its segment truth (N, T, C).

    `teacher_only_share` s in [0, 1] splits the visual misses (per-class stationary rate r_c):
    the miss chain shared with the features runs at rate (1 - s) r_c and a teacher-only
    "bad frame" chain at rate s r_c / (1 - (1 - s) r_c), so the teacher still misses a visible
    event with probability r_c per segment and a share s of its misses are its own. The extra
    draws come after every other draw: s = 0 reproduces the pre-issue-19 arrays bit for bit.
    """
    if not 0.0 <= teacher_only_share <= 1.0:
        raise ValueError(f"data.sim.teacher_only_share must be in [0, 1], got {teacher_only_share}")
    audio = _audio_salience(gt_audio, params, rng)
    visual, miss_rate, shared = _visual_salience(gt_visual, params, rng, teacher_only_share)
    context = _visual_context(gt_visual, labels, params, rng)
    teacher_visual = None
    if teacher_only_share > 0:
        own_rate = teacher_only_share * miss_rate / (1.0 - (1.0 - teacher_only_share) * miss_rate)
        bad = _miss_chain(gt_visual.shape, own_rate, params.visual_bad_frame_stay, rng)
        factor = np.where(bad & ~shared, params.visual_miss_factor, 1.0)  # (n, T, C)
        teacher_visual = (visual * factor).astype(np.float32)
    return Latent(audio, visual, context, teacher_visual)


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


def _visual_salience(gt: np.ndarray, params: SimParams, rng: np.random.Generator,
                     teacher_only_share: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Salience seen by the features (n, T, C) float32, the total per-class miss rate (C,)
    and the (n, T, C) bool shared-miss state (rate (1 - share) * miss rate)."""
    strength = class_table(params.tables["visual_strength"], 1.0)  # (C,)
    miss_rate = class_table(params.tables["visual_miss_rate"], 0.1)  # (C,)
    n, t, c = gt.shape
    per_video = _lognormal(rng, (n, 1, c), params.visual_video_sd)  # (n, 1, C)
    shared_rate = miss_rate if teacher_only_share == 0 else (1.0 - teacher_only_share) * miss_rate
    missed = _miss_chain(gt.shape, shared_rate, params.visual_miss_stay, rng)
    factor = np.where(missed, params.visual_miss_factor, 1.0)  # (n, T, C)
    return (gt * strength * per_video * factor).astype(np.float32), miss_rate, missed


def _visual_context(gt: np.ndarray, labels: np.ndarray, params: SimParams,
                    rng: np.random.Generator) -> np.ndarray:
    rate = class_table(params.tables["visual_context_rate"], 0.1)  # (C,)
    n, _, c = gt.shape
    has_context = rng.random((n, 1, c)) < rate  # (n, 1, C) persistent over the video
    level = params.visual_context_level * _lognormal(rng, (n, 1, c), 0.3)
    return (labels[:, None, :] * (1 - gt) * has_context * level).astype(np.float32)
