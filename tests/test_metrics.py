"""The AVVP evaluation: hand-built cases, the paper anchor and the loop oracle."""

import numpy as np
import pytest

from benchmarks.avvp_reference import reference_avvp_scores
from vaplan.data.llp import load_split
from vaplan.metrics import (avvp_scores, event_counts, filter_by_video, modality_scores,
                            per_class_f, video_precision)
from vaplan.pseudo_labels import label_quality

T, C = 10, 25


def _empty(n=1):
    return np.zeros((n, T, C), dtype=np.uint8)


def test_all_negative_video_scores_one():
    z = _empty()
    scores = avvp_scores(z, z, z, z)
    assert all(v == pytest.approx(100.0) for v in scores.values())


def test_segment_f_known_value():
    pred, gt = _empty(), _empty()
    gt[0, 0:4, 3] = 1  # 4 gt segments
    pred[0, 2:6, 3] = 1  # TP=2, FP=2, FN=2 -> F = 4/8
    pred[0, 0, 7] = 1  # a class with only a false positive -> F = 0
    scores = modality_scores(pred, gt)
    assert scores["seg"] == pytest.approx(100 * (0.5 + 0.0) / 2)


def test_event_iou_exactly_half_matches():
    pred, gt = _empty(), _empty()
    gt[0, 0:4, 0] = 1  # [0,4)
    pred[0, 2:4, 0] = 1  # [2,4): inter 2, union 4 -> IoU 0.5 -> TP
    tp, fp, fn = event_counts(pred.astype(bool), gt.astype(bool))[:, 0, 0]
    assert (tp, fp, fn) == (1, 0, 0)
    pred2 = _empty()
    pred2[0, 2:5, 0] = 1  # [2,5): inter 2, union 5 -> IoU 0.4 -> FP + FN
    tp, fp, fn = event_counts(pred2.astype(bool), gt.astype(bool))[:, 0, 0]
    assert (tp, fp, fn) == (0, 1, 1)


def test_event_multiple_runs():
    pred, gt = _empty(), _empty()
    gt[0, [0, 1, 5, 6, 9], 2] = 1  # runs [0,2) [5,7) [9,10)
    pred[0, [0, 1, 6, 8], 2] = 1  # runs [0,2) match; [6,7) IoU 0.5 match; [8,9) no
    tp, fp, fn = event_counts(pred.astype(bool), gt.astype(bool))[:, 0, 2]
    assert (tp, fp, fn) == (2, 1, 1)


def test_av_is_and_of_modalities_and_type_is_mean():
    rng = np.random.default_rng(1)
    pa, pv, ga, gv = ((rng.random((20, T, C)) < 0.2).astype(np.uint8) for _ in range(4))
    s = avvp_scores(pa, pv, ga, gv)
    assert s["seg_av"] == pytest.approx(modality_scores(pa & pv, ga & gv)["seg"])
    assert s["seg_type"] == pytest.approx((s["seg_a"] + s["seg_v"] + s["seg_av"]) / 3)
    assert s["evt_type"] == pytest.approx((s["evt_a"] + s["evt_v"] + s["evt_av"]) / 3)


@pytest.mark.parametrize("density", [0.05, 0.3, 0.6])
def test_matches_official_loop_on_random_data(density):
    rng = np.random.default_rng(int(density * 100))
    arrays = [(rng.random((150, T, C)) < density).astype(np.uint8) for _ in range(4)]
    ours, ref = avvp_scores(*arrays), reference_avvp_scores(*arrays)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_paper_anchor_on_real_validation_annotations():
    """Predict every video label in all 10 segments (Tables 1-2, '-' rows)."""
    val = load_split("val")
    pred = np.repeat(val.video_labels[:, None, :], T, axis=1)
    visual, audio = label_quality(pred, val.gt_visual), label_quality(pred, val.gt_audio)
    assert visual["seg"] == pytest.approx(58.65, abs=0.01)
    assert visual["event"] == pytest.approx(53.48, abs=0.01)
    assert visual["video_precision"] == pytest.approx(66.96, abs=0.01)
    assert audio["seg"] == pytest.approx(77.07, abs=0.01)
    assert audio["event"] == pytest.approx(63.84, abs=0.01)


def test_filter_by_video():
    prob_seg = np.full((1, T, C), 0.6)
    prob_video = np.zeros((1, C))
    prob_video[0, 4] = 0.5
    out = filter_by_video(prob_seg, prob_video)
    assert out.dtype == np.uint8 and out[0, :, 4].all() and out.sum() == T


def test_shape_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        avvp_scores(_empty(2), _empty(1), _empty(2), _empty(2))
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        modality_scores(np.zeros((T, C)), np.zeros((T, C)))


def test_video_precision_and_per_class():
    pred = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    gt = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert video_precision(pred, gt) == pytest.approx(100 * (0.5 + 1.0) / 2)
    p, g = _empty(2), _empty(2)
    g[:, 0:3, 1] = 1
    p[0, 0:3, 1] = 1
    f = per_class_f(p, g)
    assert f[1] == pytest.approx(100 * 2 / 3) and np.isnan(f[0])
