"""The backbones behind `vaplan.models.build_model`: the output contract every consumer reads,
each backbone's used-parameter count pinned to its reference code's (counted here from the
reference's layer shapes), the config rule on `train.model.name`, checkpoints that pick the
backbone, MGN's class-token loss, MM-Pyramid's banded attention, and the tracked pipeline with
MGN / MM-Pyramid ending in a registered version that `vaplan evaluate` scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaplan.config import (MODEL_PRESETS, ExperimentConfig, LossConfig, ModelConfig,
                           TrainConfig,
                           apply_overrides, backbone_overrides, from_dict, to_dict)
from vaplan.errors import ConfigError
from vaplan.models import (BACKBONES, HAN, MGN, REFERENCE_PARAMETERS, MMPyramid, backbone_name,
                           build_model, count_parameters)
from vaplan.models.layers import MultiHeadAttention

torch.set_num_threads(1)
B, T, C = 3, 10, 25
NAMES = sorted(BACKBONES)
# Small sizes for behaviour tests (the published sizes are only built for the counts).
SMALL = {"han": ModelConfig(hidden_dim=32, ffn_dim=32, num_heads=2),
         "mgn": ModelConfig(name="mgn", hidden_dim=32, ffn_dim=64, num_heads=4, dropout=0.0,
                            audio_depth=1, visual_depth=1, av_depth=1),
         "mm_pyramid": ModelConfig(name="mm_pyramid", hidden_dim=32, ffn_dim=32, num_heads=4,
                                   levels=2)}


def _inputs(cfg: ModelConfig, frames: int = T, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, T, cfg.audio_dim, generator=g)
    visual = torch.randn(B, frames, cfg.visual_dim, generator=g)
    third = torch.randn(B, T, cfg.visual_3d_dim, generator=g) if cfg.visual_3d_dim else None
    return audio, visual, third


# ------------------------------------------------ the reference counts, from the source shapes

def _lin(i: int, o: int) -> int:
    return i * o + o


def _ln(d: int) -> int:
    return 2 * d


def _inputs_count(d: int) -> int:
    """fc_a 128->d, fc_v 2048->d, fc_st 512->d, fc_fusion 2d->d (both references)."""
    return _lin(128, d) + _lin(2048, d) + _lin(512, d) + _lin(2 * d, d)


def mgn_reference_parameters(d: int = 128, depths=(3, 3, 6), mlp: int = 4) -> int:
    """stoneMo/MGN nets/mgn.py MGN_Net(dim=d, depth_aud/vis/av) with nets/grouping.py: every
    parameter is used (checked by running the reference once: 4,366,065 with a gradient)."""
    attn_block = _ln(d) + _lin(d, 3 * d) + _lin(d, d) + _ln(d) + _lin(d, mlp * d) + _lin(mlp * d, d)
    cross_block = _ln(d) + 4 * _lin(d, d) + _ln(d) + _lin(d, mlp * d) + _lin(mlp * d, d)
    assign = 4 * _lin(d, d)

    def grouping(tokens: int, groups: int) -> int:  # GroupingBlock / GroupingBlock_Han
        return (_ln(d) + _lin(tokens, d // 2) + _lin(d // 2, groups) + 2 * _ln(d) + cross_block
                + assign + _ln(d) + _lin(d, mlp * d) + _lin(mlp * d, d))

    audio = depths[0] * attn_block + grouping(T, T) + grouping(C, C)  # use_han=True
    visual = depths[1] * attn_block + grouping(C, C)
    av = depths[2] * attn_block + grouping(C, C)
    tokens = 2 * C * d
    heads = 3 * _lin(d, 1) + _lin(d, C)
    return _inputs_count(d) + tokens + audio + visual + av + heads


def mm_pyramid_reference_parameters(d: int = 512, ffn: int = 512, levels: int = 4) -> int:
    """JustinYuu/MM_Pyramid main_network.py AVVPNet(8, d, ffn, [d] * levels), the parameters its
    forward uses: every MultiHeadAttention's `layer_norm` and the prototype `multiheadattn` /
    `feedforward` of SemanticCaptureModule and SemanticFusionModule are never called."""
    layer = 4 * _lin(d, d) + _lin(d, ffn) + _lin(ffn, d) + 2 * _ln(d)  # TransformerLayer
    temporal = (d * d * 3 + d) + (d * d + d)  # TemporalBlock: conv k3, conv 1x1
    level = 3 * layer + 4 * _lin(2 * d, d) + 2 * temporal
    fusion = 2 * layer + 2 * _lin(d, 1)
    return _inputs_count(d) + levels * level + fusion + 3 * _lin(d, C)


def test_used_parameter_counts_match_the_references():
    assert mgn_reference_parameters() == REFERENCE_PARAMETERS["mgn"] == 4_366_065
    assert mm_pyramid_reference_parameters() == REFERENCE_PARAMETERS["mm_pyramid"] == 40_827_469
    assert REFERENCE_PARAMETERS["han"] == 4_569_675  # vaplan.official.HAN_PARAMETERS
    for name in NAMES:
        torch.manual_seed(0)
        model = build_model(MODEL_PRESETS[name])
        assert count_parameters(model) == REFERENCE_PARAMETERS[name], name
    # The counts follow the hyper-parameters the same way as the references'.
    small = dataclasses.replace(MODEL_PRESETS["mgn"], hidden_dim=64, ffn_dim=256, av_depth=2)
    assert count_parameters(MGN(small)) == mgn_reference_parameters(64, (3, 3, 2))
    pyramid = dataclasses.replace(MODEL_PRESETS["mm_pyramid"], hidden_dim=64, ffn_dim=32,
                                  levels=2)
    assert count_parameters(MMPyramid(pyramid)) == mm_pyramid_reference_parameters(64, 32, 2)


# ------------------------------------------------------------------------- the output contract

@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_returns_the_han_output_contract(name):
    torch.manual_seed(0)
    model = build_model(SMALL[name]).eval()
    assert backbone_name(model) == name and isinstance(model, BACKBONES[name])
    audio, visual, third = _inputs(model.config)
    with torch.no_grad():
        out = model(audio, visual, third)
        frames = model(audio, visual.repeat_interleave(8, dim=1), third)  # 80 frames
    assert out.video.shape == out.audio.shape == out.visual.shape == (B, C)
    assert out.seg.shape == out.temporal_att.shape == out.modality_att.shape == (B, T, 2, C)
    for p in (out.video, out.audio, out.visual, out.seg):
        assert bool(((p >= 0) & (p <= 1)).all()) and bool(torch.isfinite(p).all())
    torch.testing.assert_close(out.temporal_att.sum(dim=1), torch.ones(B, 2, C))
    for x, y in zip(out, frames):  # 8 identical frames per segment pool to the segment
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="visual_3d"):
        model(audio, visual, None)
    with pytest.raises(ValueError, match="frames"):
        model(audio, visual[:, :7], third)


@pytest.mark.parametrize("name", NAMES)
def test_backbones_without_a_3d_stream_and_gradients_reach_every_parameter(name):
    cfg = dataclasses.replace(SMALL[name], audio_dim=16, visual_dim=16, visual_3d_dim=0)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert not hasattr(model, "fc_st")
    out = model(*_inputs(cfg))
    loss = out.video.sum() + out.seg.sum() + out.audio.sum() + out.visual.sum()
    auxiliary = model.auxiliary_loss()
    loss = loss + (auxiliary if auxiliary is not None else 0)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_mgn_class_token_loss_and_mm_pyramid_band():
    torch.manual_seed(0)
    model = MGN(SMALL["mgn"])
    assert HAN(SMALL["han"]).auxiliary_loss() is None
    loss = model.auxiliary_loss()  # CE(fc_cls(token_c), c) audio + visual, tokens start at 0
    assert loss.item() == pytest.approx(2 * np.log(C), rel=1e-5)
    loss.backward()
    for token in (model.audio_token, model.visual_token):  # the tokens learn their class
        assert token.grad is not None and float(token.grad.abs().sum()) > 0
    # Banded attention: query t never sees keys farther than the band.
    attn = MultiHeadAttention(16, 2, band=2).eval()
    q, k = torch.randn(1, T, 16), torch.randn(1, T, 16)
    far = k.clone()
    far[:, 6:] += 10.0  # keys 6..9 are more than 2 from queries 0..3
    with torch.no_grad():
        torch.testing.assert_close(attn(q, k)[:, :4], attn(q, far)[:, :4])
        assert not torch.allclose(attn(q, k)[:, 5:], attn(q, far)[:, 5:])


# ------------------------------------------------------------------------------ configuration

def test_model_name_and_backbone_options_are_checked():
    cfg = ExperimentConfig()
    assert cfg.train.model.name == "han"
    with pytest.raises(ConfigError, match=r"train\.model\.name must be one of \['han', 'mgn', "
                                          r"'mm_pyramid'\], got 'resnet'"):
        apply_overrides(cfg, ["train.model.name=resnet"])
    with pytest.raises(ConfigError, match=r"train\.model\.levels must be an integer in 1\.\.8"):
        apply_overrides(cfg, ["train.model.levels=0"])
    with pytest.raises(ConfigError, match=r"train\.model\.drop_path"):
        apply_overrides(cfg, ["train.model.drop_path=1.5"])
    with pytest.raises(ConfigError, match="num_heads must divide"):
        apply_overrides(cfg, ["train.model.name=mgn", "train.model.num_heads=3"])
    # Each backbone's published values + recipe as overrides reproduce the preset.
    for name in NAMES:
        chosen = apply_overrides(cfg, list(backbone_overrides(name)))
        assert chosen.train.model == MODEL_PRESETS[name]
    mgn = apply_overrides(cfg, list(backbone_overrides("mgn")))
    assert (mgn.train.lr, mgn.train.batch_size, mgn.train.epochs) == (3e-4, 16, 40)
    pyramid = apply_overrides(cfg, list(backbone_overrides("mm_pyramid")))
    assert (pyramid.train.lr, pyramid.train.batch_size, pyramid.train.epochs) == (1e-4, 16, 40)
    with pytest.raises(ConfigError, match="unknown backbone 'x'"):
        backbone_overrides("x")
    # A config stored before the backbone fields existed (old checkpoints) still loads as HAN.
    old = to_dict(TrainConfig())
    for key in ("name", "audio_depth", "visual_depth", "av_depth", "drop_path", "levels"):
        del old["model"][key]
    assert from_dict(TrainConfig, old).model == ModelConfig()


@pytest.mark.parametrize("name", ["mgn", "mm_pyramid"])
def test_checkpoint_carries_the_backbone(name, sim_tiny, tmp_path):
    from vaplan.train import build_targets, load_checkpoint, predict, save_checkpoint, train_han

    cfg = TrainConfig(epochs=1, batch_size=32, num_threads=1, model=SMALL[name],
                      loss=LossConfig(variant="baseline"))
    result = train_han(cfg, sim_tiny.train, build_targets(sim_tiny.train, None), sim_tiny.val,
                       progress=False)
    assert isinstance(result.model, BACKBONES[name]) and result.best_epoch == 1
    path = save_checkpoint(tmp_path / "ckpt.pt", result.model, cfg, epochs_completed=1)
    model, loaded_cfg, _ = load_checkpoint(path)
    assert isinstance(model, BACKBONES[name]) and loaded_cfg.model.name == name
    before = predict(result.model, sim_tiny.val.features)
    after = predict(model, sim_tiny.val.features)
    np.testing.assert_allclose(before.prob_seg, after.prob_seg, atol=1e-6)
    # The same weights under another backbone's name are refused, naming both.
    payload = torch.load(path, weights_only=True)
    payload["config"]["model"]["name"] = "han"
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"wrong\.pt: weights do not fit HAN\("):
        load_checkpoint(tmp_path / "wrong.pt")


# --------------------------------------------------- the tracked pipeline ends in a version

@pytest.mark.slow
@pytest.mark.parametrize("name", ["mgn", "mm_pyramid"])
def test_pipeline_registers_a_backbone_that_vaplan_evaluate_scores(name, store, sim_tiny):
    from typer.testing import CliRunner

    from pipelines.config import pipeline_config_from_preset
    from pipelines.pipeline import run
    from vaplan.cli import app
    from vaplan.metrics import SCORE_KEYS

    small = SMALL[name]
    overrides = [f"train.model.{f}={getattr(small, f)}" for f in
                 ("name", "hidden_dim", "ffn_dim", "num_heads", "audio_depth", "visual_depth",
                  "av_depth", "levels")] + ["train.num_threads=1", "train.epochs=1"]
    # mgn: the per-backbone default name; mm_pyramid: an explicit --model-name wins
    explicit = {"model_name": f"vaplan-{name}-test"} if name == "mm_pyramid" else {}
    cfg = pipeline_config_from_preset("sim-tiny", overrides, tracking_uri=store,
                                      progress=False, **explicit)
    model_name = explicit.get("model_name", "vaplan-mgn")
    assert cfg.model_name == model_name
    result = run(cfg, dataset=sim_tiny)
    version = result.registration["version"]
    from pipelines import tracking

    tags = tracking.client().get_model_version(model_name, version).tags
    assert tags["vaplan.backbone"] == name and len(tags) <= 8, sorted(tags)
    out = CliRunner().invoke(app, ["evaluate", "--model", f"models:/{model_name}/{version}",
                                   "--split", "test", "--tracking-uri", store])
    assert out.exit_code == 0, out.output
    printed = {line.split()[0]: float(line.split()[1]) for line in out.output.splitlines()
               if line.startswith("test/")}
    assert set(printed) == {f"test/{key}" for key in SCORE_KEYS}
    for key in SCORE_KEYS:
        assert printed[f"test/{key}"] == pytest.approx(result.test_scores[key], abs=0.006)


# ------------------------------------------------------------------ MA labels (Wu & Yang 2021)

def test_disjoint_partners_share_no_event_and_impossible_pairs_are_named():
    from vaplan.ma_labels import disjoint_partners

    rng = np.random.default_rng(0)
    y = (rng.random((200, C)) < 0.08).astype(np.uint8)
    partner = disjoint_partners(y, seed=3)
    assert (partner != np.arange(200)).all()
    assert not (y.astype(bool) & y[partner].astype(bool)).any()
    np.testing.assert_array_equal(partner, disjoint_partners(y, seed=3))
    y[:, 0] = 1  # every video has class 0: no partner exists
    ids = np.array([f"vid{i}" for i in range(200)])
    with pytest.raises(ValueError, match="video vid0 has no partner sharing none of its events"):
        disjoint_partners(y, video_ids=ids)
    with pytest.raises(ValueError, match="at least 2 videos"):
        disjoint_partners(y[:1])


class _TrackOracle(torch.nn.Module):
    """Audio predictions read the audio track only, visual the visual track only: features
    [..., :C] hold each track's true video-level events."""

    def forward(self, audio, visual, visual_3d=None):
        from vaplan.models import HANOutput

        p_a = torch.sigmoid(20 * (audio[..., :C].mean(dim=1) - 0.5))  # (B, C)
        p_v = torch.sigmoid(20 * (visual[..., :C].mean(dim=1) - 0.5))
        seg = torch.stack([p_a, p_v], dim=1).unsqueeze(1).expand(-1, T, -1, -1)
        return HANOutput(torch.maximum(p_a, p_v), p_a, p_v, seg, seg, seg)


