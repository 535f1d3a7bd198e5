"""AVE-sim: the real AVE annotations with simulated features and CLIP/CLAP teachers (docs/ave.md).

What is real: every split's segment truth and video labels (`vaplan.data.ave.load_split`; AVE
annotates train, val and test, so nothing is drawn). What is simulated, per video of class c:

- presence: inside the annotated event [start, end) the event is audible and visible; outside
  it the segment is background by definition, but the class may still be audible only (an
  off-screen sound) or visible only (a silent object) on a persistent Markov chain
  (`one_modality_rate`, `one_modality_stay`), at salience `one_modality_level`; a share of
  videos (`distractor_rate`) carries an unannotated second class at `distractor_level`;
- latent salience (n, T, 28): audio loudness and visual clarity as LLP-sim draws them (log-normal
  per video and segment; persistent visual misses of small objects, docs/llp-sim.md §2);
- features of the official shapes: audio (n, 10, 128) = salience @ P_a + nuisance + N(0, 1);
  visual (n, 10, 7, 7, 512): each present class at its own object footprint on the 7x7 grid
  (a Gaussian blob, centre and width per video), w_k * salience * P_v[c] + nuisance + N(0, 1);
- teachers: LLP-sim's simulated CLIP (VP1-VP4) and CLAP (AP1-AP2) cosines and Eq. 3 softmax
  (`vaplan.sim.teachers.simulate_cosines` with its constants, unchanged) over the 28 classes,
  with an AVE class-similarity matrix (confusion groups below).

The 178 background-only training videos of the weak setting (`num_background`) are simulated
too (no event; distractors only), with video label BACKGROUND. Randomness is keyed by (seed,
split, chunk) as in LLP-sim, so a split does not change when another one changes size.
Calibration (docs/ave.md "AVE-sim"): only the weak baselines without PLG and only on val.
Shapes: n videos, T = 10 segments, C = 28 classes, K = 49 grid cells, D feature channels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vaplan.config import SEED, Checked, FeatureDtype, integer, option
from vaplan.data.ave import (AUDIO_SHAPE, AVE_CLASS_INDEX, AVE_CLASSES, BACKGROUND,
                             NUM_AVE_CLASSES, NUM_AVE_SEGMENTS, NUM_BACKGROUND_VIDEOS,
                             VISUAL_SHAPE, AveSplit, load_split)
from vaplan.sim.latent import Latent, _lognormal, _miss_chain
from vaplan.sim.params import DEFAULT_PARAMS, SimParams
from vaplan.sim.teachers import PROMPT_IDS, TeacherWorld, simulate_cosines, softmax_cosines

AVE_SIM_VERSION = "1"
MAX_TRAIN = 3339  # videos in the official AVE train split
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "noisy": 3}
WORLD_CODE = 97
SUBSAMPLE_CODE = 98
CHUNK = 64  # videos generated at once (float32 visual temporaries ~64 MB)
GRID_SIDE = 7

# Classes the teachers (and, more weakly, the features) confuse: set by hand from the class
# names (instruments, engines, voices, animals), as LLP-sim's groups (docs/llp-sim.md).
AVE_CONFUSION_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Violin, fiddle", "Flute", "Ukulele", "Acoustic guitar", "Banjo", "Accordion", "Mandolin"),
    ("Fixed-wing aircraft, airplane", "Race car, auto racing", "Helicopter", "Truck",
     "Motorcycle", "Bus", "Chainsaw"),
    ("Male speech, man speaking", "Female speech, woman speaking", "Baby cry, infant cry"),
    ("Bark", "Goat", "Cat", "Horse", "Rodents, rats, mice"),
)
# Probability that a visible event is missed at a segment (small, distant or occluded objects),
# set by hand; other classes get 0.1 as in LLP-sim.
AVE_VISUAL_MISS_RATE: dict[str, float] = {
    "Church bell": 0.3, "Fixed-wing aircraft, airplane": 0.3, "Clock": 0.25, "Shofar": 0.25,
    "Rodents, rats, mice": 0.3, "Flute": 0.2, "Helicopter": 0.2, "Train horn": 0.2,
}


@dataclass(frozen=True)
class AveSimConfig(Checked):
    """Size and seed of an AVE-sim dataset (`load_ave_dataset`; every prompt set is simulated,
    the one PLG uses is `plg.visual_prompt` / `plg.audio_prompt`, vaplan.ave.config).

    val/test are the real AVE splits (a seeded random `max_eval_videos` of them when > 0, a
    smoke check, not the benchmark); train is a seeded random `num_train` videos of the official
    train split (0 = all 3,339) plus `num_background` simulated background-only videos.
    """

    SECTION: ClassVar[str] = "data.sim"  # the AVE experiment's `data.sim.*` (vaplan.ave.config)

    num_train: int = option(0, integer(0, MAX_TRAIN, "0 (all 3,339) .. 3339"))
    num_background: int = option(NUM_BACKGROUND_VIDEOS, integer(0, NUM_BACKGROUND_VIDEOS))
    max_eval_videos: int = option(0, integer(0, 402, "0 (all 402) .. 402"))
    seed: int = option(0, SEED)
    feature_dtype: FeatureDtype = "float16"


@dataclass(frozen=True)
class AveSimParams:
    """Constants of AVE-sim's generative model (set by hand or calibrated: docs/ave.md)."""

    one_modality_rate: float = 0.35  # P(the class is audible-only / visible-only) off the event
    one_modality_stay: float = 0.8  # P(that state persists to the next segment)
    one_modality_level: float = 0.8  # its salience relative to the event's
    distractor_rate: float = 0.5  # share of videos with an unannotated second class
    distractor_segment_rate: float = 0.4  # P(the distractor is present at a segment), per modality
    distractor_level: float = 0.6
    audio_feature_gain: float = 0.27  # per-dimension sd of a class prototype (128-d)
    visual_feature_gain: float = 0.2  # per-dimension sd of a prototype (512-d, per grid cell)
    feature_group_share: float = 0.3  # share of a prototype's variance common to its group
    nuisance_sd: float = 0.6  # per-dimension sd of a per-video nuisance vector
    footprint_sigma: tuple[float, float] = (0.7, 1.8)  # object blob width (grid cells), uniform
    teachers: SimParams = DEFAULT_PARAMS  # LLP-sim's latent and teacher constants, unchanged


