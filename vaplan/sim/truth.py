"""Segment-level truth of LLP-sim.

val/test: the real LLP annotations (optionally a deterministic subsample).
train: the real train video labels; for every labelled class, a joint (audio, visual) segment
pattern is drawn from the real **val** annotations of that class (`SimConfig.pattern_bank`).
Drawing whole joint patterns keeps, per class, the audio-only / visual-only / both rates, the
onsets, the durations and the audio-visual alignment of the real data. Rare classes borrow from
the pooled bank of all classes with weight prior_count / (n_c + prior_count).

The rule (issue 18): the test split never contributes to the training truth. "val+test" puts the
test annotations into the bank, so each test pattern reappears in the simulated training set; it
is kept only to measure what that leak was worth and is refused unless named explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS
from vaplan.data.types import SplitData
from vaplan.errors import ConfigError

MAX_TRAIN = 10000  # videos in the real LLP train split
# Real annotated splits each `SimConfig.pattern_bank` value draws the training truth from.
BANK_SPLITS: dict[str, tuple[str, ...]] = {"val": ("val",), "val+test": ("val", "test")}


@dataclass(frozen=True)
class TruthBank:
    """Real joint segment patterns per class, with the split and row each one came from."""

    patterns: np.ndarray  # (K, 2, T) uint8, index 0 audio, 1 visual; sorted by class
    start: np.ndarray  # (C,) int, first row of each class in `patterns`
    count: np.ndarray  # (C,) int, rows per class
    splits: tuple[str, ...]  # names of the annotated splits the bank was built from
    source_split: np.ndarray  # (K,) int, index into `splits` of each pattern's video
    source_row: np.ndarray  # (K,) int, row of that video in its split


def bank_splits(pattern_bank: str) -> tuple[str, ...]:
    """The real splits `SimConfig.pattern_bank` draws from (a clear error for anything else)."""
    if pattern_bank not in BANK_SPLITS:
        raise ConfigError(f"data.sim.pattern_bank must be one of {sorted(BANK_SPLITS)}, got "
                          f"{pattern_bank!r}")
    return BANK_SPLITS[pattern_bank]


def build_truth_bank(splits: list[SplitData], allow_test: bool = False) -> TruthBank:
    """Collect every (video, labelled class) joint pattern with at least one active segment.

    A split named "test" is refused unless `allow_test` (only the "val+test" comparison bank).
    """
    names = tuple(s.name for s in splits)
    if "test" in names and not allow_test:
        raise ValueError("the LLP-sim training truth must not be drawn from the test split "
                         "(data.sim.pattern_bank='val+test' is the only, explicit exception)")
    rows, starts, counts, origins = [], [], [], []
    audio = np.concatenate([s.gt_audio for s in splits])  # (N, T, C)
    visual = np.concatenate([s.gt_visual for s in splits])
    labels = np.concatenate([s.video_labels for s in splits])  # (N, C)
    split_of = np.concatenate([np.full(len(s), i) for i, s in enumerate(splits)])  # (N,)
    row_of = np.concatenate([np.arange(len(s)) for s in splits])  # (N,)
    for c in range(NUM_CLASSES):
        pairs = np.stack([audio[:, :, c], visual[:, :, c]], axis=1)  # (N, 2, T)
        keep = (labels[:, c] == 1) & (pairs.reshape(len(pairs), -1).max(axis=1) == 1)
        if not keep.any():
            raise ValueError(f"class index {c} has no annotated events in {'+'.join(names)}")
        starts.append(sum(counts))
        counts.append(int(keep.sum()))
        rows.append(pairs[keep])
        origins.append(np.flatnonzero(keep))
    origin = np.concatenate(origins)  # (K,) row in the concatenated splits
    return TruthBank(np.concatenate(rows).astype(np.uint8), np.array(starts), np.array(counts),
                     names, split_of[origin], row_of[origin])


def sample_train_truth(labels: np.ndarray, bank: TruthBank, prior_count: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw (gt_audio, gt_visual), each (N, T, C) uint8, for video labels (N, C).

    Each labelled class gets a pattern from its own bank with probability n_c/(n_c+prior_count),
    else from the pooled bank; every labelled class is active somewhere, nothing else is.
    """
    n_videos, n_classes = labels.shape
    vid, cls = np.nonzero(labels)  # (P,) labelled (video, class) pairs
    own = rng.random(len(cls)) < bank.count[cls] / (bank.count[cls] + prior_count)
    pick_own = bank.start[cls] + (rng.random(len(cls)) * bank.count[cls]).astype(np.int64)
    pick_pool = rng.integers(0, len(bank.patterns), size=len(cls))
    chosen = bank.patterns[np.where(own, pick_own, pick_pool)]  # (P, 2, T)
    truth = np.zeros((2, n_videos, NUM_SEGMENTS, n_classes), dtype=np.uint8)
    truth[0, vid, :, cls] = chosen[:, 0]
    truth[1, vid, :, cls] = chosen[:, 1]
    return truth[0], truth[1]


def subsample_indices(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a deterministic share of n rows (at least one row)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sim fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(n)
    keep = max(1, int(round(fraction * n)))
    return np.sort(rng.permutation(n)[:keep])


def check_num_train(num_train: int) -> None:
    """Refuse sizes the real train labels cannot provide."""
    if not 1 <= num_train <= MAX_TRAIN:
        raise ValueError(f"SimConfig.num_train={num_train}: LLP-sim uses the real LLP train "
                         f"video labels, so it must be between 1 and {MAX_TRAIN}")
