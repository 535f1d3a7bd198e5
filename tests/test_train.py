"""Trainer: targets, determinism, best-epoch selection, prediction, evaluation, checkpoints,
the non-finite guards (features, lr, gradients, weights) and check_trained."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from vaplan import metrics
from vaplan.config import LossConfig, ModelConfig, TrainConfig
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.models import HAN
from vaplan.train import (Predictions, build_targets, check_trained, check_weights,
                          evaluate_model, load_checkpoint, predict, save_checkpoint, train_han)
from conftest import RAY_TEST_TOKEN

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
    with pytest.raises(ValueError, match="select_metric.*'nope'"):  # config or trainer
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
    path = save_checkpoint(tmp_path / "ckpt" / "han.pt", model, cfg, extra={"best_epoch": 2},
                           epochs_completed=3)
    assert [p.name for p in path.parent.iterdir()] == ["han.pt"]  # no temp file left
    loaded, loaded_cfg, extra = load_checkpoint(path)
    assert loaded_cfg == cfg and not loaded.training
    assert extra == {"best_epoch": 2, "epochs_completed": 3}
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


# ------------------------------------------------------------------ training guards

def _with_features(split: SplitData, **arrays) -> SplitData:
    """A copy of `split` whose feature streams are replaced by `arrays` (audio/visual/...)."""
    feats = dataclasses.replace(split.features, **arrays)
    return dataclasses.replace(split, features=feats)


@pytest.mark.parametrize("stream, value", [("audio", np.nan), ("visual", np.inf),
                                           ("visual_3d", -np.inf)])
def test_non_finite_input_features_stop_training_at_epoch_1(data, stream, value):
    train, val, pseudo = data
    array = getattr(train.features, stream).copy()
    array[5, 3, 0] = value  # one value of one video
    bad = _with_features(train, **{stream: array})
    seen = []
    with pytest.raises(NonFiniteTrainingError) as err:
        train_han(_cfg(), bad, build_targets(bad, pseudo), val, on_epoch=seen.append,
                  progress=False)
    message = str(err.value)
    assert re.search(r"at epoch 1, step [1-6]/6: the loss is (nan|inf)", message), message
    assert f"input features ({stream}) contain NaN/inf in 1 video(s) of this batch" in message
    assert str(train.video_ids[5]) in message and seen == []  # no epoch was completed


def test_diverging_lr_stops_training_naming_lr(data):
    train, val, pseudo = data
    with pytest.raises(NonFiniteTrainingError) as err:
        train_han(_cfg(lr=1e30), train, build_targets(train, pseudo), val, progress=False)
    message = str(err.value)
    assert re.search(r"epoch 1, step \d+/6", message) and "lower train.lr (now 1e+30)" in message
    assert "input features" not in message


def test_non_finite_gradient_is_caught_before_the_optimizer_step():
    torch.manual_seed(0)
    model = HAN(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fc_prob.weight.register_hook(lambda grad: grad * float("nan"))
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(4, T, 8, generator=gen), torch.randn(4, T, 16, generator=gen),
              torch.randn(4, T, 4, generator=gen))
    y = (torch.rand(4, C, generator=gen) < 0.2).float()
    from vaplan.losses import BatchTargets
    from vaplan.train import train_step

    with pytest.raises(NonFiniteTrainingError,
                       match=r"at epoch 2, step 3/7: the gradient of 'fc_prob.weight' is NaN/inf "
                             r"\(loss [0-9.]+\); likely cause: the optimisation diverged"):
        train_step(model, opt, _cfg(loss=LossConfig(variant="baseline")), inputs,
                   BatchTargets(y, y, y), where="epoch 2, step 3/7")
    for key, value in model.state_dict().items():  # the step was not taken
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    # Huge but finite gradients overflow the fused norm; they are not refused.
    torch.manual_seed(0)
    model = HAN(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.fc_prob.weight.register_hook(lambda grad: grad * 1e30)
    loss = train_step(model, opt, _cfg(loss=LossConfig(variant="baseline")), inputs,
                      BatchTargets(y, y, y))
    assert np.isfinite(loss) and torch.isfinite(model.fc_prob.weight.grad).all()
    assert not torch.isfinite(torch.linalg.vector_norm(model.fc_prob.weight.grad))
    with torch.no_grad():
        model.fc_prob.weight.mul_(1e30)  # finite weights whose norm overflows
    check_weights(model, "after a huge update")


def test_non_finite_weights_after_an_epoch_are_caught(data, monkeypatch):
    """A weight that goes NaN at the epoch's last step is caught before validation."""
    train, val, pseudo = data

    class PoisonedAdam(torch.optim.Adam):
        calls = 0

        def step(self, closure=None):
            result = super().step(closure)
            PoisonedAdam.calls += 1
            if PoisonedAdam.calls == 6:  # 48 videos / batch 8: the last step of epoch 1
                with torch.no_grad():
                    self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
            return result

    monkeypatch.setattr("vaplan.train.torch.optim.Adam", PoisonedAdam)
    validated = []
    monkeypatch.setattr("vaplan.train._validate",
                        lambda *a: validated.append(1) or ({}, 0.0))
    with pytest.raises(NonFiniteTrainingError,
                       match=r"non-finite weights after epoch 1, step 6/6: '[a-z_.0-9]+' "
                             r"contain NaN/inf; likely cause: .*lower train.lr"):
        train_han(_cfg(), train, build_targets(train, pseudo), val, progress=False)
    assert validated == []


