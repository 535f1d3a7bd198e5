"""Frame agreement: how often CLIP's middle-frame label is the segment's (docs/teachers.md).

`vaplan teach --agreement-frames K` scores K other frames of each 1-s segment besides the
middle one and stores, per segment and class, the min and max of their probabilities (the cache's
agree_* columns), so any threshold τ can be applied later. Over the labelled cells (video label
y_c = 1, the only ones PLG can label), at τ:

- unconfirmed positives: the middle frame says yes (p ≥ τ) and **no** other frame does
  (max < τ): the share of the middle frame's positive labels that are its own;
- middle-only misses: the middle frame says no and **every** other frame says yes (min ≥ τ):
  the share of its negative labels the rest of the segment contradicts — the "bad frame" misses
  LLP-sim's `data.sim.teacher_only_share` models (docs/llp-sim.md §2.1).

Both rules are conservative (a single confirming / missing frame is agreement). Agreement is
not correctness: a dark or occluded stretch covering the whole segment is shared by every frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AgreementSummary:
    """Counts of labelled (segment, class) cells and the two shares (percent; NaN if empty)."""

    prompt_id: str
    threshold: float
    frames: int  # K other frames per segment (the smallest K if videos differ)
    segments: int  # segment rows with agreement recorded
    middle_positive: int  # labelled cells the middle frame labels
    unconfirmed_positive: int  # ... that no other frame confirms
    middle_negative: int  # labelled cells the middle frame does not label
    middle_only_miss: int  # ... that every other frame labels

    @property
    def unconfirmed_positive_share(self) -> float:
        return 100 * self.unconfirmed_positive / self.middle_positive \
            if self.middle_positive else float("nan")

    @property
    def middle_only_miss_share(self) -> float:
        return 100 * self.middle_only_miss / self.middle_negative \
            if self.middle_negative else float("nan")

    def to_dict(self) -> dict:
        """Plain JSON (an empty share is null)."""
        shares = {"unconfirmed_positive_share": self.unconfirmed_positive_share,
                  "middle_only_miss_share": self.middle_only_miss_share}
        return {**asdict(self), **{k: None if v != v else v for k, v in shares.items()}}

    def describe(self) -> str:
        return (f"frame agreement ({self.prompt_id}, τ {self.threshold:g}, {self.frames} other "
                f"frames, {self.segments} segments): {self.unconfirmed_positive_share:.1f}% of "
                f"the middle frame's labels unconfirmed by the other frames "
                f"({self.unconfirmed_positive}/{self.middle_positive}); "
                f"{self.middle_only_miss_share:.1f}% of its labelled misses seen by every other "
                f"frame ({self.middle_only_miss}/{self.middle_negative})")


def summarise_agreement(middle: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                        labels: np.ndarray, threshold: float, prompt_id: str = "",
                        frames: int = 0) -> AgreementSummary:
    """middle/lo/hi: (R, C) probabilities (middle frame, min and max over the other frames),
    labels: (R, C) video labels {0,1} of each row's video; the counts at `threshold`."""
    if not 0 < threshold < 1:
        raise ValueError(f"agreement threshold must be in (0, 1), got {threshold}")
    labelled = np.asarray(labels).astype(bool)  # (R, C)
    mid = (np.asarray(middle) >= threshold) & labelled
    missed = ~mid & labelled
    return AgreementSummary(
        prompt_id, float(threshold), int(frames), int(labelled.shape[0]),
        int(mid.sum()), int((mid & (np.asarray(hi) < threshold)).sum()),
        int(missed.sum()), int((missed & (np.asarray(lo) >= threshold)).sum()))


def cache_agreement(path, prompt_id: str, threshold: float,
                    allow_random: bool = False) -> AgreementSummary:
    """The summary over every segment of a teacher cache with agreement recorded."""
    from vaplan.teachers.cache import load_frame_agreement

    rows = load_frame_agreement(path, prompt_id, allow_random=allow_random)
    return summarise_agreement(rows["middle"], rows["lo"], rows["hi"], rows["labels"],
                               threshold, prompt_id, int(rows["frames"].min()))
