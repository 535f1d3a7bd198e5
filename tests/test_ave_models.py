"""The AVE weak models (AVEL, PSP, CMBS), their one weak training loop (+PLG segment objective)
and PLG for AVEL (vaplan.ave)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaplan.ave import AVE_MODELS, AVE_RECIPES, ave_recipe, build_ave_model
from vaplan.ave.avel import AVELWeak, AveOutput, count_parameters
from vaplan.ave.train import (AveSplitTensors, AveTrainConfig, evaluate, plg_segment_classes,
                              train_weak, weak_loss, weak_step)
from vaplan.data.ave import BACKGROUND
from vaplan.errors import ConfigError

# The reference att_Net(128, 128, 512, 29) of AVE-ECCV18 models_weakly.py, layer by layer:
# BiLSTM(128->128) 2*(4*128*(128+128) + 2*4*128) = 264,192; BiLSTM(512->128) 657,408;
# affine_audio 128*512+512 = 66,048; affine_video 512*512+512 = 262,656; affine_v, affine_g
# 512*49 each = 50,176; affine_h 49; L1 512*64+64 = 32,832; L2 64*29+29 = 1,885.
AVEL_REFERENCE_PARAMETERS = 1_335_246
# Used parameters (those receiving a gradient) of the references, counted by building them in a
# one-off script outside the repository (docs/ave.md "Models"): PSP_CVPR_2021 weakly_model.py
# psp_net(128, 512, 128, 29) holds 1,254,251, of which temperature (29), W1 (256) and W2 (64)
# are unused; CMBS model/main_model.py weak_main_model(configs/weak.json) holds 14,789,439, of
# which 5,393,921 are unused (the deep-copied encoder/decoder layer templates, the decoders'
# self-attention, ave_bottleneck, classifier).
REFERENCE_PARAMETERS = {"avel": AVEL_REFERENCE_PARAMETERS, "psp": 1_253_902, "cmbs": 9_395_518}


def test_avel_matches_the_reference_size_and_shapes():
    model = AVELWeak()
    assert count_parameters(model) == AVEL_REFERENCE_PARAMETERS
    video, scores, _ = model(torch.randn(3, 10, 128), torch.randn(3, 10, 7, 7, 512))
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
        weak_loss(AveOutput(torch.full((2, 29), 1 / 29), torch.zeros(2, 10, 29),
                            torch.zeros(2, 10, 29)), torch.tensor([0, 1]), None, plg_weight=1.0)


def test_plg_for_avel_is_the_intersection_within_the_video_label():
    label = np.array([2, 7, BACKGROUND])  # the last: a background-only training video
    clip = np.zeros((3, 3, 28), dtype=np.float32)
    clap = np.zeros((3, 3, 28), dtype=np.float32)
    clip[0, :, 2] = [0.9, 0.9, 0.1]
    clap[0, :, 2] = [0.9, 0.1, 0.9]
    clip[1, :, 3] = clap[1, :, 3] = 0.9  # another class than the video's: ignored
    clip[2] = clap[2] = 0.9
    classes = plg_segment_classes(label, clip, clap, visual_threshold=0.5, audio_threshold=0.5)
    np.testing.assert_array_equal(classes, [[2, BACKGROUND, BACKGROUND], [BACKGROUND] * 3,
                                            [BACKGROUND] * 3])


@pytest.mark.parametrize("field, value", [("epochs", 0), ("lr", float("nan")), ("plg_weight", -1.0)])
def test_bad_recipe_values_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"train.{field} must be"):
        AveTrainConfig(**{field: value})


# ------------------------------------------------ PSP and CMBS next to AVEL (one factory, one loop)

# The references' layers at smaller widths keep the training tests fast (CMBS at its reference
# widths costs ~0.2 GFLOP per segment).
NARROW = {"avel": dict(lstm_dim=32, attention_dim=64), "psp": dict(hidden_dim=32, attention_dim=64),
          "cmbs": dict(d_model=32, visual_dim=64, attention_dim=32, encoder_ffn=64, decoder_ffn=64)}


@pytest.mark.parametrize("name", AVE_MODELS)
def test_each_model_matches_its_reference_size_shapes_and_uses_every_parameter(name):
    torch.manual_seed(0)
    model = build_ave_model(name)
    assert count_parameters(model) == REFERENCE_PARAMETERS[name]
    out = model(torch.randn(2, 10, 128), torch.randn(2, 10, 7, 7, 512))
    assert out.video_probs.shape == (2, 29)
    assert out.segment_scores.shape == out.plg_scores.shape == (2, 10, 29)
    torch.testing.assert_close(out.video_probs.sum(dim=1), torch.ones(2))
    sum(o.sum() for o in out).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    if name == "cmbs":  # the reference's evaluation: the video's class on every segment
        predicted = out.segment_scores.argmax(dim=-1)  # (2, 10)
        assert (predicted == predicted[:, :1]).all()
    with pytest.raises(ValueError, match=rf"{name.upper()} expects audio \(B, 10, 128\)"):
        model(torch.randn(2, 10, 128), torch.randn(2, 10, 49, 512))


def test_unknown_model_names_are_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"unknown AVE model 'han'; expected one of "
                                          r"\['avel', 'psp', 'cmbs'\]"):
        build_ave_model("han")
    with pytest.raises(ConfigError, match="expected one of"):
        ave_recipe("PSP")


def test_recipes_are_the_reference_mains():
    avel, psp, cmbs = (AVE_RECIPES[name] for name in ("avel", "psp", "cmbs"))
    assert (avel.lr, avel.batch_size, avel.epochs, avel.lr_step_size) == (1e-3, 64, 250, 15000)
    assert (psp.lr, psp.batch_size, psp.epochs, psp.milestones(), psp.lr_gamma,
            psp.video_loss) == (1e-3, 128, 300, [80, 160], 0.8, "bce")
    assert (cmbs.lr, cmbs.batch_size, cmbs.epochs, cmbs.milestones(), cmbs.lr_gamma,
            cmbs.clip_grad_norm, cmbs.drop_last) == (6e-4, 64, 200, [10, 20, 40], 0.5, 0.5, False)


@pytest.mark.parametrize("field, value, message", [
    ("lr_milestones", "80;160", "train.lr_milestones must be comma-separated epochs"),
    ("video_loss", "ce", r"train.video_loss must be one of \['soft_margin', 'bce'\]"),
    ("clip_grad_norm", -1.0, "train.clip_grad_norm must be"),
    ("lr_milestones", "10", "are two schedules"),  # next to AVEL's lr_step_size
])
def test_bad_schedule_values_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        AveTrainConfig(**{field: value})


@pytest.mark.parametrize("name", AVE_MODELS)
def test_one_weak_step_with_plg_lowers_the_models_loss(splits, name):
    train = splits[0]
    cfg = dataclasses.replace(ave_recipe(name), plg_weight=1.0)  # its weak loss + PLG's
    audio, visual = (torch.as_tensor(x[:8]).float() for x in (train.audio, train.visual))
    label, pseudo = torch.as_tensor(train.video_label[:8]), torch.as_tensor(train.truth[:8])
    torch.manual_seed(0)
    model = build_ave_model(name, **NARROW[name])

    def loss() -> float:
        model.eval()  # no dropout: the same function before and after the step
        with torch.no_grad():
            return weak_loss(model(audio, visual), label, pseudo, cfg.plg_weight,
                             cfg.video_loss).item()

    before = loss()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    assert weak_step(model, optimizer, cfg, audio, visual, label, pseudo) > 0
    assert loss() < before


@pytest.mark.parametrize("name", ["psp", "cmbs"])
def test_the_shared_loop_trains_psp_and_cmbs_with_their_schedules(splits, name):
    train, val = splits
    small = AveSplitTensors(train.audio[:8], train.visual[:8], train.video_label[:8])
    cfg = dataclasses.replace(AVE_RECIPES[name], epochs=2, batch_size=4, lr_milestones="1",
                              eval_every=2)
    torch.manual_seed(0)
    val = AveSplitTensors(val.audio[:8], val.visual[:8], val.video_label[:8], val.truth[:8])
    result = train_weak(build_ave_model(name, **NARROW[name]), cfg, small, val)
    np.testing.assert_allclose([r["lr"] for r in result.history], [cfg.lr, cfg.lr * cfg.lr_gamma])
    assert result.best_epoch == 2 and 0 <= result.best_val_accuracy <= 100
    assert all(np.isfinite(r["loss"]) for r in result.history)