def test_zero_epochs_is_refused_before_training(data):
    """The config refuses epochs/batch_size < 1; train_han refuses them too (a config built
    around the validation, e.g. an old checkpoint's) so no untrained model is ever returned."""
    train, val, _ = data
    targets = build_targets(train, None)
    for key in ("epochs", "batch_size"):
        with pytest.raises(ConfigError, match=f"train.{key}"):
            _cfg(**{key: 0})
        cfg = _cfg()
        object.__setattr__(cfg, key, 0)  # around the frozen dataclass's validation
        with pytest.raises(ConfigError, match=f"train.{key} must be an integer >= 1, got 0"):
            train_han(cfg, train, targets, val, progress=False)


def test_check_trained_refuses_untrained_or_non_finite_models(tmp_path, data):
    train, val, pseudo = data
    result = train_han(_cfg(epochs=2), train, build_targets(train, pseudo), val, progress=False)
    assert result.epochs_completed == 2
    path = save_checkpoint(tmp_path / "han.pt", result.model, result.config,
                           {"best_epoch": result.best_epoch},
                           epochs_completed=result.epochs_completed)
    model, _, extra = load_checkpoint(path)
    check_trained(model, extra)  # a finished training passes
    check_trained(model, {"best_epoch": 1})  # checkpoints older than epochs_completed
    untrained = load_checkpoint(save_checkpoint(tmp_path / "raw.pt", HAN(TINY), _cfg()))
    assert untrained[2] == {"epochs_completed": 0}
    for bad in (untrained[2], {}, {"epochs_completed": 2, "best_epoch": 0},
                {"epochs_completed": 2, "best_epoch": 3}, {"best_epoch": 0}):
        with pytest.raises(ValueError, match="epoch"):
            check_trained(model, bad, where="checkpoint han.pt")
    with torch.no_grad():
        model.fc_prob.bias[3] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match=r"in checkpoint han.pt: 'fc_prob.bias'"):
        check_trained(model, extra, where="checkpoint han.pt")


