"""Documented constants of the LLP-sim generative model (see docs/llp-sim.md for the equations).

All constants live in one frozen dataclass, `SimParams`, so a dataset's digest covers them and a
calibration run can vary them without touching code. Per-class tables are dicts keyed by the LLP
class name; `class_table` turns them into (C,) arrays in `vaplan.categories.CLASSES` order.

The global knobs (`*_signal`, `*_noise`, `*_ar`) were calibrated against the paper's PLG
quality on the real validation annotations and the HAN baseline on sim test (the feature gains,
with the val+test pattern bank, before issue 18; re-checked with the val bank in
docs/llp-sim.md §6); the per-class tables encode qualitative facts the paper describes (weak
visual Speech, small or occluded objects, loud machines masking quieter sounds) and were set by
hand, not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vaplan.categories import CLASSES, CLASS_INDEX

# Classes that the teachers (and, more weakly, the features) confuse with each other.
CONFUSION_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Cello", "Violin_fiddle", "Banjo", "Acoustic_guitar", "Accordion"),
    ("Car", "Motorcycle", "Lawn_mower", "Helicopter", "Chainsaw"),
    ("Baby_laughter", "Baby_cry_infant_cry"),
)

# How clearly a visible event of the class shows in a frame (1 = a large, obvious object).
VISUAL_STRENGTH: dict[str, float] = {
    "Speech": 0.35, "Singing": 0.55, "Cheering": 0.6, "Clapping": 0.5,
    "Telephone_bell_ringing": 0.5, "Fire_alarm": 0.45, "Basketball_bounce": 0.8,
    "Baby_laughter": 0.75, "Baby_cry_infant_cry": 0.75, "Frying_(food)": 0.9, "Blender": 0.9,
    "Vacuum_cleaner": 0.9, "Chainsaw": 0.85, "Lawn_mower": 0.85,
}
# Probability that a visible event is in a "missed" state (small, occluded, off-centre object)
# at a segment; the state is a Markov chain over segments, so misses persist.
VISUAL_MISS_RATE: dict[str, float] = {
    "Telephone_bell_ringing": 0.45, "Fire_alarm": 0.45, "Basketball_bounce": 0.3,
    "Speech": 0.3, "Dog": 0.2, "Cat": 0.2, "Chicken_rooster": 0.2, "Clapping": 0.25,
    "Singing": 0.2, "Cheering": 0.2,
}
# Probability that a labelled class whose event is NOT visible at a segment still leaves visual
# context (a person who is not speaking, a parked car, an instrument lying around).
VISUAL_CONTEXT_RATE: dict[str, float] = {
    "Speech": 0.6, "Singing": 0.4, "Cheering": 0.4, "Clapping": 0.4, "Car": 0.4,
    "Motorcycle": 0.3, "Cello": 0.3, "Violin_fiddle": 0.3, "Acoustic_guitar": 0.3,
    "Accordion": 0.3, "Banjo": 0.3, "Dog": 0.3, "Cat": 0.3,
}
# Typical loudness of an audible event of the class (louder events mask quieter ones).
AUDIO_LOUDNESS: dict[str, float] = {
    "Chainsaw": 1.4, "Lawn_mower": 1.3, "Helicopter": 1.3, "Motorcycle": 1.3,
    "Vacuum_cleaner": 1.3, "Blender": 1.3, "Fire_alarm": 1.3, "Baby_cry_infant_cry": 1.2,
    "Speech": 0.8, "Frying_(food)": 0.75, "Basketball_bounce": 0.8, "Cat": 0.85,
    "Clapping": 0.9, "Cheering": 0.95, "Telephone_bell_ringing": 1.1,
}
# How well the audio teacher (CLAP) knows the class, relative to 1.
AUDIO_TEACHER_STRENGTH: dict[str, float] = {
    "Frying_(food)": 0.7, "Basketball_bounce": 0.75, "Cheering": 0.85, "Clapping": 0.85,
    "Baby_laughter": 0.8, "Telephone_bell_ringing": 0.9,
}
# Relative quality of each prompt set: a gain on the teacher signal and the sd of a
# prompt-specific segment noise (on top of the noise shared by a modality's prompt sets).
# VP1 and AP2 are the best, as in the paper's Tables 3-4.
PROMPT_QUALITY: dict[str, float] = {
    "VP1": 1.0, "VP2": 0.95, "VP3": 0.93, "VP4": 0.97, "AP1": 0.95, "AP2": 1.0,
}
PROMPT_NOISE: dict[str, float] = {
    "VP1": 0.003, "VP2": 0.006, "VP3": 0.007, "VP4": 0.005, "AP1": 0.03, "AP2": 0.015,
}
# Mean raw cosine of each prompt set (cancels in the softmax, sets the CLIP-like range).
PROMPT_COSINE_MEAN: dict[str, float] = {
    "VP1": 0.2, "VP2": 0.21, "VP3": 0.215, "VP4": 0.19, "AP1": 0.12, "AP2": 0.13,
}


def class_table(table: dict[str, float], default: float) -> np.ndarray:
    """(C,) float64 array in CLASSES order; classes missing from `table` get `default`."""
    unknown = set(table) - set(CLASS_INDEX)
    if unknown:
        raise KeyError(f"unknown LLP classes in a sim table: {sorted(unknown)}")
    return np.array([table.get(name, default) for name in CLASSES], dtype=np.float64)


def confusion_group_ids() -> np.ndarray:
    """(C,) int: group index per class, -1 for classes in no confusion group."""
    group = np.full(len(CLASSES), -1, dtype=np.int64)
    for g, names in enumerate(CONFUSION_GROUPS):
        for name in names:
            group[CLASS_INDEX[name]] = g
    return group


@dataclass(frozen=True)
class SimParams:
    """Every constant of the generative model (names follow docs/llp-sim.md)."""

    # --- train truth sampling (truth.py)
    prior_count: float = 10.0  # shrinkage of a class's pattern bank towards the pooled bank

    # --- latent salience (latent.py)
    audio_video_loudness_sd: float = 0.35  # log-normal sd of a (video, class) loudness
    audio_segment_sd: float = 0.2  # log-normal sd of per-segment loudness jitter
    visual_video_sd: float = 0.3  # log-normal sd of a (video, class) visual size/clarity
    visual_miss_factor: float = 0.15  # salience multiplier while an event is in the missed state
    visual_miss_stay: float = 0.8  # P(missed at t+1 | missed at t)
    # P(bad frame at t+1 | bad frame at t) of the teacher-only misses (SimConfig
    # .teacher_only_share; their rate follows from the share and visual_miss_rate)
    visual_bad_frame_stay: float = 0.8
    visual_context_level: float = 0.27  # salience of visual context of a non-visible event
    audio_background: float = 0.5  # background level b_a in the masking normalisation
    visual_background: float = 0.5  # background level b_v

    # --- teachers (teachers.py): cos = mu_p + bias_pc + q_p*signal*(w @ S) + noise
    visual_signal: float = 0.13  # cosine gain of a fully salient visual event
    audio_signal: float = 0.22  # CLAP cosines spread wider than CLIP's
    visual_noise: float = 0.011  # sd of segment noise on each cosine
    audio_noise: float = 0.07
    visual_ar: float = 0.15  # AR(1) correlation of that noise over segments
    audio_ar: float = 0.55
    video_bias_sd: float = 0.008  # sd of a persistent (video, class) cosine offset
    class_bias_sd: float = 0.002  # sd of a fixed (prompt, class) offset (prompt bias)
    confusion: float = 0.55  # similarity between classes of one confusion group (S off-diag)

    # --- features (features.py): x = (salience @ P) * gain + nuisance + noise (per-dim sd 1)
    audio_feature_gain: float = 0.27  # per-dimension sd of a class prototype (audio, 128-d)
    visual_feature_gain: float = 0.1125  # per-dimension sd of a prototype (2D, 2048-d)
    visual3d_feature_gain: float = 0.135  # per-dimension sd of a prototype (3D, 512-d)
    feature_group_share: float = 0.3  # share of a prototype's variance common to its group
    nuisance_sd: float = 0.6  # per-dimension sd of a per-video nuisance vector (scene, mic)

    tables: dict = field(default_factory=lambda: {
        "visual_strength": VISUAL_STRENGTH, "visual_miss_rate": VISUAL_MISS_RATE,
        "visual_context_rate": VISUAL_CONTEXT_RATE, "audio_loudness": AUDIO_LOUDNESS,
        "audio_teacher_strength": AUDIO_TEACHER_STRENGTH, "prompt_quality": PROMPT_QUALITY,
        "prompt_noise": PROMPT_NOISE,
        "prompt_cosine_mean": PROMPT_COSINE_MEAN,
        "confusion_groups": [list(g) for g in CONFUSION_GROUPS],
    })


DEFAULT_PARAMS = SimParams()
# Bumped whenever the generative model changes in a way that changes the arrays.
SIM_VERSION = "1"