DEFAULT_AVE_PARAMS = AveSimParams()


@dataclass(frozen=True)
class AveSimSplit:
    """One split: the real annotations, simulated features and teacher probabilities."""

    annotations: AveSplit  # for "noisy": video_label = truth = BACKGROUND everywhere
    audio: np.ndarray  # (n, T, 128)
    visual: np.ndarray  # (n, T, 7, 7, 512)
    teachers: dict[str, np.ndarray]  # prompt id -> (n, T, 28) float32 Eq. 3 probabilities

    def __len__(self) -> int:
        return len(self.annotations)


@dataclass(frozen=True)
class AveDataset:
    """AVE-sim: train (event videos), background (the weak setting's noisy videos), val, test."""

    train: AveSimSplit
    background: AveSimSplit
    val: AveSimSplit
    test: AveSimSplit
    config: AveSimConfig
    digest: str
    description: str
    weak_audio: np.ndarray  # (n_train + n_background, T, 128): train then background rows
    weak_visual: np.ndarray  # (n_train + n_background, T, 7, 7, 512), same buffer as the splits

    def clip(self, split: str, prompt: str = "VP1") -> np.ndarray:
        """(n, T, 28) visual teacher probabilities of prompt set `prompt` (VP1-VP4)."""
        return getattr(self, split).teachers[prompt]

    def clap(self, split: str, prompt: str = "AP2") -> np.ndarray:
        """(n, T, 28) audio teacher probabilities of prompt set `prompt` (AP1-AP2)."""
        return getattr(self, split).teachers[prompt]


