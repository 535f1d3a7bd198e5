"""Losses against hand computations (numpy) on tiny examples; switches; the four variants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaplan.config import LossConfig
from vaplan.losses import (BatchTargets, bce, category_richness, compute_loss,
                           naive_segment_loss, richness_loss, segment_richness)
from vaplan.models import HANOutput

B, T, C = 2, 4, 3  # tiny shapes; the losses do not depend on T=10, C=25


def np_bce(p, t):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


@pytest.fixture
def example():
    rng = np.random.default_rng(0)
    seg = rng.uniform(0.05, 0.95, (B, T, 2, C))  # P^a, P^v
    video, pa, pv = (rng.uniform(0.05, 0.95, (B, C)) for _ in range(3))
    y = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float64)
    seg_a = (rng.uniform(size=(B, T, C)) > 0.5) * y[:, None]  # Ŷ^a ⊆ y
    seg_v = (rng.uniform(size=(B, T, C)) > 0.4) * y[:, None]
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    out = HANOutput(t(video), t(pa), t(pv), t(seg), t(seg), t(seg))
    targets = BatchTargets(t(y), t(seg_a.max(1)), t(seg_v.max(1)), t(seg_a), t(seg_v))
    arrays = dict(seg=seg, video=video, pa=pa, pv=pv, y=y, seg_a=seg_a, seg_v=seg_v)
    return out, targets, arrays


def np_richness(P, Y, y, use_cr=True, use_sr=True):  # noqa: N803
    """Eq. 6-8 for one modality, written out explicitly with loops."""
    total = 0.0
    if use_cr:
        # predicted richness counts only the video's classes (P masked by y), like Y
        pcr = np.array([[(P[b, t] * y[b]).sum() / y[b].sum() for t in range(T)] for b in range(B)])
        cr = np.array([[Y[b, t].sum() / y[b].sum() for t in range(T)] for b in range(B)])
        total += np_bce(np.clip(pcr, 1e-6, 1 - 1e-6), cr)
    if use_sr:
        psr = np.array([[P[b, :, c].sum() / T for c in range(C)] for b in range(B)])
        sr = np.array([[Y[b, :, c].sum() / T for c in range(C)] for b in range(B)])
        total += np_bce(psr, sr)
    return total


def test_bce_matches_torch_and_clamps():
    p, t = torch.tensor([0.2, 0.7, 0.9]), torch.tensor([0.0, 1.0, 0.5])
    torch.testing.assert_close(bce(p, t), torch.nn.functional.binary_cross_entropy(p, t))
    assert torch.isfinite(bce(torch.tensor([0.0, 1.0, 1.2]), torch.tensor([1.0, 0.0, 0.0])))


def test_richness_terms_shapes():
    seg = torch.ones(B, T, C)
    y = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert category_richness(seg, y).shape == (B, T)
    torch.testing.assert_close(category_richness(seg, y)[:, 0], torch.tensor([1.5, 3.0]))
    assert segment_richness(seg).shape == (B, C)


def test_baseline_loss_is_eq2(example):
    out, targets, a = example
    cfg = LossConfig(variant="baseline")
    total, parts = compute_loss(cfg, out, targets)
    expected = (np_bce(a["video"], a["y"]) + np_bce(a["pa"], a["y"])
                + np_bce(a["pv"], 0.9 * a["y"] + 0.05))
    assert total.item() == pytest.approx(expected, rel=1e-9)
    assert set(parts) == {"video", "audio", "visual", "l_v", "total"}


def test_video_loss_is_eq5(example):
    out, targets, a = example
    total, _ = compute_loss(LossConfig(variant="video"), out, targets)
    expected = (np_bce(a["video"], a["y"]) + np_bce(a["pa"], a["seg_a"].max(1))
                + np_bce(a["pv"], a["seg_v"].max(1)))
    assert total.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("use_cr,use_sr", [(True, True), (True, False), (False, True),
                                           (False, False)])
def test_richness_loss_matches_explicit_formula(example, use_cr, use_sr):
    out, targets, a = example
    cfg = LossConfig(variant="richness", use_category_richness=use_cr,
                     use_segment_richness=use_sr, richness_weight=0.5)
    total, parts = compute_loss(cfg, out, targets)
    l_v = compute_loss(LossConfig(variant="video"), out, targets)[0].item()
    l_s = (np_richness(a["seg"][:, :, 0], a["seg_a"], a["y"], use_cr, use_sr)
           + np_richness(a["seg"][:, :, 1], a["seg_v"], a["y"], use_cr, use_sr))
    assert parts["l_s"].item() == pytest.approx(l_s, rel=1e-9)
    assert total.item() == pytest.approx(l_v + 0.5 * l_s, rel=1e-9)
    assert ("cr_audio" in parts) == use_cr and ("cr_visual" in parts) == use_cr
    assert ("sr_audio" in parts) == use_sr and ("sr_visual" in parts) == use_sr


def test_switching_terms_off_removes_them(example):
    out, targets, _ = example
    seg = out.seg.clone().requires_grad_(True)
    out = out._replace(seg=seg)
    parts = richness_loss(out, targets, use_category=False, use_segment=False)
    assert parts == {}
    cr_only = sum(richness_loss(out, targets, use_category=True, use_segment=False).values())
    sr_only = sum(richness_loss(out, targets, use_category=False, use_segment=True).values())
    both = sum(richness_loss(out, targets).values())
    torch.testing.assert_close(both, cr_only + sr_only)


def test_naive_loss_is_segmentwise_bce(example):
    out, targets, a = example
    parts = naive_segment_loss(out, targets)
    assert parts["seg_audio"].item() == pytest.approx(np_bce(a["seg"][:, :, 0], a["seg_a"]))
    assert parts["seg_visual"].item() == pytest.approx(np_bce(a["seg"][:, :, 1], a["seg_v"]))
    cfg = LossConfig(variant="naive", richness_weight=0.25)
    total, all_parts = compute_loss(cfg, out, targets)
    expected = all_parts["l_v"] + 0.25 * (parts["seg_audio"] + parts["seg_visual"])
    torch.testing.assert_close(total, expected)


def test_target_ratio_is_clipped_and_missing_segments_raise(example):
    out, targets, _ = example
    # Segment labels outside the video label (inconsistent input) cannot push cr above 1.
    bad = dataclasses.replace(targets, seg_audio=torch.ones(B, T, C))
    assert torch.isfinite(compute_loss(LossConfig(), out, bad)[0])
    weak = BatchTargets(targets.video_labels, targets.video_labels, targets.video_labels)
    with pytest.raises(ValueError, match="segment pseudo labels"):
        compute_loss(LossConfig(variant="richness"), out, weak)
    with pytest.raises(ValueError, match="train.loss.variant must be one of"):
        compute_loss(LossConfig(variant="nope"), out, targets)  # type: ignore[arg-type]


def test_loss_backpropagates_to_model():
    from vaplan.models import HAN
    torch.manual_seed(0)
    model = HAN()
    audio, visual = torch.randn(2, 10, 128), torch.randn(2, 10, 2048)
    third = torch.randn(2, 10, 512)
    y = torch.zeros(2, 25)
    y[0, 3] = y[1, 7] = 1
    seg = y[:, None].repeat(1, 10, 1)
    total, _ = compute_loss(LossConfig(), model(audio, visual, third),
                            BatchTargets(y, y, y, seg, seg))
    total.backward()
    assert model.fc_prob.weight.grad.abs().sum() > 0


def test_category_richness_gradient_survives_unbounded_sums():
    """At initialisation sum_c P over 25 classes is ~12: the masked ratio stays in [0, 1] and
    the cr term keeps a finite, non-zero gradient (an unmasked ratio would be clamped to 1)."""
    torch.manual_seed(0)
    logits = torch.zeros(2, T, 2, C, requires_grad=True)
    seg = torch.sigmoid(logits)  # all 0.5
    y = torch.zeros(2, C)
    y[:, :2] = 1
    out = HANOutput(seg[:, 0, 0], seg[:, 0, 0], seg[:, 0, 1], seg, seg, seg)
    targets = BatchTargets(y, y, y, seg_audio=torch.zeros(2, T, C), seg_visual=torch.zeros(2, T, C))
    loss = sum(richness_loss(out, targets, use_category=True, use_segment=False).values())
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and grad[:, :, :, :2].abs().sum() > 0
    assert grad[:, :, :, 2:].abs().sum() == 0  # classes outside the video label do not count
