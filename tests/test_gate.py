"""The evidence-based promotion gate and the evidence-based label choice.

Unit tests of the two decision functions on synthetic per-video arrays (bad input first), then
a real SQLite store: two sim-tiny pipelines that differ only in `train.seed`, versions whose
scores differ from the champion's by less than the noise or by a lot, a champion whose
checkpoint cannot take the candidate's features, and the labels a version registers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines import commands, registry
from pipelines.config import pipeline_config_from_preset
from pipelines.pipeline import run
from pipelines.steps import CHECKPOINT, PLD_FILE, PLG_FILE
from pipelines.steps.common import DENOISED_FILE
from pipelines.registry import champion_scorer
from pipelines.steps.labels import CHOICE_FILE
from vaplan import store_uri
from vaplan.config import PLDConfig, RegistryConfig
from vaplan.data.types import Features, PseudoLabels
from vaplan.gate import gate_score_key
from vaplan.io import read_json
from vaplan.label_table import read_labels
from vaplan.method import apply_label_choice, choose_labels
from vaplan.pseudo_labels import label_quality
from vaplan.teachers.common import file_sha256 as sha256_file
from vaplan.train import load_checkpoint
from conftest import fresh_sqlite_store

T, C = 10, 25
CFG = RegistryConfig()  # 95%, min_improvement 0, 2000 resamples


def _decide(candidate, champion, held="1", cfg=CFG, unavailable=None):
    return registry.decide("m", "2", "val/seg_type", candidate, held, champion, cfg, unavailable)


def _noise(n, scale, seed):
    noise = np.random.default_rng(seed).normal(0.0, scale, n)
    return noise - noise.mean()  # exactly zero mean: the shift alone sets the improvement


# ---- the gate's rule (pure) ------------------------------------------------------------------

def test_gate_refuses_non_finite_candidates():
    champion = np.full(100, 50.0)
    candidate = champion + 30.0
    candidate[7] = np.nan
    kept = _decide(candidate, champion)
    assert not kept.promoted and "not finite on 1 of 100" in kept.reason
    alone = _decide(candidate, None, held=None)  # not even when there is no champion
    assert not alone.promoted and alone.tags()["vaplan.promotion.decision"] == "kept"
    bad_champion = champion.copy()
    bad_champion[0] = np.inf
    refused = _decide(np.full(100, 60.0), bad_champion)
    assert not refused.promoted and "non-finite" in refused.reason


def test_gate_keeps_a_candidate_above_the_champion_by_less_than_the_noise():
    champion = np.random.default_rng(0).uniform(0, 100, 300)
    candidate = champion + _noise(300, 10.0, 1) + 0.2  # +0.2 points, SE ~0.6
    kept = _decide(candidate, champion)
    assert kept.candidate_score > kept.champion_score
    assert kept.improvement == pytest.approx(0.2)
    assert kept.low < 0 < kept.high and not kept.promoted
    assert "not better beyond the noise" in kept.reason
    tags = kept.tags()
    assert tags["vaplan.promotion.decision"] == "kept"
    assert tags["vaplan.promotion.improvement"] == "+0.200"
    assert tags["vaplan.promotion.interval"].endswith("at 95%")
    assert len(tags) <= 6
    text = kept.description()
    assert "kept as `candidate`" in text and kept.interval() in text and kept.reason in text


def test_gate_promotes_a_clearly_better_candidate_and_respects_the_margin():
    champion = np.random.default_rng(2).uniform(0, 100, 300)
    promoted = _decide(champion + _noise(300, 10.0, 3) + 5.0, champion)
    assert promoted.promoted and promoted.low > 0
    assert promoted.champion_score == pytest.approx(champion.mean())
    margin = dataclasses.replace(CFG, min_improvement=3.0)
    assert not _decide(champion + 2.0, champion, cfg=margin).promoted  # interval [2, 2]
    assert _decide(champion + 4.0, champion, cfg=margin).promoted


def test_gate_without_a_comparable_champion():
    candidate = np.full(20, 40.0)
    first = _decide(candidate, None, held=None)
    assert first.promoted and first.reason == "no champion yet" and first.low is None
    assert first.tags()["vaplan.promotion.interval"] == "none"
    same = registry.decide("m", "1", "val/seg_type", candidate, "1", None, CFG)
    assert same.promoted and same.reason == "already champion"
    stuck = _decide(candidate, None, unavailable="it expects audio_dim 512 (features have 128)")
    assert not stuck.promoted and "audio_dim 512" in stuck.reason


def test_gate_metric_must_be_a_val_score():
    assert gate_score_key("val/evt_type") == "evt_type"
    for bad in ("test/seg_type", "val/seg_typo", "seg_type"):
        with pytest.raises(ValueError, match="must be val/<score>"):
            gate_score_key(bad)


# ---- the label choice (pure) -----------------------------------------------------------------

def _labels(seed=0, n=120):
    """Ground truth, and PLG labels with 30% of the positive segments wrong (noisy)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((n, T, C), np.uint8)
    for video in range(n):
        cls = rng.integers(0, C)
        start = rng.integers(0, 6)
        gt[video, start:start + 4, cls] = 1
    plg = gt.copy()
    video_level = gt.max(axis=1).astype(bool)  # noise only inside the video label
    flip = (rng.random(gt.shape) < 0.3) & video_level[:, None, :]
    plg[flip] ^= 1
    return gt, plg