@pytest.mark.slow
def test_pipeline_with_nan_features_fails_its_runs_and_registers_nothing(tmp_path, monkeypatch):
    """sim-tiny with one NaN in the train features, on a fresh SQLite store: the `train` step
    raises NonFiniteTrainingError, its child run and the parent end FAILED, no later step
    runs and the registered model gets no version."""
    import mlflow
    from mlflow import MlflowClient

    from pipelines import tracking
    from pipelines.config import pipeline_config_from_preset
    from pipelines.pipeline import run
    from vaplan.data.dataset import load_dataset

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    cfg = pipeline_config_from_preset("sim-tiny", ["train.num_threads=1"], tracking_uri=uri,
                                      progress=False)
    dataset = load_dataset(cfg.experiment.data)
    audio = np.array(dataset.train.features.audio, copy=True)
    audio[7, 2, 5] = np.nan
    bad = dataclasses.replace(dataset, train=_with_features(dataset.train, audio=audio),
                              digest=dataset.digest + "-nan")
    try:
        with pytest.raises(NonFiniteTrainingError,
                           match=r"epoch 1, step \d+/\d+: the loss is nan.*input features "
                                 r"\(audio\)") as err:
            run(cfg, dataset=bad)
        assert str(dataset.train.video_ids[7]) in str(err.value)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(cfg.experiment_name)
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
        children = {r.info.run_name: r.info.status for r in runs if r not in parents}
        assert [p.info.status for p in parents] == ["FAILED"]
        assert children == {"generate_labels": "FINISHED", "train": "FAILED"}
        assert client.search_model_versions(f"name='{cfg.model_name}'") == []
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.integration
@pytest.mark.slow
def test_tune_trial_with_diverging_training_is_errored_not_finished(tmp_path, monkeypatch):
    """The real tune_train sweep (sim-tiny, private local Ray): the trial whose training raises
    NonFiniteTrainingError (lr 1e30) is ERROR in Tune and FAILED in MLflow; the other finishes."""

    from mlflow import MlflowClient

    from ray_jobs import common, tune_train

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", RAY_TEST_TOKEN)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    try:
        code = tune_train.main([
            "--preset", "sim-tiny", "--tracking-uri", uri, "--storage-path",
            str(tmp_path / "ray"), "--quiet", "--address", "local", "--num-cpus", "2",
            "--set", "train.model.hidden_dim=32", "--set", "train.model.ffn_dim=32",
            "--set", "train.epochs=1", "--name", "nonfinite", "--no-asha", "--num-samples", "1",
            "--space", "train.lr=1e-3,1e30", "--space", "train.loss.variant=richness",
            "--cpus-per-trial", "1"])
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
    assert code == 0  # a failing trial does not fail the sweep
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vaplan-sweeps")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("vaplan.sweep_name") == "nonfinite")
    trials = {r.data.params["train.lr"]: r.info.status for r in runs
              if common.TRIAL_TAG in r.data.tags}
    assert trials == {"0.001": "FINISHED", "1e+30": "FAILED"}
    assert parent.data.metrics["sweep/num_errored"] == 1  # Tune's own count of errored trials
    assert parent.data.metrics["sweep/num_finished"] == 1
    errors = [p.read_text() for p in (tmp_path / "ray").rglob("error.txt")]
    assert len(errors) == 1 and "NonFiniteTrainingError" in errors[0]
    assert "lower train.lr (now 1e+30)" in errors[0]


# ---------------------------------------------------------------- lr schedule and tie-break


def test_step_schedule_follows_the_official_recipe_and_none_keeps_lr(data):
    """StepLR(10, 0.1) stepped once per epoch: 3e-4 for epochs 1-10, 3e-5 for 11-20, 3e-6 for
    21-25 (main_avvp.py); lr_schedule=none keeps 3e-4. Reported per epoch in EpochStats.lr."""
    train, _, _ = data
    small = train.subset(np.arange(16))
    targets = build_targets(small, None)
    assert TrainConfig().lr_schedule == "step"
    assert (TrainConfig().lr_step_size, TrainConfig().lr_gamma) == (10, 0.1)
    base = _cfg(lr=3e-4, epochs=25, loss=LossConfig(variant="baseline"))
    seen = []
    result = train_han(base, small, targets, None, on_epoch=seen.append, progress=False)
    expected = [3e-4] * 10 + [3e-5] * 10 + [3e-6] * 5
    assert [s.lr for s in seen] == pytest.approx(expected, rel=1e-9)
    assert [s.lr for s in result.history] == [s.lr for s in seen]
    flat = train_han(dataclasses.replace(base, lr_schedule="none", epochs=12), small, targets,
                     None, progress=False)
    assert [s.lr for s in flat.history] == [3e-4] * 12
    custom = train_han(dataclasses.replace(base, lr_step_size=2, lr_gamma=0.5, epochs=5), small,
                       targets, None, progress=False)
    assert [s.lr for s in custom.history] == pytest.approx([3e-4, 3e-4, 1.5e-4, 1.5e-4, 7.5e-5])


@pytest.mark.parametrize("key, value, words", [
    ("lr_schedule", "cosine", "train.lr_schedule must be one of ['step', 'none']"),
    ("lr_step_size", 0, "train.lr_step_size must be an integer >= 1, got 0"),
    ("lr_gamma", 0.0, "train.lr_gamma must be a number in (0, 1], got 0.0"),
    ("lr_gamma", 1.5, "train.lr_gamma must be a number in (0, 1], got 1.5")])
def test_lr_schedule_options_are_checked(key, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        TrainConfig(**{key: value})


def test_ties_keep_the_later_epoch(data, monkeypatch):
    """The official `if F >= best_F` keeps the later of two equal validation scores."""
    train, val, _ = data
    scores = iter([1.0, 5.0, 5.0, 2.0, 5.0, 4.0])
    monkeypatch.setattr("vaplan.train._validate",
                        lambda *a: (lambda s: ({"seg_type": s}, s))(next(scores)))
    cfg = _cfg(epochs=6, loss=LossConfig(variant="baseline"))
    result = train_han(cfg, train, build_targets(train, None), val, progress=False)
    assert (result.best_epoch, result.best_score) == (5, 5.0)
