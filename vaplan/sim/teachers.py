"""Simulated CLIP (visual) and CLAP (audio) teachers.

Per segment, a teacher's raw cosine with the prompt of class c is

    cos[t, c] = mu_p + bias[p, c] + q_p * g_m * ((w[t] @ S)[c] * k_c) + u[c] + e[t, c] + e_p[t, c]

where w[t] = s[t] / sqrt(sum_k s[t, k]^2 + b_m^2) is the latent salience normalised like an
embedding (a loud event takes most of the unit norm, so it masks quieter ones), S is the class
similarity matrix (confusion groups), k_c the teacher's per-class strength, u a persistent
(video, class) offset, e an AR(1) noise over segments shared by the prompt sets of a modality
and e_p a small prompt-specific noise. Probabilities are Eq. 3: softmax over the 25 classes of
the raw cosines, with no logit scale, so they stay close to 1/25.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaplan.categories import NUM_CLASSES
from vaplan.data.types import Dataset, TeacherScores
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS, prompt_modality, prompt_texts
from vaplan.sim.latent import Latent
from vaplan.sim.params import SimParams, class_table, confusion_group_ids

PROMPT_IDS: tuple[str, ...] = (*VISUAL_PROMPTS, *AUDIO_PROMPTS)


@dataclass
class SimTeacherScores(TeacherScores):
    """TeacherScores plus the simulated raw cosines (same keys and shapes as `probs`)."""

    cosines: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherWorld:
    """Fixed (per seed) properties of the simulated teachers."""

    similarity: np.ndarray  # (C, C) 1 on the diagonal, `confusion` inside a group
    class_bias: dict[str, np.ndarray]  # prompt id -> (C,) cosine offset
    strength: dict[str, np.ndarray]  # modality -> (C,) per-class teacher strength


def build_teacher_world(params: SimParams, rng: np.random.Generator) -> TeacherWorld:
    """Similarity matrix, per-prompt class biases and per-class strengths."""
    group = confusion_group_ids()  # (C,)
    same = (group[:, None] == group[None, :]) & (group[:, None] >= 0)
    similarity = np.where(same, params.confusion, 0.0)
    np.fill_diagonal(similarity, 1.0)
    bias = {pid: params.class_bias_sd * rng.standard_normal(NUM_CLASSES) for pid in PROMPT_IDS}
    strength = {"visual": np.ones(NUM_CLASSES),
                "audio": class_table(params.tables["audio_teacher_strength"], 1.0)}
    return TeacherWorld(similarity, bias, strength)


def _teacher_signal(salience: np.ndarray, background: float, world: TeacherWorld,
                    modality: str) -> np.ndarray:
    """(n, T, C) similarity gain from the normalised salience (masking + confusions)."""
    norm = np.sqrt((salience.astype(np.float64) ** 2).sum(-1, keepdims=True) + background ** 2)
    weights = salience / norm  # (n, T, C)
    return (weights @ world.similarity) * world.strength[modality]


def _ar_noise(shape: tuple[int, int, int], sd: float, ar: float,
              rng: np.random.Generator) -> np.ndarray:
    """(n, T, C) stationary AR(1) noise over the segment axis."""
    z = rng.standard_normal(shape)
    out = np.empty(shape)
    out[:, 0] = z[:, 0]
    scale = np.sqrt(1.0 - ar * ar)
    for t in range(1, shape[1]):
        out[:, t] = ar * out[:, t - 1] + scale * z[:, t]
    return sd * out


def softmax_cosines(cosines: np.ndarray) -> np.ndarray:
    """Eq. 3: softmax over the class axis of raw cosines (no logit scale), float32."""
    shifted = cosines - cosines.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def simulate_cosines(latent: Latent, world: TeacherWorld, params: SimParams,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raw cosines (n, T, C) float32 for every prompt set of both modalities."""
    out: dict[str, np.ndarray] = {}
    for modality in ("visual", "audio"):
        if modality == "visual":
            salience = latent.seen_by_teacher + latent.context  # bad frames: teacher only
            background = params.visual_background
            gain, sd, ar = params.visual_signal, params.visual_noise, params.visual_ar
        else:
            salience, background = latent.audio, params.audio_background
            gain, sd, ar = params.audio_signal, params.audio_noise, params.audio_ar
        signal = _teacher_signal(salience, background, world, modality)  # (n, T, C)
        n, t, c = signal.shape
        shared = _ar_noise(signal.shape, sd, ar, rng)
        shared += params.video_bias_sd * rng.standard_normal((n, 1, c))
        for pid in PROMPT_IDS:
            if prompt_modality(pid) != modality:
                continue
            quality = params.tables["prompt_quality"][pid]
            mean = params.tables["prompt_cosine_mean"][pid]
            own = params.tables["prompt_noise"][pid] * rng.standard_normal((n, t, c))
            cos = mean + world.class_bias[pid] + quality * gain * signal + shared + own
            out[pid] = cos.astype(np.float32)
    return out


def write_sim_teacher_cache(dataset: Dataset, split: str, path: str | Path) -> Path:
    """Write one split's simulated scores (probs, cosines, video labels) in the real Parquet
    score-cache format, through `vaplan.teachers.cache.ScoreCacheWriter`.

    The teacher identity is LLP-sim's version, seed, model constants and pattern bank (the train
    scores depend on the sampled truth), so the three splits of one dataset (or of datasets that
    differ only in size) can share one cache folder, and the two banks never mix.
    """
    from vaplan.teachers.cache import ScoreCacheWriter, build_cache_meta  # lazy: pyarrow

    scores, data = dataset.teachers[split], getattr(dataset, split)
    cosines = getattr(scores, "cosines", {}) or {}
    identity = f"llp-sim v{scores.meta.get('sim_version')} seed={scores.meta.get('seed')} " \
               f"params={scores.meta.get('params_digest')} " \
               f"bank={scores.meta.get('pattern_bank')}"
    share = scores.meta.get("teacher_only_share", "0.0")
    if float(share) != 0:  # share 0 keeps the pre-issue-19 identity (same arrays)
        identity += f" teacher_only_share={share}"
    teachers = {modality: {"model": scores.meta.get(f"{modality}_model", f"sim-{modality}"),
                           "checkpoint": identity, "checkpoint_sha256": "",
                           "prompts": {pid: prompt_texts(pid) for pid in prompts}}
                for modality, prompts in (("visual", VISUAL_PROMPTS), ("audio", AUDIO_PROMPTS))}
    meta = build_cache_meta(teachers, random_weights=False, source="llp-sim",
                            extra={"dataset_digest": dataset.digest, "split": split})
    with ScoreCacheWriter(Path(path), meta, flush_videos=2048) as writer:
        for modality, prompts in (("visual", VISUAL_PROMPTS), ("audio", AUDIO_PROMPTS)):
            probs = {pid: scores.get(pid) for pid in prompts}
            cos = {pid: cosines[pid] for pid in prompts} if cosines else None
            writer.append(scores.video_ids, modality, probs, cos, None, data.video_labels)
    return Path(path)