def split_tensors(dataset: AveDataset, split: str):
    """An evaluation split (val, test) as the models' `vaplan.ave.train.AveSplitTensors`."""
    from vaplan.ave.train import AveSplitTensors  # lazy: torch

    data = getattr(dataset, split)
    return AveSplitTensors(data.audio, data.visual, data.annotations.video_label,
                           truth=data.annotations.truth)


def weak_train_tensors(dataset: AveDataset, pseudo: np.ndarray | None = None):
    """The weak training set (train videos, then the background videos with label BACKGROUND)
    as `AveSplitTensors`, without copying the features. `pseudo` (n_train, T): PLG segment
    classes of the train videos; the background videos get BACKGROUND everywhere."""
    from vaplan.ave.train import AveSplitTensors  # lazy: torch

    train, background = dataset.train.annotations, dataset.background.annotations
    labels = np.concatenate([train.video_label, background.video_label])
    if pseudo is not None:
        pseudo = np.asarray(pseudo)
        if pseudo.shape != train.truth.shape:
            raise ValueError(f"PLG segment classes {pseudo.shape} must match the train split "
                             f"{train.truth.shape}")
        pseudo = np.concatenate([pseudo, background.truth])
    truth = np.concatenate([train.truth, background.truth])
    return AveSplitTensors(dataset.weak_audio, dataset.weak_visual, labels, truth=truth,
                           pseudo=pseudo)


def check_ave_sim_config(cfg: AveSimConfig) -> AveSimConfig:
    if not isinstance(cfg, AveSimConfig):
        raise TypeError(f"load_ave_dataset needs an AveSimConfig, got {type(cfg).__name__}")
    return cfg


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _class_array(table: dict[str, float], default: float) -> np.ndarray:
    """(28,) float64 in AVE_CLASSES order."""
    unknown = set(table) - set(AVE_CLASS_INDEX)
    if unknown:
        raise KeyError(f"unknown AVE classes in an AVE-sim table: {sorted(unknown)}")
    return np.array([table.get(name, default) for name in AVE_CLASSES])


def _group_ids() -> np.ndarray:
    """(28,) confusion group of each class, -1 for none."""
    group = np.full(NUM_AVE_CLASSES, -1, dtype=np.int64)
    for g, names in enumerate(AVE_CONFUSION_GROUPS):
        group[[AVE_CLASS_INDEX[name] for name in names]] = g
    return group


@dataclass(frozen=True)
class _World:
    audio_prototypes: np.ndarray  # (C, 128) float32
    visual_prototypes: np.ndarray  # (C, 512) float32
    teachers: TeacherWorld


def _prototypes(dim: int, gain: float, share: float, rng: np.random.Generator) -> np.ndarray:
    """(C, dim) class prototypes; classes of a confusion group share `share` of the variance."""
    group = _group_ids()
    own = rng.standard_normal((NUM_AVE_CLASSES, dim))
    common = rng.standard_normal((len(AVE_CONFUSION_GROUPS), dim))[np.maximum(group, 0)]
    mixed = np.where(group[:, None] >= 0, np.sqrt(1 - share) * own + np.sqrt(share) * common, own)
    return (gain * mixed).astype(np.float32)


def build_world(params: AveSimParams, seed: int) -> _World:
    """The per-seed constants: feature prototypes and the teachers' similarity and biases."""
    rng = _rng(seed, WORLD_CODE)
    audio = _prototypes(AUDIO_SHAPE[1], params.audio_feature_gain, params.feature_group_share, rng)
    visual = _prototypes(VISUAL_SHAPE[3], params.visual_feature_gain,
                         params.feature_group_share, rng)
    group = _group_ids()
    same = (group[:, None] == group[None, :]) & (group[:, None] >= 0)
    similarity = np.where(same, params.teachers.confusion, 0.0)
    np.fill_diagonal(similarity, 1.0)
    bias = {pid: params.teachers.class_bias_sd * rng.standard_normal(NUM_AVE_CLASSES)
            for pid in PROMPT_IDS}
    ones = np.ones(NUM_AVE_CLASSES)
    return _World(audio, visual, TeacherWorld(similarity, bias, {"visual": ones, "audio": ones}))


