"""Strict loader for the six LLP annotation files shipped as package data.

`load_split("train"|"val"|"test")` returns a `SplitData` with the video-level labels and, for
val/test, the segment-level audio and visual ground truth built from AVVP_eval_audio.csv and
AVVP_eval_visual.csv (onset inclusive, offset exclusive, whole seconds). Malformed rows raise
`AnnotationError` naming the file, line number and the offending value; nothing is dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaplan.categories import CLASS_INDEX, NUM_CLASSES, NUM_SEGMENTS
from vaplan.data.types import SplitData
from vaplan.errors import UserError

LLP_DIR = Path(__file__).resolve().parent / "llp_files"
SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
EVAL_FILES = {"audio": "AVVP_eval_audio.csv", "visual": "AVVP_eval_visual.csv"}
WEAK_COLUMNS = ("filename", "event_labels")
EVENT_COLUMNS = ("filename", "onset", "offset", "event_labels")


# Six rows of the published AVVP_eval_audio.csv have onset >= offset. The official evaluation
# slices GT[c, onset:offset] = 1, so they mark nothing; we accept exactly these rows (file,
# filename, onset, offset, class) as empty events and refuse any other such row.
KNOWN_EMPTY_EVENTS: frozenset[tuple[str, str, int, int, str]] = frozenset({
    ("AVVP_eval_audio.csv", "CaC2xvdLC34_250_260", 9, 9, "Speech"),
    ("AVVP_eval_audio.csv", "CSWQ_HzQ_10_20", 9, 9, "Basketball_bounce"),
    ("AVVP_eval_audio.csv", "Gg3pK71kApY_30_40", 10, 10, "Speech"),
    ("AVVP_eval_audio.csv", "H5WcJwyjxIg_2_12", 0, 0, "Baby_cry_infant_cry"),
    ("AVVP_eval_audio.csv", "Baue01N86wE_10_20", 1, 1, "Dog"),
    ("AVVP_eval_audio.csv", "8DF2PxdT5tE_390_400", 9, 0, "Cheering"),
})


class AnnotationError(UserError, ValueError):
    """A malformed row in an LLP or AVE annotation file (names file:line; one line, exit 2)."""


@dataclass(frozen=True)
class EventRow:
    """One row of an AVVP_eval_*.csv file."""

    line: int
    filename: str
    onset: int
    offset: int
    class_index: int


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """Tab-separated rows after the header, with their 1-based line numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"LLP annotation file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise AnnotationError(f"{path}: empty file, expected header {list(columns)}")
    header = [h.strip() for h in lines[0].split("\t")]
    if tuple(header) != columns:
        raise AnnotationError(f"{path}:1: header {header} does not match expected {list(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != len(columns) or any(f == "" for f in fields):
            raise AnnotationError(f"{path}:{number}: expected {len(columns)} non-empty tab-separated "
                                  f"columns {list(columns)}, got {fields}")
        rows.append((number, fields))
    return rows


def _class_index(path: Path, line: int, name: str) -> int:
    if name not in CLASS_INDEX:
        raise AnnotationError(f"{path}:{line}: unknown class {name!r} (not one of the 25 LLP classes)")
    return CLASS_INDEX[name]


def parse_weak_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an LLP-style (filename, event_labels) file -> video ids (N,), labels (N, C) uint8."""
    rows = _read_rows(Path(path), WEAK_COLUMNS)
    ids: list[str] = []
    labels = np.zeros((len(rows), NUM_CLASSES), dtype=np.uint8)  # (N, C)
    first_line: dict[str, int] = {}
    for i, (line, (filename, events)) in enumerate(rows):
        if filename in first_line:
            raise AnnotationError(f"{path}:{line}: duplicated filename {filename!r} "
                                  f"(first seen on line {first_line[filename]})")
        first_line[filename] = line
        ids.append(filename)
        for name in events.split(","):
            labels[i, _class_index(path, line, name.strip())] = 1
    return np.asarray(ids, dtype=object), labels


def parse_event_rows(path: Path,
                     allowed_empty: frozenset[tuple[str, str, int, int, str]] = frozenset()
                     ) -> list[EventRow]:
    """Read an AVVP_eval_*.csv file, validating onset/offset (0 <= onset < offset <= 10).

    Rows listed in `allowed_empty` (file name, filename, onset, offset, class) are kept as
    zero-length events, exactly as the official evaluation's slicing treats them.
    """
    path = Path(path)
    events = []
    for line, (filename, onset_s, offset_s, name) in _read_rows(path, EVENT_COLUMNS):
        try:
            onset, offset = int(onset_s), int(offset_s)
        except ValueError:
            raise AnnotationError(f"{path}:{line}: onset/offset must be whole seconds, "
                                  f"got {onset_s!r}/{offset_s!r}") from None
        empty_ok = (path.name, filename, onset, offset, name) in allowed_empty
        if not (0 <= onset <= NUM_SEGMENTS and 0 <= offset <= NUM_SEGMENTS) or (
                onset >= offset and not empty_ok):
            raise AnnotationError(f"{path}:{line}: onset {onset} / offset {offset} outside "
                                  f"0..{NUM_SEGMENTS} or onset >= offset")
        events.append(EventRow(line, filename, onset, offset, _class_index(path, line, name)))
    return events


def segment_truth(video_ids: np.ndarray, events: list[EventRow], path: Path) -> np.ndarray:
    """(N, T, C) uint8 ground truth for `video_ids` from the event rows of one modality."""
    position = {vid: i for i, vid in enumerate(video_ids)}
    truth = np.zeros((len(video_ids), NUM_SEGMENTS, NUM_CLASSES), dtype=np.uint8)
    for event in events:
        row = position.get(event.filename)
        if row is not None:
            truth[row, event.onset:event.offset, event.class_index] = 1
    return truth


@functools.lru_cache(maxsize=None)
def _load_events(modality: str) -> tuple[EventRow, ...]:
    return tuple(parse_event_rows(LLP_DIR / EVAL_FILES[modality], KNOWN_EMPTY_EVENTS))


def events_outside_splits(modality: str) -> list[EventRow]:
    """Event rows whose video is in neither val nor test.

    The published files have a few (8 audio and 7 visual videos); the official evaluation never
    reads them, and neither does `load_split`. They are listed here so nothing is dropped unseen.
    """
    known = set(parse_weak_labels(LLP_DIR / SPLIT_FILES["val"])[0])
    known |= set(parse_weak_labels(LLP_DIR / SPLIT_FILES["test"])[0])
    return [event for event in _load_events(modality) if event.filename not in known]


@functools.lru_cache(maxsize=None)
def _load_split_cached(split: str) -> SplitData:
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown LLP split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    ids, labels = parse_weak_labels(LLP_DIR / SPLIT_FILES[split])
    if split == "train":
        return SplitData(split, ids, labels)
    gt = {}
    for modality in EVAL_FILES:
        gt[modality] = segment_truth(ids, list(_load_events(modality)), LLP_DIR / EVAL_FILES[modality])
    return SplitData(split, ids, labels, gt["audio"], gt["visual"])


def load_split(split: str) -> SplitData:
    """Load an LLP split ("train", "val" or "test") from the packaged annotation files.

    Returns a fresh copy (callers may modify the arrays).
    """
    cached = _load_split_cached(split)
    copy = lambda a: None if a is None else a.copy()  # noqa: E731
    return SplitData(cached.name, cached.video_ids.copy(), cached.video_labels.copy(),
                     copy(cached.gt_audio), copy(cached.gt_visual))