def test_ma_recovers_the_modalities_from_track_exchanges(sim_tiny):
    from vaplan.data.types import Features, SplitData
    from vaplan.ma_labels import ma_label_quality, ma_targets, modality_aware_labels

    split = sim_tiny.train
    true_a, true_v = split.gt_audio.max(axis=1), split.gt_visual.max(axis=1)  # (N, C)
    n = len(split)
    feats = Features(np.repeat(true_a[:, None, :], T, 1).astype(np.float32),
                     np.repeat(true_v[:, None, :], T, 1).astype(np.float32),
                     np.zeros((n, T, 4), np.float32))
    oracle_split = SplitData(split.name, split.video_ids, split.video_labels, split.gt_audio,
                             split.gt_visual, feats)
    ma = modality_aware_labels(_TrackOracle(), oracle_split, seed=0)
    np.testing.assert_array_equal(ma.video_audio, true_a & split.video_labels)
    np.testing.assert_array_equal(ma.video_visual, true_v & split.video_labels)
    quality = ma_label_quality(ma, oracle_split)
    assert quality["audio/video_precision"] == quality["visual/video_precision"] == 100.0
    weak = ma_label_quality(dataclasses.replace(ma, video_audio=split.video_labels,
                                                video_visual=split.video_labels), oracle_split)
    assert weak["visual/video_precision"] < 100.0  # the weak labels are not modality-aware
    targets = ma_targets(split, ma)
    np.testing.assert_array_equal(targets.video_visual, ma.video_visual)
    with pytest.raises(ValueError, match="no segment ground truth"):
        ma_label_quality(ma, dataclasses.replace(oracle_split, gt_audio=None))
    with pytest.raises(ValueError, match="threshold must be in"):
        modality_aware_labels(_TrackOracle(), oracle_split, threshold=1.5)


