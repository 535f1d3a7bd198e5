"""PLG thresholding/masking and PLD denoising (pure numpy)."""

import numpy as np
import pytest

from vaplan.config import PLGConfig
from vaplan.data.types import TeacherScores
from vaplan.denoise import denoise_labels, forward_loss_map, noisy_segments
from vaplan.pseudo_labels import generate_pseudo_labels, threshold_segments

T, C = 10, 25


def test_threshold_masks_by_video_label():
    probs = np.full((2, T, C), 0.04, dtype=np.float32)
    probs[:, :5, 0] = 0.05
    probs[:, :, 1] = 0.09  # high but not in the video label
    labels = np.zeros((2, C), dtype=np.uint8)
    labels[:, 0] = 1
    out = threshold_segments(probs, labels, 0.041)
    assert out[:, :5, 0].all() and out[:, 5:, 0].sum() == 0 and out[:, :, 1].sum() == 0
    assert out.dtype == np.uint8


def test_generate_uses_prompt_sets_and_refuses_bad_options():
    rng = np.random.default_rng(0)
    ids = np.array(["a", "b"], dtype=object)
    probs = {pid: rng.dirichlet(np.ones(C), size=(2, T)).astype(np.float32)
             for pid in ("VP1", "VP2", "AP1", "AP2")}
    labels = np.ones((2, C), dtype=np.uint8)
    pseudo = generate_pseudo_labels(TeacherScores(ids, probs), labels, PLGConfig())
    assert np.array_equal(pseudo.seg_visual, (probs["VP1"] >= 0.041).astype(np.uint8))
    assert np.array_equal(pseudo.video_audio, pseudo.seg_audio.max(axis=1))
    with pytest.raises(ValueError, match=r"plg.visual_prompt must be one of .* got 'AP1'"):
        generate_pseudo_labels(TeacherScores(ids, probs), labels, PLGConfig(visual_prompt="AP1"))
    with pytest.raises(ValueError, match=r"plg.audio_threshold must be a number in \(0, 1\)"):
        generate_pseudo_labels(TeacherScores(ids, probs), labels, PLGConfig(audio_threshold=1.5))
    with pytest.raises(ValueError, match="got 'VP9'"):
        generate_pseudo_labels(TeacherScores(ids, probs), labels, PLGConfig(visual_prompt="VP9"))


def _pld_reference(prob, labels, video, k, alpha):
    """Per-video, per-class loop of Eq. 10-11."""
    out = labels.copy()
    for n in range(prob.shape[0]):
        p = np.clip(prob[n], 1e-7, 1 - 1e-7)
        m = -(labels[n] * np.log(p) + (1 - labels[n]) * np.log(1 - p))
        m = m * video[n][None, :]
        for j in range(C):
            if not video[n, j]:
                continue
            mu = np.sort(m[:, j])[:k].mean()
            for t in range(T):
                if m[t, j] >= alpha * mu:
                    out[n, t, j] = 1 - out[n, t, j]
    return out


@pytest.mark.parametrize("k, alpha", [(5, 30.0), (1, 2.0), (10, 1.5), (6, 400.0)])
def test_denoise_matches_equation_loop(k, alpha):
    rng = np.random.default_rng(k)
    prob = rng.random((30, T, C)).astype(np.float32)
    video = (rng.random((30, C)) < 0.2).astype(np.uint8)
    labels = ((rng.random((30, T, C)) < 0.5) & video[:, None, :].astype(bool)).astype(np.uint8)
    out = denoise_labels(prob, labels, video, k=k, alpha=alpha)
    assert np.array_equal(out, _pld_reference(prob, labels, video, k, alpha))


def test_denoise_flips_only_confident_disagreements_inside_video_label():
    prob = np.full((1, T, C), 0.99)  # model confident the class is present everywhere
    labels = np.zeros((1, T, C), dtype=np.uint8)
    video = np.zeros((1, C), dtype=np.uint8)
    video[0, 0] = 1
    labels[0, :8, 0] = 1  # agrees on 8 segments, disagrees on 2
    out = denoise_labels(prob, labels, video, k=5, alpha=30.0)
    assert out[0, :, 0].all()  # the two disagreeing segments flipped to 1
    assert out[0, :, 1:].sum() == 0  # classes outside the video label never flip
    assert forward_loss_map(prob, labels).shape == (1, T, C)


@pytest.mark.parametrize("k, alpha, message", [(0, 30.0, "k must be"), (11, 30.0, "k must be"),
                                               (5, 0.0, "alpha must be")])
def test_denoise_refuses_bad_options(k, alpha, message):
    z = np.zeros((1, T, C))
    with pytest.raises(ValueError, match=message):
        noisy_segments(z, z, np.zeros((1, C)), k=k, alpha=alpha)
