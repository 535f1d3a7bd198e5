"""Paired bootstrap over videos: is one per-video score array better than another?

Both arrays score the SAME videos (row i of each is video i), e.g. the candidate's and the
champion's per-video `seg_type` on val, or the per-video quality of PLD and PLG labels. The
bootstrap resamples videos with replacement B times and recomputes the mean difference on each
resample; the interval is the percentile interval at `confidence`. Pure numpy, vectorised:
resamples are drawn as multinomial counts per video, (B, N), in chunks.

    test = paired_bootstrap(candidate, champion, samples=2000, confidence=0.95, seed=0)
    test.improvement, test.low, test.high      # points (the arrays' unit), candidate - champion
    test.exceeds(0.0)                          # lower bound > 0: better beyond the noise
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CHUNK_VALUES = 1 << 22  # counts held at once (chunk rows x N), ~32 MiB of int64


@dataclass(frozen=True)
class PairedBootstrap:
    """Mean difference (candidate - reference) over N paired videos and its interval."""

    improvement: float  # mean(candidate) - mean(reference) on the full sample
    low: float  # percentile interval of the resampled mean differences at `confidence`
    high: float
    confidence: float
    samples: int  # B resamples
    videos: int  # N paired videos
    candidate_mean: float
    reference_mean: float

    def exceeds(self, threshold: float) -> bool:
        """True when the whole interval lies above `threshold` (lower bound > threshold)."""
        return self.low > threshold

    def describe(self, unit: str = "") -> str:
        """'+0.42 [-0.10, +0.95] at 95%' (the arrays' unit)."""
        return (f"{self.improvement:+.2f}{unit} [{self.low:+.2f}, {self.high:+.2f}] at "
                f"{100 * self.confidence:g}%")

    def to_dict(self) -> dict:
        return asdict(self)


def _check(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of per-video scores, "
                         f"got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"{name}: {bad.size} non-finite per-video score(s), first at row "
                         f"{bad[0]} ({values[bad[0]]})")
    return values


def check_bootstrap_options(samples: int, confidence: float) -> None:
    """Refuse fewer than 1 resample and a confidence outside (0, 1)."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"bootstrap samples must be an integer >= 1, got {samples!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def resampled_means(values: np.ndarray, samples: int, seed: int = 0) -> np.ndarray:
    """Means of `values` (N,) over `samples` resamples of its rows with replacement: (B,)."""
    values = _check("values", values)
    n = values.size
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 1.0 / n)
    rows = max(1, CHUNK_VALUES // n)
    means = np.empty(samples, dtype=np.float64)
    for start in range(0, samples, rows):
        stop = min(samples, start + rows)
        counts = rng.multinomial(n, uniform, size=stop - start)  # (b, N): draws of each video
        means[start:stop] = counts @ values / n
    return means


def paired_bootstrap(candidate: np.ndarray, reference: np.ndarray, samples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> PairedBootstrap:
    """Paired bootstrap of mean(candidate) - mean(reference) over the same N videos.

    Raises ValueError for arrays that are not (N,) with the same N, for non-finite scores
    (a NaN score can never be compared) and for bad options.
    """
    check_bootstrap_options(samples, confidence)
    candidate, reference = _check("candidate", candidate), _check("reference", reference)
    if candidate.shape != reference.shape:
        raise ValueError(f"paired scores must cover the same videos: candidate has "
                         f"{candidate.size}, reference {reference.size}")
    diffs = candidate - reference  # (N,)
    means = resampled_means(diffs, int(samples), seed)  # (B,)
    tail = 100 * (1 - float(confidence)) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedBootstrap(float(diffs.mean()), float(low), float(high), float(confidence),
                           int(samples), int(candidate.size), float(candidate.mean()),
                           float(reference.mean()))