def _choose(plg, pld, gt, **options):
    return choose_labels(PseudoLabels(plg, plg), PseudoLabels(plg, pld), gt, gt,
                         PLDConfig(**options))


def test_label_choice_refuses_a_bad_apply_value():
    gt, plg = _labels()
    with pytest.raises(ValueError, match="pld.apply"):
        _choose(plg, plg, gt, apply="sometimes")


def test_auto_keeps_plg_when_pld_is_worse_and_uses_pld_when_clearly_better():
    gt, plg = _labels()
    worse = plg.copy()
    worse[:, :, :] = gt.max(axis=1, keepdims=True)  # every segment of the video label
    choice = _choose(plg, worse, gt)["visual"]
    assert choice.source == "plg" and choice.test.high < 0
    assert "PLD not better on val" in choice.reason
    better = gt.copy()  # PLD recovered the ground truth
    choice = _choose(plg, better, gt)["visual"]
    assert choice.source == "pld" and choice.test.low > 0
    assert choice.pld_quality >= choice.plg_quality
    assert choice.pld_quality == pytest.approx(label_quality(better, gt)["average"])
    assert choice.plg_quality == pytest.approx(label_quality(plg, gt)["average"])


def test_auto_needs_the_lower_bound_above_zero():
    gt, plg = _labels()
    one_better = plg.copy()
    one_better[0] = gt[0]  # one video of 120 improved: resamples without it show no gain
    choice = _choose(plg, one_better, gt)["visual"]
    assert choice.test.improvement > 0 and choice.test.low <= 0 and choice.source == "plg"


def test_always_and_never_and_a_disabled_modality():
    gt, plg = _labels()
    worse = np.repeat(gt.max(axis=1, keepdims=True), T, axis=1)
    always = _choose(plg, worse, gt, apply="always")
    assert always["visual"].source == "pld" and "the paper's recipe" in always["visual"].reason
    never = _choose(plg, gt, gt, apply="never")
    assert never["visual"].source == "plg" and never["visual"].test.low > 0
    assert always["audio"].source == "plg" and always["audio"].test is None  # pld.audio off
    assert "pld.audio=false" in always["audio"].reason
    picked = apply_label_choice(PseudoLabels(plg, plg), PseudoLabels(worse, worse), always)
    np.testing.assert_array_equal(picked.seg_visual, worse)
    np.testing.assert_array_equal(picked.seg_audio, plg)


# ---- a real store: two seeds of sim-tiny -----------------------------------------------------

MODEL = "vaplan-han-gate"
THREADS = ["train.num_threads=1"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, sim_tiny):
    """sim-tiny with train.seed 0 then 1 in a fresh SQLite store: (dataset, [result, result])."""
    root = tmp_path_factory.mktemp("gate")
    with fresh_sqlite_store(root) as uri:
        results = []
        for seed in (0, 1):
            cfg = pipeline_config_from_preset(
                "sim-tiny", [*THREADS, f"train.seed={seed}"], tracking_uri=uri,
                model_name=MODEL, work_dir=str(root / f"work{seed}"), progress=False)
            results.append(run(cfg, dataset=sim_tiny))
        yield sim_tiny, results


@pytest.mark.slow
def test_second_seed_is_gated_with_an_interval(seeds):
    _, (first, second) = seeds
    assert first.registration["decision"]["reason"] == "no champion yet"
    decision = second.registration["decision"]
    assert decision["champion_version"] == first.registration["version"]
    assert decision["low"] <= decision["improvement"] <= decision["high"]
    assert decision["promoted"] == (decision["low"] > 0)
    assert decision["candidate_score"] == pytest.approx(second.val_scores["seg_type"], abs=1e-9)
    client = MlflowClient()
    mv = client.get_model_version(MODEL, second.registration["version"])
    assert mv.tags["vaplan.promotion.interval"].endswith("at 95%")
    assert float(mv.tags["vaplan.promotion.improvement"]) == pytest.approx(
        decision["improvement"], abs=5e-4)  # three decimals
    assert decision["reason"] in mv.description and "Labels it was trained on" in mv.description
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    champion = second.registration["version"] if decision["promoted"] else \
        first.registration["version"]
    assert aliases == {"candidate": second.registration["version"], "champion": champion}
    parent = client.get_run(second.parent_run_id).data
    assert parent.tags["vaplan.promotion.reason"] == decision["reason"]
    assert parent.metrics["registry/improvement_low"] == pytest.approx(decision["low"])