# ---------------------------------------------------------------- presence and latent salience

def _presence(truth: np.ndarray, label: np.ndarray, params: AveSimParams,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, T) audible and visible presence of each video's own class, and its distractor (n,)
    (-1 for none). The event is both; off the event at most one modality carries the class."""
    n, t = truth.shape
    event = (truth != BACKGROUND).astype(np.float32)  # (n, T)
    rate = np.full(1, params.one_modality_rate)
    chain = _miss_chain((n, t, 1), rate, params.one_modality_stay, rng)[..., 0]  # (n, T)
    audio_side = rng.random((n, 1)) < 0.5  # which modality the off-event evidence is in
    off = chain & (event == 0) & (label[:, None] != BACKGROUND)
    level = params.one_modality_level
    audible = event + level * (off & audio_side)
    visible = event + level * (off & ~audio_side)
    has = rng.random(n) < params.distractor_rate
    shift = rng.integers(1, NUM_AVE_CLASSES, size=n)
    own = np.where(label == BACKGROUND, rng.integers(0, NUM_AVE_CLASSES, size=n), label)
    distractor = np.where(has, (own + shift) % NUM_AVE_CLASSES, -1)
    return audible.astype(np.float32), visible.astype(np.float32), distractor


def _salience(truth: np.ndarray, label: np.ndarray, params: AveSimParams,
              rng: np.random.Generator) -> Latent:
    """Latent salience (n, T, C) of the video's class and its distractor, per modality."""
    n, t = truth.shape
    sim = params.teachers
    audible, visible, distractor = _presence(truth, label, params, rng)
    audio = np.zeros((n, t, NUM_AVE_CLASSES), np.float32)
    visual = np.zeros_like(audio)
    rows = np.arange(n)
    events = label != BACKGROUND
    loud = _lognormal(rng, (n, 1), sim.audio_video_loudness_sd) * _lognormal(
        rng, (n, t), sim.audio_segment_sd)  # (n, T)
    clarity = _lognormal(rng, (n, 1), sim.visual_video_sd)
    # per-video miss rate of its own class (background videos: unused, any valid class)
    miss_rate = _class_array(AVE_VISUAL_MISS_RATE, 0.1)[np.minimum(label, NUM_AVE_CLASSES - 1)]
    missed = _miss_chain((n, t, 1), miss_rate[:, None], sim.visual_miss_stay, rng)[..., 0]
    miss = np.where(missed, sim.visual_miss_factor, 1.0)  # (n, T)
    audio[rows[events], :, label[events]] = (audible * loud)[events]
    visual[rows[events], :, label[events]] = (visible * clarity * miss)[events]
    extra = distractor >= 0
    for target in (audio, visual):
        on = rng.random((n, t)) < params.distractor_segment_rate
        strength = params.distractor_level * _lognormal(rng, (n, 1), 0.3)
        target[rows[extra], :, distractor[extra]] += (on * strength)[extra]
    return Latent(audio, visual, np.zeros_like(visual))


# ---------------------------------------------------------------- features

