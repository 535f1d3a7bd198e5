"""One entry point for a complete benchmark: `load_dataset(DataConfig) -> Dataset`.

- source "sim": LLP-sim (vaplan.sim) with the real val/test annotations.
- source "llp": the real LLP annotations, compact feature stores under `feature_dir/<split>`
  (written by `vaplan build-features`) and the teacher score cache written by `vaplan teach`.
  With feature_set "clip_clap" the HAN inputs are the cached CLIP/CLAP segment embeddings.

`data.max_train_videos` / `data.max_eval_videos` (0 = all) keep the first N videos of the
train / val and test split files, in their row order, for either source (docs/real-data.md).
A teacher cache scored with random weights is refused unless `data.allow_random_teachers`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from vaplan.config import DataConfig
from vaplan.data.features import load_feature_store
from vaplan.data.llp import load_split
from vaplan.data.types import Dataset, SplitData, TeacherScores
from vaplan.errors import ConfigError, DataFileNotFoundError, UserError

SPLITS = ("train", "val", "test")


class DataCoverageError(UserError, ValueError):
    """A feature store or teacher cache lacks videos the config needs (names them)."""


def split_limit(cfg: DataConfig, split: str) -> int:
    """How many videos of `split` the config keeps (0 = all)."""
    return cfg.max_train_videos if split == "train" else cfg.max_eval_videos


def load_llp_split(cfg: DataConfig, split: str) -> SplitData:
    """The packaged annotations of `split`, cut to the config's subset (first N rows)."""
    data = load_split(split)
    limit = split_limit(cfg, split)
    if limit and limit < len(data):
        data = data.subset(np.arange(limit))
    return data


def load_dataset(cfg: DataConfig, progress: bool = False) -> Dataset:
    """Build or load the dataset `cfg` describes (features, labels, truth, teacher scores)."""
    if cfg.source == "sim":
        from vaplan.sim import build_sim_dataset  # numpy only; imported here to keep start-up light

        return _limit_sim(build_sim_dataset(cfg.sim, progress=progress), cfg)
    if cfg.source == "llp":
        try:
            return _load_llp(cfg)
        except FileNotFoundError as err:  # a path the user gave: one line in every CLI
            if isinstance(err, UserError):
                raise
            raise DataFileNotFoundError(str(err)) from None
    raise ValueError(f"data.source must be 'sim' or 'llp', got {cfg.source!r}")


def _limit_sim(data: Dataset, cfg: DataConfig) -> Dataset:
    """The sim dataset cut to the configured subsets (unchanged, same digest, when both are 0)."""
    if not (cfg.max_train_videos or cfg.max_eval_videos):
        return data
    splits, teachers = {}, {}
    for name in SPLITS:
        split, scores = getattr(data, name), data.teachers[name]
        limit = split_limit(cfg, name)
        if limit and limit < len(split):
            keep = np.arange(limit)
            split = split.subset(keep)
            scores = TeacherScores(scores.video_ids[keep],
                                   {p: a[keep] for p, a in scores.probs.items()}, scores.meta)
        splits[name], teachers[name] = split, scores
    digest = hashlib.sha256(f"{data.digest}:{cfg.max_train_videos}:{cfg.max_eval_videos}"
                            .encode()).hexdigest()[:16]
    description = f"{data.description} (subset: train {len(splits['train'])}, " \
                  f"val {len(splits['val'])}, test {len(splits['test'])})"
    return Dataset(splits["train"], splits["val"], splits["test"], teachers, digest, description)


def _require_path(option: str, value: str) -> Path:
    if not value:
        raise ValueError(f"data.source='llp' needs {option} (set it with --set {option}=PATH)")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{option}: {path} does not exist")
    return path


def check_random_teachers(cfg: DataConfig, meta: dict) -> None:
    """ConfigError when the cache was scored with random weights and the config disallows it."""
    if meta.get("random_weights") and not cfg.allow_random_teachers:
        raise ConfigError(f"data.teacher_cache={cfg.teacher_cache} was scored with RANDOM teacher "
                          f"weights (vaplan teach --allow-random-weights, a smoke test); its "
                          f"pseudo labels mean nothing. Score the videos with the real "
                          f"checkpoints (docs/real-data.md), or accept it with "
                          f"--set data.allow_random_teachers=true")


def _load_llp(cfg: DataConfig) -> Dataset:
    from vaplan.teachers.cache import CacheError, load_teacher_scores, read_cache_meta
    from vaplan.teachers.features import load_clip_clap_features

    cache = _require_path("data.teacher_cache", cfg.teacher_cache)
    meta = read_cache_meta(cache)
    check_random_teachers(cfg, meta)
    splits: dict[str, SplitData] = {}
    teachers = {}
    for name in SPLITS:
        split = load_llp_split(cfg, name)
        ids = [str(v) for v in split.video_ids]
        try:
            teachers[name] = load_teacher_scores(cache, ids, allow_random=True)  # checked above
            if cfg.feature_set == "clip_clap":
                split.features = load_clip_clap_features(cache, ids, True)
            else:
                store = _require_path("data.feature_dir", cfg.feature_dir) / name
                split.features = load_feature_store(store, ids)
        except (CacheError, KeyError) as err:  # a video the config needs is not there
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            raise DataCoverageError(
                f"{name} split ({len(ids)} videos): {message} "
                f"(`vaplan doctor` lists every gap; docs/real-data.md)") from None
        splits[name] = split
    digest = _llp_digest(cfg, str(meta.get("digest", "")), splits)
    description = (f"LLP ({cfg.feature_set} features): train {len(splits['train'])}, "
                   f"val {len(splits['val'])}, test {len(splits['test'])}; teachers {cache}")
    return Dataset(splits["train"], splits["val"], splits["test"], teachers, digest, description)


def _llp_digest(cfg: DataConfig, teacher_digest: str, splits: dict[str, SplitData]) -> str:
    """Content digest: config, teacher cache digest and a fingerprint of every feature array."""
    h = hashlib.sha256(json.dumps({"feature_set": cfg.feature_set, "teachers": teacher_digest},
                                  sort_keys=True).encode())
    for name in SPLITS:
        feats = splits[name].features
        for array in (feats.audio, feats.visual, feats.visual_3d):
            if array is not None:
                h.update(np.ascontiguousarray(array[:: max(1, len(array) // 64)]).tobytes())
    return h.hexdigest()[:16]
