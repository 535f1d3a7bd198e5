"""`build_sim_dataset`: the LLP-sim benchmark as a `vaplan.data.types.Dataset`.

Randomness is keyed, never sequential across splits: every (seed, split, chunk) has its own
SeedSequence, spawned into independent streams for truth, latent, features and teachers. The
arrays depend only on the config and `SimParams`, and changing a feature constant leaves the
truth and the teacher scores unchanged (their streams do not depend on the feature draws).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time

import numpy as np

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS
from vaplan.config import SimConfig, to_dict
from vaplan.data.llp import load_split
from vaplan.data.types import Dataset, SplitData
from vaplan.sim.features import allocate_features, build_feature_world, fill_features, FeatureWorld
from vaplan.sim.latent import sample_latent
from vaplan.sim.params import DEFAULT_PARAMS, SIM_VERSION, SimParams
from vaplan.sim.teachers import (PROMPT_IDS, SimTeacherScores, TeacherWorld, build_teacher_world,
                                 simulate_cosines, softmax_cosines)
from vaplan.sim.truth import (TruthBank, bank_splits, build_truth_bank, check_num_train,
                              sample_train_truth, subsample_indices)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
WORLD_CODE = 97  # stream key of the per-seed "world" (prototypes, prompt biases)
SUBSAMPLE_CODE = 98  # stream key of the val/test subsampling
CHUNK = 500  # videos generated at once (bounds float32 temporaries to ~60 MB)


@dataclasses.dataclass(frozen=True)
class _World:
    features: FeatureWorld
    teachers: TeacherWorld
    bank: TruthBank


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def build_sim_dataset(cfg: SimConfig, progress: bool = False,
                      params: SimParams = DEFAULT_PARAMS) -> Dataset:
    """LLP-sim train/val/test with features, segment truth and simulated teacher scores."""
    check_num_train(cfg.num_train)
    start = time.perf_counter()
    val_real, test_real = load_split("val"), load_split("test")
    features_rng, teachers_rng = (_rng(cfg.seed, WORLD_CODE, i) for i in range(2))
    world = _World(build_feature_world(params, features_rng),
                   build_teacher_world(params, teachers_rng),
                   sim_truth_bank(cfg.pattern_bank, {"val": val_real, "test": test_real}))
    bases = {
        "train": load_split("train").subset(np.arange(cfg.num_train)),
        "val": val_real.subset(subsample_indices(
            len(val_real), cfg.val_fraction, _rng(cfg.seed, SUBSAMPLE_CODE, 1))),
        "test": test_real.subset(subsample_indices(
            len(test_real), cfg.test_fraction, _rng(cfg.seed, SUBSAMPLE_CODE, 2))),
    }
    splits, teachers = {}, {}
    for name, base in bases.items():
        splits[name], teachers[name] = simulate_split(base, world, cfg, params, progress)
    digest = dataset_digest(cfg, params, splits, teachers)
    leak = " (TEST LEAK, comparison only)" if "test" in world.bank.splits else ""
    if cfg.teacher_only_share:
        leak += f", teacher-only share of visual teacher misses {cfg.teacher_only_share:g}"
    description = (f"LLP-sim v{SIM_VERSION} seed={cfg.seed}: train {len(splits['train'])} "
                   f"(real labels, segment truth drawn from {cfg.pattern_bank} patterns{leak}), "
                   f"val {len(splits['val'])} / test {len(splits['test'])} (real annotations), "
                   f"features {cfg.feature_dtype}, simulated CLIP/CLAP {','.join(PROMPT_IDS)}")
    if progress:
        print(f"[llp-sim] built in {time.perf_counter() - start:.1f}s: {description}",
              file=sys.stderr)
    return Dataset(splits["train"], splits["val"], splits["test"], teachers, digest, description)


def sim_truth_bank(pattern_bank: str, real: dict[str, SplitData] | None = None) -> TruthBank:
    """The bank of real joint patterns the training truth of `pattern_bank` is drawn from.

    `real` maps split names to the real annotated splits (loaded when missing). Only the explicit
    comparison value "val+test" may use the test annotations (issue 18).
    """
    names = bank_splits(pattern_bank)
    real = real or {}
    splits = [real[name] if name in real else load_split(name) for name in names]
    return build_truth_bank(splits, allow_test=pattern_bank == "val+test")


def simulate_split(base: SplitData, world: _World, cfg: SimConfig, params: SimParams,
                   progress: bool = False) -> tuple[SplitData, SimTeacherScores]:
    """Features (and, for train, segment truth) plus teacher scores for one split, by chunks."""
    n = len(base)
    sample_truth = base.gt_audio is None
    gt_audio = np.zeros((n, NUM_SEGMENTS, NUM_CLASSES), np.uint8) if sample_truth else base.gt_audio
    gt_visual = np.zeros_like(gt_audio) if sample_truth else base.gt_visual
    features = allocate_features(n, cfg.feature_dtype)
    probs = {pid: np.empty((n, NUM_SEGMENTS, NUM_CLASSES), np.float32) for pid in PROMPT_IDS}
    cosines = {pid: np.empty_like(probs[pid]) for pid in PROMPT_IDS}
    for index, lo in enumerate(range(0, n, CHUNK)):
        rows = slice(lo, min(lo + CHUNK, n))
        seeds = np.random.SeedSequence([cfg.seed, SPLIT_CODES[base.name], index]).spawn(4)
        truth_rng, latent_rng, feature_rng, teacher_rng = (np.random.default_rng(s) for s in seeds)
        labels = base.video_labels[rows]  # (n, C)
        if sample_truth:
            gt_audio[rows], gt_visual[rows] = sample_train_truth(
                labels, world.bank, params.prior_count, truth_rng)
        latent = sample_latent(gt_audio[rows], gt_visual[rows], labels, params, latent_rng,
                               cfg.teacher_only_share)
        fill_features(features, rows, latent, world.features, params, feature_rng)
        for pid, cos in simulate_cosines(latent, world.teachers, params, teacher_rng).items():
            cosines[pid][rows] = cos
            probs[pid][rows] = softmax_cosines(cos.astype(np.float64))
        if progress:
            print(f"[llp-sim] {base.name}: {rows.stop}/{n} videos", file=sys.stderr)
    split = SplitData(base.name, base.video_ids, base.video_labels, gt_audio, gt_visual, features)
    meta = {"source": "llp-sim", "sim_version": SIM_VERSION, "seed": str(cfg.seed),
            "params_digest": params_digest(params), "split": base.name,
            "pattern_bank": cfg.pattern_bank, "teacher_only_share": str(cfg.teacher_only_share),
            "visual_model": "sim-clip", "audio_model": "sim-clap", "prompts": ",".join(PROMPT_IDS)}
    return split, SimTeacherScores(base.video_ids, probs, meta, cosines)


def params_digest(params: SimParams) -> str:
    """Short sha256 of the generative model's constants (and the model version)."""
    payload = json.dumps({"sim_version": SIM_VERSION, "params": dataclasses.asdict(params)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def dataset_digest(cfg: SimConfig, params: SimParams, splits: dict[str, SplitData],
                   teachers: dict[str, SimTeacherScores]) -> str:
    """sha256 over the config, the model constants and every array of the dataset."""
    h = hashlib.sha256()
    h.update(json.dumps({"sim_version": SIM_VERSION, "cfg": to_dict(cfg),
                         "params": dataclasses.asdict(params)}, sort_keys=True).encode())
    for name in ("train", "val", "test"):
        split, scores = splits[name], teachers[name]
        h.update("\n".join(map(str, split.video_ids)).encode())
        feats = split.features
        for array in (split.video_labels, split.gt_audio, split.gt_visual, feats.audio,
                      feats.visual, feats.visual_3d, *(scores.probs[p] for p in PROMPT_IDS)):
            h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()