def _footprints(n: int, params: AveSimParams, rng: np.random.Generator) -> np.ndarray:
    """(n, 49) object blob per video on the 7x7 grid, peak 1 at a uniform centre."""
    centre = rng.uniform(0, GRID_SIDE - 1, size=(n, 2))
    sigma = rng.uniform(*params.footprint_sigma, size=(n, 1))
    yy, xx = np.meshgrid(np.arange(GRID_SIDE), np.arange(GRID_SIDE), indexing="ij")
    cells = np.stack([yy.ravel(), xx.ravel()], axis=1)  # (49, 2)
    dist2 = ((cells[None] - centre[:, None]) ** 2).sum(-1)  # (n, 49)
    return np.exp(-dist2 / (2 * sigma ** 2)).astype(np.float32)


def _features(latent: Latent, label: np.ndarray, world: _World, params: AveSimParams,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Audio (n, T, 128) and visual (n, T, 7, 7, 512) float32 features of one chunk."""
    n, t, _ = latent.audio.shape
    dim_a, dim_v = AUDIO_SHAPE[1], VISUAL_SHAPE[3]
    audio = rng.standard_normal((n, t, dim_a), dtype=np.float32)
    audio += params.nuisance_sd * rng.standard_normal((n, 1, dim_a), dtype=np.float32)
    audio += latent.audio @ world.audio_prototypes
    visual = rng.standard_normal((n, t, GRID_SIDE * GRID_SIDE, dim_v), dtype=np.float32)
    visual += params.nuisance_sd * rng.standard_normal((n, 1, 1, dim_v), dtype=np.float32)
    # every class present in the video sits at its own footprint: (n, T, 49, 512) per class
    for c in np.unique(np.nonzero(latent.visual.any(axis=1))[1]):
        videos = np.flatnonzero(latent.visual[:, :, c].any(axis=1))
        blob = _footprints(len(videos), params, rng)  # (v, 49)
        visual[videos] += (latent.visual[videos, :, c][:, :, None, None] * blob[:, None, :, None]
                           * world.visual_prototypes[c])
    return audio, visual.reshape(n, t, GRID_SIDE, GRID_SIDE, dim_v)


# ---------------------------------------------------------------- splits and the dataset

def background_split(count: int) -> AveSplit:
    """The weak setting's background-only videos: label and every segment BACKGROUND."""
    return AveSplit("noisy", np.arange(count, dtype=np.int64),
                    np.array([f"background-{i:03d}" for i in range(count)], dtype=object),
                    np.full(count, BACKGROUND, dtype=np.int64),
                    np.full((count, NUM_AVE_SEGMENTS), BACKGROUND, dtype=np.int64))


def subsample(split: AveSplit, count: int, rng: np.random.Generator) -> AveSplit:
    """A seeded random `count` videos of a split, kept in the official order (0 = all). Not the
    first rows: the official orders are grouped by class (the first 100 train videos are all
    "Church bell")."""
    if count <= 0 or count >= len(split):
        return split
    keep = np.sort(rng.permutation(len(split))[:count])
    return AveSplit(split.split, split.indices[keep], split.video_ids[keep],
                    split.video_label[keep], split.truth[keep])


def simulate_split(base: AveSplit, world: _World, cfg: AveSimConfig,
                   params: AveSimParams = DEFAULT_AVE_PARAMS,
                   out: tuple[np.ndarray, np.ndarray] | None = None) -> AveSimSplit:
    """Features and teacher probabilities for one split, chunk by chunk (keyed randomness);
    `out`: (n, 10, 128) and (n, 10, 7, 7, 512) arrays to fill (views of a larger buffer)."""
    n = len(base)
    audio, visual = out if out is not None else (
        np.empty((n, *AUDIO_SHAPE), dtype=cfg.feature_dtype),
        np.empty((n, *VISUAL_SHAPE), dtype=cfg.feature_dtype))
    probs = {pid: np.empty((n, NUM_AVE_SEGMENTS, NUM_AVE_CLASSES), np.float32)
             for pid in PROMPT_IDS}
    for index, lo in enumerate(range(0, n, CHUNK)):
        rows = slice(lo, min(lo + CHUNK, n))
        seeds = np.random.SeedSequence([cfg.seed, SPLIT_CODES[base.split], index]).spawn(3)
        latent_rng, feature_rng, teacher_rng = (np.random.default_rng(s) for s in seeds)
        latent = _salience(base.truth[rows], base.video_label[rows], params, latent_rng)
        audio[rows], visual[rows] = _features(latent, base.video_label[rows], world, params,
                                              feature_rng)
        cosines = simulate_cosines(latent, world.teachers, params.teachers, teacher_rng)
        for pid, cos in cosines.items():
            probs[pid][rows] = softmax_cosines(cos.astype(np.float64))
    return AveSimSplit(base, audio, visual, probs)


def load_ave_dataset(cfg: AveSimConfig, params: AveSimParams = DEFAULT_AVE_PARAMS,
                     progress: bool = False) -> AveDataset:
    """AVE-sim: the real AVE annotations, simulated features and CLIP/CLAP teachers.

    Memory: the visual maps are 10 x 49 x 512 values per video (490 KB in float16), so the full
    dataset (3,339 + 178 + 402 + 402 videos) holds ~2.1 GB in RAM; `num_train` bounds it.
    """
    check_ave_sim_config(cfg)
    start = time.perf_counter()
    world = build_world(params, cfg.seed)
    bases = {"train": subsample(load_split("train"), cfg.num_train,
                                _rng(cfg.seed, SUBSAMPLE_CODE, 0)),
             "background": background_split(cfg.num_background),
             "val": subsample(load_split("val"), cfg.max_eval_videos,
                              _rng(cfg.seed, SUBSAMPLE_CODE, 1)),
             "test": subsample(load_split("test"), cfg.max_eval_videos,
                               _rng(cfg.seed, SUBSAMPLE_CODE, 2))}
    # train and background videos share one buffer: the weak training set without a copy
    weak = len(bases["train"]) + len(bases["background"])
    weak_audio = np.empty((weak, *AUDIO_SHAPE), dtype=cfg.feature_dtype)
    weak_visual = np.empty((weak, *VISUAL_SHAPE), dtype=cfg.feature_dtype)
    cut = len(bases["train"])
    buffers = {"train": (weak_audio[:cut], weak_visual[:cut]),
               "background": (weak_audio[cut:], weak_visual[cut:])}
    splits = {}
    for name, base in bases.items():
        splits[name] = simulate_split(base, world, cfg, params, buffers.get(name))
        if progress:
            print(f"[ave-sim] {name}: {len(base)} videos ({time.perf_counter() - start:.1f}s)",
                  file=sys.stderr)
    digest = dataset_digest(cfg, params, splits)
    description = (f"AVE-sim v{AVE_SIM_VERSION} seed={cfg.seed}: train {len(splits['train'])} "
                   f"+ {len(splits['background'])} background videos, val {len(splits['val'])}"
                   f" / test {len(splits['test'])} (real AVE annotations on every split), "
                   f"simulated features {cfg.feature_dtype} (audio 10x128, visual 10x7x7x512) "
                   f"and CLIP/CLAP {','.join(PROMPT_IDS)}")
    return AveDataset(splits["train"], splits["background"], splits["val"], splits["test"],
                      cfg, digest, description, weak_audio, weak_visual)


def dataset_digest(cfg: AveSimConfig, params: AveSimParams,
                   splits: dict[str, AveSimSplit]) -> str:
    """sha256 over the version, the config, the constants, the truth, the audio features and the
    teacher probabilities (the visual maps are a function of these keys; hashing 2 GB is slow)."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": AVE_SIM_VERSION, "cfg": dataclasses.asdict(cfg),
                         "params": dataclasses.asdict(params)}, sort_keys=True,
                        default=str).encode())
    for name in sorted(splits):
        split = splits[name]
        for array in (split.annotations.indices, split.annotations.truth, split.audio,
                      *(split.teachers[pid] for pid in PROMPT_IDS)):
            h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()
