"""load_dataset(source="llp"): feature stores + teacher cache written by the test in the real formats."""

import numpy as np
import pytest

from vaplan.config import DataConfig
from vaplan.data import dataset as dataset_mod
from vaplan.data import llp
from vaplan.data.features import build_feature_store
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS, prompt_texts
from vaplan.teachers.cache import ScoreCacheWriter, build_cache_meta

SHAPES = {"vggish": (10, 128), "res152": (80, 2048), "r2plus1d_18": (10, 512)}


@pytest.fixture()
def small_llp(tmp_path, monkeypatch):
    """Three videos per split: official .npy layout, compact stores and a teacher cache."""
    splits = {name: llp.load_split(name).subset(np.arange(3)) for name in dataset_mod.SPLITS}
    monkeypatch.setattr(dataset_mod, "load_split", lambda name: splits[name].subset(np.arange(3)))
    rng = np.random.default_rng(0)
    feats = tmp_path / "feats"
    for stream, shape in SHAPES.items():
        (feats / stream).mkdir(parents=True)
        for split in splits.values():
            for vid in split.video_ids:
                np.save(feats / stream / f"{vid[:11]}.npy", rng.normal(size=shape).astype(np.float32))
    for name, split in splits.items():
        build_feature_store(feats, split, tmp_path / "stores" / name, progress=False)
    teachers = {"visual": {"model": "test-clip", "checkpoint": "", "checkpoint_sha256": "",
                           "prompts": {p: prompt_texts(p) for p in VISUAL_PROMPTS}},
                "audio": {"model": "test-clap", "checkpoint": "", "checkpoint_sha256": "",
                          "prompts": {p: prompt_texts(p) for p in AUDIO_PROMPTS}}}
    cache = tmp_path / "cache"
    with ScoreCacheWriter(cache, build_cache_meta(teachers, False, source="test")) as writer:
        for split in splits.values():
            ids = [str(v) for v in split.video_ids]
            for modality, pids in (("visual", VISUAL_PROMPTS), ("audio", AUDIO_PROMPTS)):
                probs = {p: rng.dirichlet(np.ones(25), size=(3, 10)).astype(np.float32) for p in pids}
                writer.append(ids, modality, probs,
                              embeddings=rng.normal(size=(3, 10, 512)).astype(np.float32))
    return splits, tmp_path / "stores", cache


def test_official_features_and_teacher_scores_align(small_llp):
    splits, stores, cache = small_llp
    data = dataset_mod.load_dataset(DataConfig(source="llp", feature_dir=str(stores),
                                               teacher_cache=str(cache)))
    assert data.val.features.visual.shape == (3, 10, 2048)
    assert data.train.features.visual_3d.shape == (3, 10, 512)
    assert list(data.teachers["test"].video_ids) == list(splits["test"].video_ids)
    assert set(data.teachers["val"].probs) == {"VP1", "VP2", "VP3", "VP4", "AP1", "AP2"}
    assert np.array_equal(data.val.gt_visual, splits["val"].gt_visual)
    assert len(data.digest) == 16


def test_clip_clap_features_come_from_the_cache(small_llp):
    _, _, cache = small_llp
    data = dataset_mod.load_dataset(DataConfig(source="llp", feature_set="clip_clap",
                                               teacher_cache=str(cache)))
    assert data.train.features.audio.shape == (3, 10, 512)
    assert data.train.features.visual_3d is None


def test_missing_paths_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="data.teacher_cache"):
        dataset_mod.load_dataset(DataConfig(source="llp"))
    with pytest.raises(FileNotFoundError, match="data.teacher_cache"):
        dataset_mod.load_dataset(DataConfig(source="llp", teacher_cache=str(tmp_path / "nope")))
