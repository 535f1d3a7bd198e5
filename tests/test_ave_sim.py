"""AVE-sim (vaplan.sim.ave) and the quality of PLG's AV segment labels (vaplan.ave.quality)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaplan.ave.quality import (ave_label_quality, event_one_hot, plg_label_quality,
                                search_thresholds)
from vaplan.data.ave import BACKGROUND, load_split
from vaplan.errors import ConfigError
from vaplan.sim.ave import (AveSimConfig, load_ave_dataset, split_tensors, weak_train_tensors)

TINY = AveSimConfig(num_train=24, num_background=4, max_eval_videos=30, seed=5)


@pytest.fixture(scope="module")
def ave_sim():
    return load_ave_dataset(TINY)


@pytest.mark.parametrize("field, value, expected", [
    ("num_train", 3340, "data.sim.num_train must be"),
    ("num_background", 179, "data.sim.num_background must be"),
    ("max_eval_videos", -1, "data.sim.max_eval_videos must be"),
    ("feature_dtype", "int8", "data.sim.feature_dtype must be"),
    ("seed", 1.5, "data.sim.seed must be"),
])
def test_bad_config_values_are_refused(field, value, expected):
    with pytest.raises(ConfigError, match=expected):
        AveSimConfig(**{field: value})


def test_truth_is_the_real_annotation_and_shapes_are_official(ave_sim):
    for name in ("train", "val", "test"):
        split = getattr(ave_sim, name)
        real = load_split(name)
        rows = np.searchsorted(real.indices, split.annotations.indices, sorter=np.argsort(
            real.indices))
        rows = np.argsort(real.indices)[rows]
        np.testing.assert_array_equal(real.indices[rows], split.annotations.indices)
        np.testing.assert_array_equal(real.truth[rows], split.annotations.truth)
        assert split.audio.shape == (len(split), 10, 128) and split.audio.dtype == np.float16
        assert split.visual.shape == (len(split), 10, 7, 7, 512)
        assert np.isfinite(split.visual).all()
        for probs in split.teachers.values():
            assert probs.shape == (len(split), 10, 28)
            np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-4)
    assert len(ave_sim.train) == 24 and len(ave_sim.val) == len(ave_sim.test) == 30
    # a random subset, not the first rows (the official order is grouped by class)
    assert len(set(ave_sim.train.annotations.video_label.tolist())) > 5
    assert (ave_sim.background.annotations.truth == BACKGROUND).all()


def test_seeded_deterministic_and_keyed_by_split(ave_sim):
    again = load_ave_dataset(TINY)
    assert again.digest == ave_sim.digest
    np.testing.assert_array_equal(again.val.visual, ave_sim.val.visual)
    other = dataclasses.replace(TINY, seed=6, num_train=4, max_eval_videos=2)
    assert load_ave_dataset(other).digest != ave_sim.digest
    bigger = load_ave_dataset(dataclasses.replace(TINY, num_train=26))
    np.testing.assert_array_equal(bigger.val.audio, ave_sim.val.audio)  # val does not move
    np.testing.assert_array_equal(bigger.clip("val"), ave_sim.clip("val"))


def test_teachers_see_the_event_and_plg_beats_trivial_labels(ave_sim):
    val = ave_sim.val.annotations
    clip, clap = ave_sim.clip("val"), ave_sim.clap("val")
    own = np.take_along_axis(clip, val.video_label[:, None, None].repeat(10, 1), axis=2)[..., 0]
    event = val.truth != BACKGROUND
    assert own[event].mean() > own[~event].mean()  # CLIP's own-class score marks the event
    grid = (0.034, 0.035, 0.036, 0.037, 0.038)
    choice = search_thresholds(val.video_label, val.truth, clip, clap, grid)
    everywhere = ave_label_quality(np.repeat(val.video_label[:, None], 10, 1), val.truth)
    assert choice.quality["accuracy"] > everywhere["accuracy"] - 10
    assert choice.quality == plg_label_quality(val.video_label, val.truth, clip, clap,
                                               choice.visual_threshold, choice.audio_threshold)


def test_label_quality_values():
    truth = np.array([[3, 3, BACKGROUND, BACKGROUND], [BACKGROUND] * 4])
    pseudo = np.array([[3, BACKGROUND, BACKGROUND, 3], [BACKGROUND] * 4])
    quality = ave_label_quality(pseudo, truth)
    assert quality["accuracy"] == pytest.approx(100 * 6 / 8)
    # video 1: TP 1, FP 1, FN 1 -> F 50; video 2: nothing to find -> 100 (the AVVP convention)
    assert quality["seg"] == pytest.approx(75.0)
    assert event_one_hot(truth).shape == (2, 4, 28) and event_one_hot(truth)[1].sum() == 0
    with pytest.raises(ValueError, match="must both be"):
        ave_label_quality(pseudo[:, :3], truth)


def test_weak_training_set_and_a_training_step(ave_sim):
    import torch

    from vaplan.ave.avel import AVELWeak
    from vaplan.ave.train import AveTrainConfig, train_weak

    weak = weak_train_tensors(ave_sim)
    assert len(weak.video_label) == 28 and (weak.video_label[24:] == BACKGROUND).all()
    assert np.shares_memory(weak.visual, ave_sim.train.visual)  # no copy of the maps
    pseudo = np.full((24, 10), BACKGROUND)
    assert (weak_train_tensors(ave_sim, pseudo).pseudo[24:] == BACKGROUND).all()
    with pytest.raises(ValueError, match="must match the train split"):
        weak_train_tensors(ave_sim, pseudo[:3])
    torch.manual_seed(0)
    result = train_weak(AVELWeak(lstm_dim=16, attention_dim=32),
                        AveTrainConfig(epochs=1, batch_size=16, seed=0), weak,
                        split_tensors(ave_sim, "val"))
    assert 0 <= result.best_val_accuracy <= 100 and result.best_epoch == 1