def test_ma_labels_from_a_trained_backbone_train_the_next_one(sim_tiny):
    from vaplan.ma_labels import ma_label_quality, ma_targets, modality_aware_labels
    from vaplan.train import build_targets, train_han

    cfg = TrainConfig(epochs=1, num_threads=1, model=SMALL["han"],
                      loss=LossConfig(variant="baseline"))
    base = train_han(cfg, sim_tiny.train, build_targets(sim_tiny.train, None), sim_tiny.val,
                     progress=False)
    ma = modality_aware_labels(base.model, sim_tiny.train, seed=0)
    y = sim_tiny.train.video_labels.astype(bool)
    for labels in (ma.video_audio, ma.video_visual):  # subsets of the weak labels
        assert labels.dtype == np.uint8 and not (labels.astype(bool) & ~y).any()
    assert set(ma_label_quality(ma, sim_tiny.train)) == {
        f"{m}/{k}" for m in ("audio", "visual") for k in
        ("video_precision", "seg", "event", "average")}
    retrain = dataclasses.replace(cfg, loss=LossConfig(variant="video"))  # L_V on MA labels
    result = train_han(retrain, sim_tiny.train, ma_targets(sim_tiny.train, ma), sim_tiny.val,
                       progress=False)
    assert result.epochs_completed == 1


