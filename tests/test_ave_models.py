"""AVEL's weak model, its weak training (+PLG segment objective) and PLG for AVEL (vaplan.ave)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaplan.ave.avel import AVELWeak, count_parameters
from vaplan.ave.train import (AveSplitTensors, AveTrainConfig, evaluate, plg_segment_classes,
                              train_weak, weak_loss)
from vaplan.data.ave import BACKGROUND
from vaplan.errors import ConfigError

# The reference att_Net(128, 128, 512, 29) of AVE-ECCV18 models_weakly.py, layer by layer:
# BiLSTM(128->128) 2*(4*128*(128+128) + 2*4*128) = 264,192; BiLSTM(512->128) 657,408;
# affine_audio 128*512+512 = 66,048; affine_video 512*512+512 = 262,656; affine_v, affine_g
# 512*49 each = 50,176; affine_h 49; L1 512*64+64 = 32,832; L2 64*29+29 = 1,885.
AVEL_REFERENCE_PARAMETERS = 1_335_246


def test_avel_matches_the_reference_size_and_shapes():
    model = AVELWeak()
    assert count_parameters(model) == AVEL_REFERENCE_PARAMETERS
    video, scores = model(torch.randn(3, 10, 128), torch.randn(3, 10, 7, 7, 512))
    assert video.shape == (3, 29) and scores.shape == (3, 10, 29)
    torch.testing.assert_close(video.sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match=r"visual \(B, 10, 7, 7, 512\)"):
        model(torch.randn(3, 10, 128), torch.randn(3, 10, 49, 512))


def synthetic_split(num_videos: int, seed: int, classes=(0, 5, 11, 20)) -> AveSplitTensors:
    """Events carry their class prototype (audio, and visual at one grid cell); background is noise."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(99).normal(size=(28, 128 + 512)).astype(np.float32)
    label = rng.choice(classes, size=num_videos)
    truth = np.full((num_videos, 10), BACKGROUND)
    audio = rng.normal(scale=0.5, size=(num_videos, 10, 128)).astype(np.float32)
    visual = rng.normal(scale=0.5, size=(num_videos, 10, 7, 7, 512)).astype(np.float32)
    for n in range(num_videos):
        start = rng.integers(0, 6)
        end = rng.integers(start + 2, 11)
        truth[n, start:end] = label[n]
        audio[n, start:end] += prototypes[label[n], :128]
        visual[n, start:end, rng.integers(7), rng.integers(7)] += prototypes[label[n], 128:]
    return AveSplitTensors(audio.astype(np.float16), visual.astype(np.float16), label, truth)


CFG = AveTrainConfig(epochs=4, batch_size=16, eval_every=2, seed=3)


def seeded_model(seed: int = 3) -> AVELWeak:
    """A narrower AVEL (the reference's layers, smaller widths) keeps the training tests fast."""
    torch.manual_seed(seed)
    return AVELWeak(lstm_dim=32, attention_dim=64)


@pytest.fixture(scope="module")
def splits():
    return synthetic_split(48, seed=1), synthetic_split(24, seed=2)


@pytest.fixture(scope="module")
def weak(splits):
    return train_weak(seeded_model(), CFG, *splits)


def test_weak_training_learns_from_video_labels(splits, weak):
    _, val = splits
    before = evaluate(seeded_model(), val)
    assert [r["epoch"] for r in weak.history if "val_accuracy" in r] == [2, 4]
    assert weak.best_val_accuracy == max(r["val_accuracy"] for r in weak.history
                                         if "val_accuracy" in r)
    assert weak.best_val_accuracy > before + 20  # the events' classes are learnt
    assert weak.history[-1]["loss"] < weak.history[0]["loss"]
    assert evaluate(weak.model, val) == weak.best_val_accuracy  # the kept weights are the best


def test_weak_training_is_deterministic_for_a_seed(splits):
    short = dataclasses.replace(CFG, epochs=1, eval_every=1)
    first, second = (train_weak(seeded_model(), short, *splits) for _ in range(2))
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]


def test_plg_segment_objective_uses_the_pseudo_labels(splits, weak):
    train, val = splits
    exact = AveSplitTensors(train.audio, train.visual, train.video_label, pseudo=train.truth)
    guided = train_weak(seeded_model(), dataclasses.replace(CFG, plg_weight=1.0), exact, val)
    # exact segment labels as "pseudo labels" must localize better than video labels alone
    assert guided.best_val_accuracy > weak.best_val_accuracy
    with pytest.raises(ConfigError, match="needs PLG segment labels"):
        weak_loss(torch.full((2, 29), 1 / 29), torch.tensor([0, 1]), torch.zeros(2, 10, 29),
                  None, plg_weight=1.0)


def test_plg_for_avel_is_the_intersection_within_the_video_label():
    label = np.array([2, 7])
    clip = np.zeros((2, 3, 28), dtype=np.float32)
    clap = np.zeros((2, 3, 28), dtype=np.float32)
    clip[0, :, 2] = [0.9, 0.9, 0.1]
    clap[0, :, 2] = [0.9, 0.1, 0.9]
    clip[1, :, 3] = clap[1, :, 3] = 0.9  # another class than the video's: ignored
    classes = plg_segment_classes(label, clip, clap, visual_threshold=0.5, audio_threshold=0.5)
    np.testing.assert_array_equal(classes, [[2, BACKGROUND, BACKGROUND], [BACKGROUND] * 3])


@pytest.mark.parametrize("field, value", [("epochs", 0), ("lr", float("nan")), ("plg_weight", -1.0)])
def test_bad_recipe_values_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"ave.train.{field} must be"):
        AveTrainConfig(**{field: value})
