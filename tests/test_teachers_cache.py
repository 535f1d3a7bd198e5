"""The Parquet teacher score cache: round trip, ordering, errors, digest guard, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS
from vaplan.prompts import prompt_texts
from vaplan.teachers.cache import (CacheError, ScoreCacheWriter, build_cache_meta,
                                   cached_video_ids, load_cached_cosines, load_cached_embeddings,
                                   load_cached_video_labels, load_teacher_scores, read_cache_meta)
from vaplan.teachers.features import load_clip_clap_features
from vaplan.teachers.scoring import score_segments, segment_probabilities

T, C = NUM_SEGMENTS, NUM_CLASSES
VISUAL, AUDIO = ["VP1", "VP2", "VP3", "VP4"], ["AP1", "AP2"]


def _meta(model="clip-test", random_weights=False, modalities=("visual", "audio")):
    teachers = {}
    if "visual" in modalities:
        teachers["visual"] = {"model": model, "checkpoint_sha256": "abc",
                              "prompts": {p: prompt_texts(p) for p in VISUAL}}
    if "audio" in modalities:
        teachers["audio"] = {"model": "clap-test", "checkpoint_sha256": "def",
                             "prompts": {p: prompt_texts(p) for p in AUDIO}}
    return build_cache_meta(teachers, random_weights=random_weights, source="test")


def _scores(rng, n, pids, dim=512):
    emb = rng.standard_normal((n, T, dim)).astype(np.float32)
    texts = {p: rng.standard_normal((C, dim)).astype(np.float32) for p in pids}
    probs, cos = score_segments(emb, texts)
    return probs, cos, emb


def _write(path, ids, rng, meta=None, flush=2):
    data = {}
    with ScoreCacheWriter(path, meta or _meta(), flush_videos=flush) as writer:
        for start in range(0, len(ids), 2):
            chunk = ids[start:start + 2]
            for modality, pids in (("visual", VISUAL), ("audio", AUDIO)):
                probs, cos, emb = _scores(rng, len(chunk), pids)
                labels = np.eye(C, dtype=np.uint8)[[len(v) % C for v in chunk]]
                writer.append(chunk, modality, probs, cos, emb, labels)
                for i, vid in enumerate(chunk):
                    data[(vid, modality)] = ({p: a[i] for p, a in probs.items()}, emb[i])
    return data


def test_round_trip_in_requested_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"vid{i:02d}_0_10" for i in range(5)]
    data = _write(tmp_path / "c", ids, rng)
    assert len(list((tmp_path / "c").glob("part-*.parquet"))) >= 2
    want = [ids[3], ids[0], ids[4]]
    scores = load_teacher_scores(tmp_path / "c", want)
    assert list(scores.video_ids) == want
    assert sorted(scores.probs) == sorted(VISUAL + AUDIO)
    for i, vid in enumerate(want):
        np.testing.assert_allclose(scores.get("VP3")[i], data[(vid, "visual")][0]["VP3"])
        np.testing.assert_allclose(scores.get("AP2")[i], data[(vid, "audio")][0]["AP2"])
    assert scores.get("VP1").shape == (3, T, C) and scores.get("VP1").dtype == np.float32
    emb = load_cached_embeddings(tmp_path / "c", "audio", want)
    np.testing.assert_allclose(emb[1], data[(ids[0], "audio")][1])
    assert load_cached_cosines(tmp_path / "c", "VP2", want).shape == (3, T, C)
    assert load_cached_video_labels(tmp_path / "c", want).shape == (3, C)
    assert cached_video_ids(tmp_path / "c", "visual") == set(ids)
    assert scores.meta["digest"] == read_cache_meta(tmp_path / "c")["digest"]


def test_probabilities_are_softmax_of_raw_cosines():
    cos = np.random.default_rng(1).uniform(-0.3, 0.3, (2, T, C)).astype(np.float32)
    probs = segment_probabilities(cos)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    # no logit scale: with |cos| <= 0.3 every probability stays near 1/25
    assert 0.02 < probs.min() and probs.max() < 0.08
    np.testing.assert_allclose(probs, np.exp(cos) / np.exp(cos).sum(-1, keepdims=True), rtol=1e-5)


def test_missing_video_or_segment_is_named(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path / "c", ["a_0_10", "b_0_10"], rng)
    with pytest.raises(CacheError, match="zz_0_10 segment 0"):
        load_teacher_scores(tmp_path / "c", ["a_0_10", "zz_0_10"])
    with pytest.raises(CacheError, match="not a teacher cache"):
        load_teacher_scores(tmp_path / "nothing", ["a_0_10"])


def test_digest_guard_refuses_another_model(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path / "c", ["a_0_10"], rng)
    with pytest.raises(CacheError, match="visual teacher differs"):
        ScoreCacheWriter(tmp_path / "c", _meta(model="another-clip"))
    with pytest.raises(CacheError, match="random_weights"):
        ScoreCacheWriter(tmp_path / "c", _meta(random_weights=True))
    ScoreCacheWriter(tmp_path / "c", _meta()).close()  # the same teachers may append


def test_new_modality_can_be_added_later(tmp_path):
    rng = np.random.default_rng(4)
    with ScoreCacheWriter(tmp_path / "c", _meta(modalities=("visual",))) as writer:
        probs, cos, emb = _scores(rng, 1, VISUAL)
        writer.append(["a_0_10"], "visual", probs, cos, emb)
    with ScoreCacheWriter(tmp_path / "c", _meta()) as writer:
        probs, cos, emb = _scores(rng, 1, AUDIO)
        writer.append(["a_0_10"], "audio", probs, None, None)
    assert sorted(read_cache_meta(tmp_path / "c")["teachers"]) == ["audio", "visual"]
    assert load_teacher_scores(tmp_path / "c", ["a_0_10"]).get("AP1").shape == (1, T, C)


def test_random_weights_cache_is_refused_unless_allowed(tmp_path):
    rng = np.random.default_rng(5)
    _write(tmp_path / "c", ["a_0_10"], rng, meta=_meta(random_weights=True))
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["random_weights"] is True
    with pytest.raises(CacheError, match="RANDOM"):
        load_teacher_scores(tmp_path / "c", ["a_0_10"])
    with pytest.raises(CacheError, match="RANDOM"):
        load_cached_embeddings(tmp_path / "c", "visual", ["a_0_10"])
    assert load_teacher_scores(tmp_path / "c", ["a_0_10"], allow_random=True).probs


def test_interrupted_writer_keeps_flushed_parts(tmp_path):
    rng = np.random.default_rng(6)
    with pytest.raises(KeyboardInterrupt):
        with ScoreCacheWriter(tmp_path / "c", _meta(modalities=("visual",)), flush_videos=1) as w:
            for vid in ["a_0_10", "b_0_10", "c_0_10"]:
                if vid == "c_0_10":
                    raise KeyboardInterrupt
                probs, cos, emb = _scores(rng, 1, VISUAL)
                w.append([vid], "visual", probs, cos, emb)
    assert cached_video_ids(tmp_path / "c", "visual") == {"a_0_10", "b_0_10"}
    assert not list((tmp_path / "c").glob(".*tmp"))


def test_writer_validates_shapes_and_prompt_sets(tmp_path):
    rng = np.random.default_rng(7)
    writer = ScoreCacheWriter(tmp_path / "c", _meta())
    probs, cos, emb = _scores(rng, 2, VISUAL)
    with pytest.raises(CacheError, match="expected"):
        writer.append(["a", "b"], "visual", {"VP1": probs["VP1"]})
    with pytest.raises(CacheError, match="shape"):
        writer.append(["a"], "visual", probs)
    with pytest.raises(CacheError, match="not in the cache meta|expected"):
        writer.append(["a", "b"], "audio", probs)


def test_llp_sim_style_probs_only(tmp_path):
    """LLP-sim writes probabilities only (no cosines, no embeddings)."""
    rng = np.random.default_rng(8)
    with ScoreCacheWriter(tmp_path / "c", _meta()) as writer:
        for modality, pids in (("visual", VISUAL), ("audio", AUDIO)):
            probs = {p: rng.dirichlet(np.ones(C), (3, T)).astype(np.float32) for p in pids}
            writer.append(["a", "b", "c"], modality, probs)
    scores = load_teacher_scores(tmp_path / "c", ["c", "a"], prompt_ids=["VP1", "AP2"])
    assert sorted(scores.probs) == ["AP2", "VP1"]
    with pytest.raises(CacheError, match="null"):
        load_cached_embeddings(tmp_path / "c", "visual", ["a"])


def test_clip_clap_features_match_the_preset(tmp_path):
    rng = np.random.default_rng(9)
    data = _write(tmp_path / "c", ["a_0_10", "b_0_10"], rng)
    feats = load_clip_clap_features(tmp_path / "c", ["b_0_10", "a_0_10"])
    assert feats.audio.shape == (2, T, 512) and feats.visual.shape == (2, T, 512)
    assert feats.visual_3d is None
    np.testing.assert_allclose(feats.visual[0], data[("b_0_10", "visual")][1])