# ------------------------------------- recipes fill only what no --set named (issue 12 item 2)

def test_an_explicit_set_wins_over_the_backbone_recipe_whatever_its_value():
    """The recipe used to be applied to every option still equal to ExperimentConfig()'s
    default, so `--set train.lr=3e-4` (HAN's default) on MM-Pyramid trained at its recipe's
    1e-4. Now the options a --set names are remembered and always win, in `vaplan ablation`
    (row_config), `vaplan run` (pipeline_config_from_preset) and the sweeps (base_experiment)."""
    import pickle
    from types import SimpleNamespace

    from pipelines.config import pipeline_config_from_preset
    from vaplan import ablation, ablation_keys
    from vaplan.config import (configure, explicit_options, get_preset, replace_path)
    from vaplan.sweeps import apply_config, base_experiment

    full = get_preset("sim-full")
    lr = configure(full, ["train.lr=3e-4"])  # what `vaplan ablation --set train.lr=3e-4` builds
    assert explicit_options(lr) == {"train.lr"}
    assert ablation.row_config(lr, "mm_pyramid", 0).train.lr == 3e-4  # 1e-4 before
    recipe = ablation.row_config(configure(full), "mm_pyramid", 0).train
    assert (recipe.lr, recipe.batch_size, recipe.epochs) == (1e-4, 16, 40)
    both = ablation.row_config(configure(full, ["train.batch_size=32", "train.epochs=30"]),
                               "mgn", 0).train  # both at ExperimentConfig()'s defaults
    assert (both.batch_size, both.epochs, both.model.hidden_dim) == (32, 30, 128)
    # The remembered options survive copies (a trial's device, pickling to Ray workers) and
    # are no field: equal configs, the same logged params, unit keys only by the values.
    for copy in (replace_path(lr, "train.device", "cuda"), pickle.loads(pickle.dumps(lr))):
        assert explicit_options(copy) == {"train.lr"}
    assert lr == configure(full) and "train.lr" not in ablation_keys.identity(lr)
    assert ablation_keys.unit_key(lr, "mm_pyramid", 0, "d") != \
        ablation_keys.unit_key(configure(full), "mm_pyramid", 0, "d")
    # vaplan run / python -m pipelines: the chosen backbone's recipe, the --set kept
    run = pipeline_config_from_preset("sim-full", ["train.model.name=mm_pyramid",
                                                   "train.lr=3e-4"]).experiment
    assert (run.train.lr, run.train.batch_size, run.train.epochs) == (3e-4, 16, 40)
    assert run.train.model == MODEL_PRESETS["mm_pyramid"]
    tiny = pipeline_config_from_preset("sim-tiny", ["train.model.name=mgn",
                                                    "train.model.dropout=0.1"]).experiment
    assert (tiny.train.epochs, tiny.train.model.dropout, tiny.train.model.hidden_dim) == \
        (2, 0.1, 128)  # the preset's 2 epochs and the --set dropout stay
    # the sweeps: the base config is built the same way; trial values then apply over it
    opts = SimpleNamespace(preset="sim-full", overrides=("train.model.name=mgn",
                                                         "train.batch_size=32"),
                           gpus_per_trial="0", cpus_per_trial=1)
    base = base_experiment(opts, SimpleNamespace(trains=True))
    assert (base.train.batch_size, base.train.epochs, base.train.model.num_heads) == (32, 40, 8)
    assert apply_config(base, {"train": {"lr": 1e-3}}).train.batch_size == 32


def test_table_eight_unit_keys_are_those_of_the_value_rule():
    """A full-scale Table 8 resumes by its unit keys: without a --set equal to a default,
    tracking the explicit options gives the keys of the earlier rule (computed with it)."""
    from vaplan.ablation_keys import unit_key
    from vaplan.config import configure, get_preset

    full = configure(get_preset("sim-full"))
    assert unit_key(full, "mgn", 1, "d") == \
        "b17f476708fd9820bb45ad62015c551a26b9d7a868139fd2799be57d97960ef8"
    assert unit_key(full, "mgn+ma", 1, "d") == \
        "53962d9730b0d34e4b7dcacbd521f75859c8751495f911ea545f13a6701f6e4a"
    assert unit_key(full, "mm_pyramid+pld", 1, "d") == \
        "ba92d18a49cd30887d954b2daca75c1840f4ffab9fa3bbcf369c6f043dea074e"


def test_an_ablation_refuses_labels_source():
    from vaplan import ablation
    from vaplan.config import configure, get_preset

    cfg = configure(get_preset("sim-tiny"), ["labels.source=ma"])
    with pytest.raises(ConfigError, match=r"^labels\.source=ma is the tracked pipeline's option"):
        ablation.row_config(cfg, "mgn", 0)
