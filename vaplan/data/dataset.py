"""One entry point for a complete benchmark: `load_dataset(DataConfig) -> Dataset`.

- source "sim": LLP-sim (vaplan.sim) with the real val/test annotations.
- source "llp": the real LLP annotations, compact feature stores under `feature_dir/<split>`
  (written by `vaplan build-features`) and the teacher score cache written by `vaplan teach`.
  With feature_set "clip_clap" the HAN inputs are the cached CLIP/CLAP segment embeddings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from vaplan.config import DataConfig
from vaplan.data.features import load_feature_store
from vaplan.data.llp import load_split
from vaplan.data.types import Dataset, SplitData
from vaplan.errors import DataFileNotFoundError

SPLITS = ("train", "val", "test")


def load_dataset(cfg: DataConfig, progress: bool = False) -> Dataset:
    """Build or load the dataset `cfg` describes (features, labels, truth, teacher scores)."""
    if cfg.source == "sim":
        from vaplan.sim import build_sim_dataset  # numpy only; imported here to keep start-up light

        return build_sim_dataset(cfg.sim, progress=progress)
    if cfg.source == "llp":
        try:
            return _load_llp(cfg)
        except FileNotFoundError as err:  # a path the user gave: one line in every CLI
            raise DataFileNotFoundError(str(err)) from None
    raise ValueError(f"data.source must be 'sim' or 'llp', got {cfg.source!r}")


def _require_path(option: str, value: str) -> Path:
    if not value:
        raise ValueError(f"data.source='llp' needs {option} (set it with --set {option}=PATH)")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{option}: {path} does not exist")
    return path


def _load_llp(cfg: DataConfig) -> Dataset:
    from vaplan.teachers.cache import load_teacher_scores, read_cache_meta
    from vaplan.teachers.features import load_clip_clap_features

    cache = _require_path("data.teacher_cache", cfg.teacher_cache)
    splits: dict[str, SplitData] = {}
    teachers = {}
    for name in SPLITS:
        split = load_split(name)
        ids = [str(v) for v in split.video_ids]
        teachers[name] = load_teacher_scores(cache, ids, allow_random=cfg.allow_random_teachers)
        if cfg.feature_set == "clip_clap":
            split.features = load_clip_clap_features(cache, ids, cfg.allow_random_teachers)
        else:
            store = _require_path("data.feature_dir", cfg.feature_dir) / name
            split.features = load_feature_store(store, ids)
        splits[name] = split
    meta = read_cache_meta(cache)
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
