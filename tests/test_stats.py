"""The paired bootstrap (vaplan.stats) and the per-video scores it resamples (vaplan.metrics)."""

import numpy as np
import pytest

from vaplan.metrics import (SCORE_KEYS, avvp_scores, avvp_video_scores, modality_scores,
                            modality_video_scores)
from vaplan.pseudo_labels import label_quality, video_label_quality
from vaplan.stats import paired_bootstrap, resampled_means

T, C = 10, 25


@pytest.mark.parametrize("candidate, reference, message", [
    (np.ones(5), np.ones(4), "same videos"),
    (np.ones((5, 2)), np.ones((5, 2)), "1-D"),
    (np.ones(0), np.ones(0), "non-empty"),
    (np.array([1.0, np.nan, 2.0]), np.ones(3), "non-finite per-video score.*row 1"),
    (np.ones(3), np.array([np.inf, 1.0, 1.0]), "reference: 1 non-finite"),
])
def test_bad_scores_are_refused(candidate, reference, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(candidate, reference)


@pytest.mark.parametrize("options, message", [
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"samples": 2.5}, "samples must be an integer"),
    ({"confidence": 1.0}, r"confidence must lie in \(0, 1\)"),
    ({"confidence": 0.0}, "confidence"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(np.ones(3), np.ones(3), **options)


def test_identical_and_shifted_scores():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, 50)
    same = paired_bootstrap(base, base)
    assert (same.improvement, same.low, same.high) == (0.0, 0.0, 0.0)
    assert not same.exceeds(0.0)
    shifted = paired_bootstrap(base + 2.0, base)  # a constant shift has no spread
    assert shifted.improvement == pytest.approx(2.0)
    assert shifted.low == pytest.approx(2.0) and shifted.high == pytest.approx(2.0)
    assert shifted.exceeds(1.9) and not shifted.exceeds(2.1)
    assert shifted.videos == 50 and shifted.samples == 2000
    assert "+2.00 [+2.00, +2.00] at 95%" in shifted.describe()


def test_interval_matches_the_normal_approximation_and_is_deterministic():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 100, 649)
    candidate = reference + rng.normal(0.5, 10.0, 649)
    test = paired_bootstrap(candidate, reference, samples=4000, confidence=0.95, seed=3)
    diffs = candidate - reference
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert test.improvement == pytest.approx(diffs.mean())
    assert test.low < test.improvement < test.high
    assert (test.high - test.low) / 2 == pytest.approx(half, rel=0.1)
    assert paired_bootstrap(candidate, reference, samples=4000, seed=3) == test
    assert paired_bootstrap(candidate, reference, samples=4000, seed=4).low != test.low
    narrower = paired_bootstrap(candidate, reference, samples=4000, confidence=0.5, seed=3)
    assert test.low < narrower.low < narrower.high < test.high


def test_resampled_means_chunks_like_one_draw(monkeypatch):
    """Multinomial counts per resample: every resample draws exactly N videos."""
    import vaplan.stats as stats

    values = np.arange(7, dtype=float)
    monkeypatch.setattr(stats, "CHUNK_VALUES", 14)  # 2 resamples per chunk
    means = resampled_means(values, samples=9, seed=0)
    assert means.shape == (9,)
    assert np.all((means >= 0) & (means <= 6))
    np.testing.assert_allclose(means.mean(), 3.0, atol=1.0)


def test_scores_are_the_means_of_the_per_video_scores():
    rng = np.random.default_rng(2)
    arrays = [(rng.random((40, T, C)) < 0.2).astype(np.uint8) for _ in range(4)]
    per_video, means = avvp_video_scores(*arrays), avvp_scores(*arrays)
    assert set(per_video) == set(SCORE_KEYS)
    for key in SCORE_KEYS:
        assert per_video[key].shape == (40,)
        assert means[key] == pytest.approx(per_video[key].mean(), abs=1e-12)
    one = modality_video_scores(arrays[0], arrays[2])
    assert modality_scores(arrays[0], arrays[2]) == {k: pytest.approx(v.mean())
                                                     for k, v in one.items()}
    quality = video_label_quality(arrays[0], arrays[2])
    assert quality.shape == (40,)
    assert quality.mean() == pytest.approx(label_quality(arrays[0], arrays[2])["average"])
    with pytest.raises(ValueError, match="shape mismatch"):
        modality_video_scores(arrays[0], arrays[1][:5])
