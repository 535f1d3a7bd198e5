"""Plain containers passed between the layers (numpy arrays, no torch).

Shapes use N videos, T=10 segments, C=25 classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Features:
    """Per-segment input features of one split, row-aligned with its video ids."""

    audio: np.ndarray  # (N, T, Da)   VGGish 128-d (or CLAP 512-d)
    visual: np.ndarray  # (N, T, Dv)  ResNet152 frames pre-pooled 8 -> 1 (or CLIP 512-d)
    visual_3d: np.ndarray | None = None  # (N, T, D3) R(2+1)D-18, None when unused

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def subset(self, index: np.ndarray) -> "Features":
        third = None if self.visual_3d is None else self.visual_3d[index]
        return Features(self.audio[index], self.visual[index], third)


@dataclass
class SplitData:
    """One split: ids, weak labels, segment ground truth (val/test) and features."""

    name: str
    video_ids: np.ndarray  # (N,) str, LLP filenames "<11-char id>_<start>_<end>"
    video_labels: np.ndarray  # (N, C) uint8, union of audio and visual events
    gt_audio: np.ndarray | None = None  # (N, T, C) uint8
    gt_visual: np.ndarray | None = None  # (N, T, C) uint8
    features: Features | None = None

    def __len__(self) -> int:
        return int(self.video_ids.shape[0])

    def subset(self, index: np.ndarray) -> "SplitData":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        feats = None if self.features is None else self.features.subset(index)
        return SplitData(self.name, self.video_ids[index], self.video_labels[index],
                         pick(self.gt_audio), pick(self.gt_visual), feats)


@dataclass
class TeacherScores:
    """Teacher segment probabilities (Eq. 3) per prompt set, row-aligned with `video_ids`."""

    video_ids: np.ndarray  # (N,) str
    probs: dict[str, np.ndarray]  # prompt id ("VP1".."VP4", "AP1", "AP2") -> (N, T, C) float32
    meta: dict[str, str] = field(default_factory=dict)

    def get(self, prompt_id: str) -> np.ndarray:
        if prompt_id not in self.probs:
            raise KeyError(f"teacher scores have no prompt set {prompt_id!r}; "
                           f"available: {sorted(self.probs)}")
        return self.probs[prompt_id]


@dataclass
class PseudoLabels:
    """Segment-level pseudo labels per modality and their video-level union."""

    seg_audio: np.ndarray  # (N, T, C) uint8
    seg_visual: np.ndarray  # (N, T, C) uint8

    @property
    def video_audio(self) -> np.ndarray:  # (N, C) uint8
        return self.seg_audio.max(axis=1)

    @property
    def video_visual(self) -> np.ndarray:  # (N, C) uint8
        return self.seg_visual.max(axis=1)


@dataclass
class Dataset:
    """A complete benchmark: three splits with features plus teacher scores per split."""

    train: SplitData
    val: SplitData
    test: SplitData
    teachers: dict[str, TeacherScores]  # split name -> scores
    digest: str = ""  # content digest, logged with every run
    description: str = ""
