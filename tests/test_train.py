"""Trainer: targets, determinism, best-epoch selection, prediction, evaluation, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaplan import metrics
from vaplan.config import LossConfig, ModelConfig, TrainConfig
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.models import HAN
from vaplan.train import (Predictions, build_targets, evaluate_model, load_checkpoint, predict,
                          save_checkpoint, train_han)

torch.set_num_threads(1)
T, C = 10, 25
TINY = ModelConfig(audio_dim=8, visual_dim=16, visual_3d_dim=4, hidden_dim=16, ffn_dim=16)


def _noisy(rng, labels: np.ndarray, dim: int) -> np.ndarray:
    """(n, T, dim) float16 noise whose first columns carry the segment labels (learnable)."""
    x = rng.normal(size=labels.shape[:2] + (dim,))
    k = min(dim, labels.shape[2])
    x[..., :k] += 2.0 * labels[..., :k]
    return x.astype(np.float16)


def _split(name: str, n: int, seed: int, cfg: ModelConfig = TINY) -> SplitData:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, C)) < 0.1).astype(np.uint8)
    y[np.arange(n), rng.integers(0, C, n)] = 1  # every video has a label
    gt_a = ((rng.uniform(size=(n, T, C)) < 0.5) * y[:, None]).astype(np.uint8)
    gt_v = ((rng.uniform(size=(n, T, C)) < 0.5) * y[:, None]).astype(np.uint8)
    feats = Features(_noisy(rng, gt_a, cfg.audio_dim), _noisy(rng, gt_v, cfg.visual_dim),
                     _noisy(rng, gt_v, cfg.visual_3d_dim))
    ids = np.array([f"vid{seed:02d}{i:05d}_0_10" for i in range(n)])
    return SplitData(name, ids, y, gt_a, gt_v, feats)


@pytest.fixture(scope="module")
def data():
    train = _split("train", 48, seed=1)
    pseudo = PseudoLabels(train.gt_audio, train.gt_visual)
    return train, _split("val", 16, seed=2), pseudo


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, batch_size=8, epochs=3, seed=7, num_threads=1, model=TINY)
    base.update(kw)
    return TrainConfig(**base)


def test_build_targets_baseline_and_pseudo(data):
    train, _, pseudo = data
    weak = build_targets(train, None)
    assert weak.seg_audio is None and weak.seg_visual is None
    np.testing.assert_array_equal(weak.video_audio, train.video_labels)
    full = build_targets(train, pseudo)
    np.testing.assert_array_equal(full.video_visual, train.gt_visual.max(axis=1))
    assert full.seg_audio.shape == (len(train), T, C) and full.seg_audio.dtype == np.uint8
    with pytest.raises(ValueError, match="seg_audio"):
        build_targets(train, PseudoLabels(pseudo.seg_audio[:3], pseudo.seg_visual))


def test_training_is_deterministic_and_keeps_best_epoch(data):
    train, val, pseudo = data
    targets = build_targets(train, pseudo)
    seen = []
    first = train_han(_cfg(), train, targets, val, on_epoch=seen.append, progress=False)
    second = train_han(_cfg(), train, targets, val, progress=False)
    assert [s.epoch for s in seen] == [1, 2, 3]
    assert [(s.train_loss, s.val) for s in first.history] == \
           [(s.train_loss, s.val) for s in second.history]
    for key, value in first.model.state_dict().items():
        torch.testing.assert_close(value, second.model.state_dict()[key], rtol=0, atol=0)
    scores = [s.val["seg_type"] for s in first.history]
    assert first.best_score == max(scores)
    assert first.best_epoch == 1 + scores.index(max(scores))
    # The returned model carries the best epoch's weights: re-evaluating reproduces its score.
    assert evaluate_model(first.model, val)["seg_type"] == pytest.approx(first.best_score)
    assert first.history[0].train_loss > first.history[-1].train_loss


def test_best_epoch_follows_select_metric(data, monkeypatch):
    train, val, _ = data
    fake = iter([{"seg_type": 1.0, "evt_a": 5.0}, {"seg_type": 3.0, "evt_a": 2.0},
                 {"seg_type": 2.0, "evt_a": 9.0}] * 2)
    monkeypatch.setattr("vaplan.train.evaluate_model", lambda preds, split: next(fake))
    targets = build_targets(train, None)
    cfg = _cfg(loss=LossConfig(variant="baseline"))
    assert train_han(cfg, train, targets, val, progress=False).best_epoch == 2
    result = train_han(dataclasses.replace(cfg, select_metric="evt_a"), train, targets, val,
                       progress=False)
    assert (result.best_epoch, result.best_score) == (3, 9.0)


def test_unknown_select_metric_and_misaligned_targets(data):
    train, val, _ = data
    targets = build_targets(train, None)
    with pytest.raises(ValueError, match="select_metric 'nope'"):
        train_han(_cfg(epochs=1, select_metric="nope", loss=LossConfig(variant="baseline")),
                  train, targets, val, progress=False)
    with pytest.raises(ValueError, match="targets have"):
        train_han(_cfg(), train.subset(np.arange(5)), targets, val, progress=False)


def test_predict_and_evaluate_follow_the_official_protocol(data):
    _, val, _ = data
    torch.manual_seed(0)
    model = HAN(TINY)
    preds = predict(model, val.features, batch_size=5)
    assert preds.prob_seg.shape == (len(val), T, 2, C) and preds.prob_seg.dtype == np.float32
    assert preds.prob_video.shape == preds.prob_audio.shape == (len(val), C)
    pred_a = (preds.prob_seg[:, :, 0] >= 0.5) & (preds.prob_video[:, None] >= 0.5)
    pred_v = (preds.prob_seg[:, :, 1] >= 0.5) & (preds.prob_video[:, None] >= 0.5)
    expected = metrics.avvp_scores(pred_a, pred_v, val.gt_audio, val.gt_visual)
    assert evaluate_model(preds, val) == expected
    assert evaluate_model(model, val) == expected
    # A perfect oracle scores 100 everywhere.
    oracle = Predictions(val.video_labels.astype(np.float32), val.video_labels.astype(np.float32),
                         val.video_labels.astype(np.float32),
                         np.stack([val.gt_audio, val.gt_visual], axis=2).astype(np.float32))
    assert all(v == pytest.approx(100.0) for v in evaluate_model(oracle, val).values())


def test_published_han_trains_one_epoch_on_a_few_videos():
    cfg = ModelConfig()
    train, val = _split("train", 8, seed=3, cfg=cfg), _split("val", 4, seed=4, cfg=cfg)
    result = train_han(TrainConfig(epochs=1, batch_size=4, num_threads=1), train,
                       build_targets(train, PseudoLabels(train.gt_audio, train.gt_visual)), val,
                       progress=False)
    assert result.best_epoch == 1 and np.isfinite(result.history[0].train_loss)


def test_checkpoint_round_trip(tmp_path, data):
    _, val, _ = data
    torch.manual_seed(3)
    model, cfg = HAN(TINY).eval(), _cfg()
    path = save_checkpoint(tmp_path / "ckpt" / "han.pt", model, cfg, extra={"best_epoch": 2})
    assert [p.name for p in path.parent.iterdir()] == ["han.pt"]  # no temp file left
    loaded, loaded_cfg, extra = load_checkpoint(path)
    assert loaded_cfg == cfg and extra == {"best_epoch": 2} and not loaded.training
    a, b = predict(model, val.features), predict(loaded, val.features)
    np.testing.assert_array_equal(a.prob_seg, b.prob_seg)
    np.testing.assert_array_equal(a.prob_video, b.prob_video)


def test_checkpoint_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pt.*corrupt"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt.*not a vaplan checkpoint"):
        load_checkpoint(other)
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, HAN(TINY), _cfg())
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(truncated)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", HAN(TINY), _cfg(), extra={"a": object()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_a_cpu_reload(tmp_path, data):
    train, val, pseudo = data
    result = train_han(_cfg(device="cuda", epochs=2), train, build_targets(train, pseudo), val,
                       progress=False)
    assert next(result.model.parameters()).device.type == "cuda"
    path = save_checkpoint(tmp_path / "han.pt", result.model, result.config)
    cpu_model, cfg, _ = load_checkpoint(path, device="cpu")
    on_gpu = predict(result.model, val.features, device="cuda")
    on_cpu = predict(cpu_model, val.features, device="cpu")
    np.testing.assert_allclose(on_gpu.prob_seg, on_cpu.prob_seg, atol=1e-4)
    assert evaluate_model(result.model, val)["seg_type"] == pytest.approx(result.best_score)


def test_bf16_training_step_is_deterministic_and_close_to_fp32():
    """bf16 autocast trains (fp32 weights and loss), reproducibly, and stays near fp32."""
    from vaplan.losses import BatchTargets
    from vaplan.train import train_step

    def one_step(precision):
        torch.manual_seed(0)
        model = HAN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        gen = torch.Generator().manual_seed(1)
        inputs = (torch.randn(4, 10, 128, generator=gen), torch.randn(4, 10, 2048, generator=gen),
                  torch.randn(4, 10, 512, generator=gen))
        y = (torch.rand(4, 25, generator=gen) < 0.2).float()
        cfg = TrainConfig(loss=LossConfig(variant="baseline"), precision=precision)
        loss = train_step(model, opt, cfg, inputs, BatchTargets(y, y, y))
        return loss, model.fc_prob.weight.dtype

    fp32, bf16_a, bf16_b = one_step("fp32"), one_step("bf16"), one_step("bf16")
    assert bf16_a == bf16_b and bf16_a[1] == torch.float32
    assert bf16_a[0] == pytest.approx(fp32[0], rel=0.02)
    with pytest.raises(ValueError, match="train.precision"):
        one_step("fp8")
