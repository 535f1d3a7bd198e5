"""Strict loader for the AVE annotation files shipped as package data (docs/ave.md).

AVE (Tian et al., ECCV 2018): 4,143 ten-second videos, 28 event classes, one audio-visual event
per video given as whole seconds [start, end). `load_split("train"|"val"|"test")` returns an
`AveSplit` with each video's event class and its segment truth over 29 classes (the 28 events
plus background, index `BACKGROUND` = 28, the official labels' last column). Malformed rows
raise `AnnotationError` naming the file, the line and the offending value; nothing is dropped.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaplan.data.llp import AnnotationError

AVE_DIR = Path(__file__).resolve().parent / "ave_files"
ANNOTATIONS = "annotations.csv"
SPLITS = ("train", "val", "test")
ORDER_FILES = {split: f"{split}_order.txt" for split in SPLITS}
COLUMNS = ("index", "category", "video_id", "quality", "start", "end")

# The 28 AVE event classes in the official label order (the columns of the reference code's
# labels.h5, the order of first appearance in Annotations.txt); background comes after them.
AVE_CLASSES: tuple[str, ...] = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle",
    "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar",
    "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat",
    "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
)
AVE_CLASS_INDEX = {name: i for i, name in enumerate(AVE_CLASSES)}
NUM_AVE_CLASSES = len(AVE_CLASSES)  # 28
BACKGROUND = NUM_AVE_CLASSES  # 28: the 29th segment class
NUM_AVE_SEGMENTS = 10
NUM_AVE_VIDEOS = 4143

# The one published row whose event is empty (start == end): all ten segments are background,
# as the reference code's label slicing makes them. Any other such row is refused.
KNOWN_EMPTY_EVENTS = frozenset({(26, "VWi2ENBuTbw")})
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


@dataclass(frozen=True)
class AveSplit:
    """One AVE split: N videos of T = 10 one-second segments."""

    split: str
    indices: np.ndarray  # (N,) int64: row index in annotations.csv (the video's identity)
    video_ids: np.ndarray  # (N,) object: YouTube ids (not unique across the dataset)
    video_label: np.ndarray  # (N,) int64 in [0, 28): the video's event class
    truth: np.ndarray  # (N, T) int64 in [0, 28]: the segment's class, BACKGROUND outside the event

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class AveAnnotations:
    """All 4,143 rows of annotations.csv, indexed by `index`."""

    video_ids: np.ndarray  # (V,) object
    video_label: np.ndarray  # (V,) int64
    truth: np.ndarray  # (V, T) int64


def _int(path: Path, line: int, column: str, text: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise AnnotationError(f"{path}:{line}: {column} must be a whole number, got {text!r}")
    return int(text)


def parse_annotations(path: Path) -> AveAnnotations:
    """Read an AVE annotations.csv (header `COLUMNS`, one row per video, `index` = row number)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"AVE annotation file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(h.strip() for h in lines[0].split(",")) != COLUMNS:
        raise AnnotationError(f"{path}:1: header must be {','.join(COLUMNS)}, "
                              f"got {lines[0] if lines else '(empty file)'!r}")
    ids, labels, truth = [], [], []
    for line, text in enumerate(lines[1:], start=2):
        # The category may contain commas ("Male speech, man speaking"), quoted as CSV does.
        fields = _split_csv(path, line, text)
        index = _int(path, line, "index", fields[0])
        if index != len(ids):
            raise AnnotationError(f"{path}:{line}: index {index} out of sequence, "
                                  f"expected {len(ids)} (rows in the original order)")
        category, video_id, quality = fields[1], fields[2], fields[3]
        if category not in AVE_CLASS_INDEX:
            raise AnnotationError(f"{path}:{line}: unknown category {category!r} "
                                  f"(not one of the 28 AVE classes)")
        if not _VIDEO_ID.match(video_id):
            raise AnnotationError(f"{path}:{line}: video_id {video_id!r} is not an 11-character "
                                  f"YouTube id")
        if quality != "good":
            raise AnnotationError(f"{path}:{line}: quality {quality!r}, expected 'good' "
                                  f"(every row of the published file)")
        start, end = (_int(path, line, c, v) for c, v in (("start", fields[4]), ("end", fields[5])))
        empty_ok = (index, video_id) in KNOWN_EMPTY_EVENTS
        if not 0 <= start <= end <= NUM_AVE_SEGMENTS or (start == end and not empty_ok):
            raise AnnotationError(f"{path}:{line}: start {start} / end {end}: expected whole "
                                  f"seconds with 0 <= start < end <= {NUM_AVE_SEGMENTS}")
        label = AVE_CLASS_INDEX[category]
        row = np.full(NUM_AVE_SEGMENTS, BACKGROUND, dtype=np.int64)
        row[start:end] = label
        ids.append(video_id)
        labels.append(label)
        truth.append(row)
    if not ids:
        raise AnnotationError(f"{path}: no rows after the header")
    return AveAnnotations(np.asarray(ids, dtype=object), np.asarray(labels, dtype=np.int64),
                          np.stack(truth))


def _split_csv(path: Path, line: int, text: str) -> list[str]:
    fields = next(csv.reader([text]))
    if len(fields) != len(COLUMNS) or any(not f.strip() for f in fields):
        raise AnnotationError(f"{path}:{line}: expected {len(COLUMNS)} non-empty columns "
                              f"{','.join(COLUMNS)}, got {fields}")
    return [f.strip() for f in fields]


def parse_order(path: Path, num_videos: int) -> np.ndarray:
    """Read a `{split}_order.txt`: one annotation index per line, distinct, in [0, num_videos)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"AVE split file not found: {path}")
    order: list[int] = []
    first_line: dict[int, int] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        index = _int(path, line, "index", text.strip())
        if not 0 <= index < num_videos:
            raise AnnotationError(f"{path}:{line}: index {index} outside 0..{num_videos - 1} "
                                  f"(the rows of {ANNOTATIONS})")
        if index in first_line:
            raise AnnotationError(f"{path}:{line}: index {index} repeated "
                                  f"(first on line {first_line[index]})")
        first_line[index] = line
        order.append(index)
    if not order:
        raise AnnotationError(f"{path}: empty split file")
    return np.asarray(order, dtype=np.int64)


def _check_disjoint(directory: Path, orders: dict[str, np.ndarray]) -> None:
    seen: dict[int, str] = {}
    for split in SPLITS:
        for line, index in enumerate(orders[split].tolist(), start=1):
            if index in seen:
                raise AnnotationError(f"{directory / ORDER_FILES[split]}:{line}: index {index} "
                                      f"is also in the {seen[index]} split")
            seen[index] = split


@functools.lru_cache(maxsize=4)
def _load_all(directory: str) -> tuple[AveAnnotations, dict[str, np.ndarray]]:
    root = Path(directory)
    annotations = parse_annotations(root / ANNOTATIONS)
    orders = {split: parse_order(root / ORDER_FILES[split], len(annotations.video_ids))
              for split in SPLITS}
    _check_disjoint(root, orders)
    return annotations, orders


def load_split(split: str, directory: Path | str | None = None) -> AveSplit:
    """The official AVE split (train 3,339 / val 402 / test 402 videos), in the order files' order."""
    if split not in SPLITS:
        raise ValueError(f"unknown AVE split {split!r}; expected one of {', '.join(SPLITS)}")
    annotations, orders = _load_all(str(Path(directory or AVE_DIR).resolve()))
    order = orders[split]
    return AveSplit(split=split, indices=order.copy(),
                    video_ids=annotations.video_ids[order],
                    video_label=annotations.video_label[order],
                    truth=annotations.truth[order])