@pytest.mark.slow
def test_registered_versions_against_the_real_champion(seeds):
    """Scores above the champion's by less than the noise: kept; far above: promoted."""
    dataset, (first, _) = seeds
    client = MlflowClient()
    champion = registry.resolve_version(MODEL, alias=registry.CHAMPION)
    held = str(champion.version)
    scorer = champion_scorer(MODEL, dataset.val, "seg_type")
    reference = scorer(held)  # the champion's per-video val scores, pulled from the registry
    n = reference.size
    assert reference.mean() == pytest.approx(
        registry.version_score(MODEL, held, "val/seg_type"), abs=1e-4)
    near = client.create_model_version(MODEL, champion.source, run_id=champion.run_id)
    kept = registry.apply_promotion_gate(MODEL, near.version, reference + _noise(n, 8.0, 4) + 0.1,
                                         "val/seg_type", CFG, scorer)
    assert not kept.promoted and kept.low < 0 < kept.high
    assert kept.improvement == pytest.approx(0.1)
    mv = client.get_model_version(MODEL, str(near.version))
    assert mv.tags["vaplan.promotion.decision"] == "kept"
    assert mv.tags["vaplan.promotion.interval"] == kept.interval()
    assert f"{kept.improvement:+.3f} {kept.interval()}" in mv.description
    assert str(registry.resolve_version(MODEL, alias=registry.CHAMPION).version) == held
    far = client.create_model_version(MODEL, champion.source, run_id=champion.run_id)
    promoted = registry.apply_promotion_gate(MODEL, far.version, reference + 10.0,
                                             "val/seg_type", CFG, scorer)
    assert promoted.promoted and promoted.low == pytest.approx(10.0)
    assert str(registry.resolve_version(MODEL, alias=registry.CHAMPION).version) == \
        str(far.version)


@pytest.mark.slow
def test_champion_that_cannot_take_the_features_is_not_replaced(seeds):
    dataset, _ = seeds
    val = dataset.val
    other = dataclasses.replace(val, features=Features(
        np.zeros(val.features.audio.shape[:2] + (7,), np.float32), val.features.visual,
        val.features.visual_3d))
    scorer = champion_scorer(MODEL, other, "seg_type")
    held = str(registry.resolve_version(MODEL, alias=registry.CHAMPION).version)
    with pytest.raises(registry.IncomparableChampion, match="audio_dim"):
        scorer(held)
    client = MlflowClient()
    champion = registry.resolve_version(MODEL, alias=registry.CHAMPION)
    new = client.create_model_version(MODEL, champion.source, run_id=champion.run_id)
    decision = registry.apply_promotion_gate(MODEL, new.version, np.full(len(val), 99.0),
                                             "val/seg_type", CFG, scorer)
    assert not decision.promoted and "audio_dim" in decision.reason
    assert str(registry.resolve_version(MODEL, alias=registry.CHAMPION).version) == held


@pytest.mark.slow
def test_registered_labels_are_the_ones_retrain_trained_on(seeds, tmp_path):
    dataset, (_, second) = seeds
    denoise, retrain = second.steps["denoise"], second.steps["retrain"]
    _, _, extra = load_checkpoint(retrain.path(CHECKPOINT))
    pulled = commands.pull(MODEL, str(tmp_path / "v"), version=second.registration["version"],
                           tracking_uri=store_uri.resolve_tracking_uri(second.tracking_uri))
    digest = sha256_file(pulled / "labels.parquet")
    assert digest == extra["labels"] == denoise.digest(PLD_FILE)
    choice = read_json(denoise.path(CHOICE_FILE))
    assert second.registration["labels"] == choice
    choices = {m: c["source"] for m, c in choice["modalities"].items()}
    plg = read_labels(second.steps["generate_labels"].path(PLG_FILE))
    raw = read_labels(denoise.path(DENOISED_FILE))
    registered = read_labels(pulled / "labels.parquet")
    for split in ("train", "val"):
        for modality in ("audio", "visual"):
            source = plg if choices[modality] == "plg" else raw
            np.testing.assert_array_equal(getattr(registered[split][1], f"seg_{modality}"),
                                          getattr(source[split][1], f"seg_{modality}"))
    parent = MlflowClient().get_run(second.parent_run_id).data
    for modality in ("audio", "visual"):
        assert parent.tags[f"pld.decision.{modality}"] == choices[modality]
        assert parent.tags[f"pld.decision.{modality}.reason"]
        used = parent.metrics[f"labels/val/{modality}/average"]
        if choices[modality] == "pld":
            assert used >= parent.metrics[f"plg/val/{modality}/average"]
        else:
            assert used == pytest.approx(parent.metrics[f"plg/val/{modality}/average"])
        assert f"pld/val/{modality}/average" in parent.metrics  # raw PLD is still reported
