"""Strict loader for the AVE annotation files shipped as package data (docs/ave.md).

AVE (Tian et al., ECCV 2018): 4,143 ten-second videos, 28 event classes, one audio-visual event
per video given as whole seconds [start, end). `load_split("train"|"val"|"test")` returns an
`AveSplit` with each video's event class and its segment truth over 29 classes (the 28 events
plus background, index `BACKGROUND` = 28, the official labels' last column). Malformed rows
raise `AnnotationError` naming the file, the line and the offending value; nothing is dropped.

The AVE feature store (`vaplan build-features --dataset ave`, docs/ave.md "Feature store"):
`build_ave_feature_store` validates the official `avadataset` .h5 files and writes one folder
per split in the official order; `load_ave_features` returns a split as read-only memory maps.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaplan.data.llp import AnnotationError
from vaplan.errors import FeatureFileError
from vaplan.io import atomic_dir, read_json, write_json

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


# ---------------------------------------------------------------- the AVE feature store

H5_KEY = "avadataset"  # the dataset key of every official AVE .h5 file
AUDIO_SHAPE = (NUM_AVE_SEGMENTS, 128)  # VGGish per 1-s segment
VISUAL_SHAPE = (NUM_AVE_SEGMENTS, 7, 7, 512)  # VGG-19 pool5 map per segment (kept, not pooled)
NUM_BACKGROUND_VIDEOS = 178  # rows of the official *_noisy.h5 files (weak setting)
BACKGROUND_SPLIT = "noisy"  # the store's folder of the background-only training videos
STORE_SPLITS = (*SPLITS, BACKGROUND_SPLIT)
AVE_STORE_FORMAT = 1
_BLOCK_ROWS = 64  # h5 rows read at once (64 MB of float32 visual maps)


@dataclass(frozen=True)
class AveFeatures:
    """One split of an AVE feature store; arrays are read-only memory maps unless copied."""

    split: str
    indices: np.ndarray  # (N,) int64: annotation row (for `noisy`: row of the *_noisy.h5 files)
    audio: np.ndarray  # (N, T, 128)
    visual: np.ndarray  # (N, T, 7, 7, 512)

    def __len__(self) -> int:
        return len(self.indices)


def _subset(split: AveSplit, rows: np.ndarray) -> AveSplit:
    return AveSplit(split.split, split.indices[rows], split.video_ids[rows],
                    split.video_label[rows], split.truth[rows])


def split_rows(split: str, max_videos: int = 0) -> np.ndarray:
    """The annotation indices of `split` a store holds, in the official order: all of them, or
    with `max_videos` N > 0 those below N (a store built from the first N rows of the files)."""
    order = load_split(split).indices
    return order if max_videos <= 0 else order[order < max_videos]


def _open_h5(path: Path, what: str, tail: tuple[int, ...]):
    """Open `path` and check its `avadataset` array: (rows, *tail), floating point."""
    import h5py  # lazy: only the AVE feature commands need it

    if not path.is_file():
        raise FeatureFileError(f"{what} file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({err})") from err
    if H5_KEY not in handle or not isinstance(handle[H5_KEY], h5py.Dataset):
        keys = ", ".join(sorted(handle.keys())) or "none"
        handle.close()
        raise FeatureFileError(f"{path}: no dataset {H5_KEY!r} (keys: {keys}); expected the "
                               f"official AVE {what} layout")
    data = handle[H5_KEY]
    shape, dtype = tuple(data.shape), data.dtype
    problem = None
    if len(shape) != 1 + len(tail) or shape[1:] != tail:
        problem = (f"{H5_KEY} has shape {shape}, expected (rows, {', '.join(map(str, tail))}) "
                   f"for {what}")
    elif dtype.kind != "f":
        problem = f"{H5_KEY} has dtype {dtype}, expected floating point for {what}"
    if problem:
        handle.close()
        raise FeatureFileError(f"{path}: {problem}")
    return handle, data


def _check_rows(path: Path, rows: int, expected: int, max_videos: int, background: bool) -> int:
    """The rows to read: all `expected` (the official count); with `max_videos` N > 0 the first
    N (the background videos: the first min(N, rows), a subset build needs few of them)."""
    if max_videos <= 0:
        if rows != expected:
            raise FeatureFileError(f"{path}: {H5_KEY} has {rows} rows, expected {expected} "
                                   f"(use --max-videos N for a store of the first N rows)")
        return rows
    want = min(max_videos, rows if background else expected)
    if rows < want or rows == 0:
        raise FeatureFileError(f"{path}: {H5_KEY} has {rows} rows, expected at least "
                               f"{max(want, 1)} (--max-videos {max_videos})")
    return want


def _video_name(background: bool, row: int) -> str:
    if background:
        return f"background video {row}"
    return f"AVE index {row}, video {_load_all(str(AVE_DIR))[0].video_ids[row]}"


def _first_bad_row(values: np.ndarray) -> int | None:
    """Index of the first row of `values` (rows, ...) with a NaN or inf, None if all finite."""
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)  # (rows,)
    return None if finite.all() else int(np.argmin(finite))


def _cast_block(path: Path, block: np.ndarray, first_row: int, dtype: np.dtype,
                background: bool) -> np.ndarray:
    """One block of h5 rows -> `dtype`, refusing NaN/inf and values the cast overflows."""
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the row
        cast = block.astype(dtype)
    for values, problem in ((block, "NaN or inf values"),
                            (cast, f"values that overflow {dtype.name} (use --dtype float32)")):
        bad = _first_bad_row(values)
        if bad is not None:
            row = first_row + bad
            raise FeatureFileError(f"{path}: row {row} ({_video_name(background, row)}) has "
                                   f"{problem}")
    return cast


def _write_stream(path: Path, data, rows: int, targets: list[tuple[np.ndarray, np.ndarray]],
                  dtype: np.dtype, background: bool) -> None:
    """Copy rows 0..rows-1 of an h5 array into store arrays, block by block (sequential reads).

    targets: (the destination row of every h5 row or -1 (rows,), the split's memmap) per split.
    """
    for lo in range(0, rows, _BLOCK_ROWS):
        hi = min(lo + _BLOCK_ROWS, rows)
        try:
            block = np.asarray(data[lo:hi])  # (hi - lo, T, ...)
        except OSError as err:
            raise FeatureFileError(f"{path}: cannot read rows {lo}..{hi - 1} ({err})") from err
        block = _cast_block(path, block, lo, dtype, background)
        for position, out in targets:
            where = position[lo:hi]  # (hi - lo,)
            keep = where >= 0
            out[where[keep]] = block[keep]


def _positions(indices: np.ndarray, rows: int) -> np.ndarray:
    """(rows,) row of each h5 row inside a store split, -1 when the split lacks it."""
    position = np.full(rows, -1, dtype=np.int64)
    position[indices] = np.arange(len(indices))
    return position


def build_ave_feature_store(audio: str | Path, visual: str | Path, out: str | Path,
                            noisy_audio: str | Path | None = None,
                            noisy_visual: str | Path | None = None, dtype: str = "float16",
                            max_videos: int = 0) -> Path:
    """Validate the official AVE feature files and write a store folder (docs/ave.md).

    `audio`/`visual`: audio_feature.h5 (4143, 10, 128) and visual_feature.h5
    (4143, 10, 7, 7, 512), rows = annotation indices; `noisy_*`: the 178 background videos of
    the weak setting (both or neither). The store holds one folder per split (train, val,
    test, noisy) with audio.npy, visual.npy (the 7x7x512 maps, kept) and indices.npy in the
    official order, so a split loads as a memory map without copying. `max_videos` N > 0: only
    the first N rows of the files (each split keeps its indices below N). Written atomically.
    """
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.float16, np.float32):
        raise FeatureFileError(f"--dtype must be float16 or float32, got {dtype!r}")
    if (noisy_audio is None) != (noisy_visual is None):
        raise FeatureFileError("--noisy-audio and --noisy-visual go together (the background "
                               "videos need both streams)")
    sources = {"audio": (Path(audio), AUDIO_SHAPE), "visual": (Path(visual), VISUAL_SHAPE)}
    splits = {split: split_rows(split, max_videos) for split in SPLITS}
    if noisy_audio is not None:
        sources.update({"noisy_audio": (Path(noisy_audio), AUDIO_SHAPE),
                        "noisy_visual": (Path(noisy_visual), VISUAL_SHAPE)})
    out = Path(out)
    handles = []
    try:
        opened = {}
        for name, (path, tail) in sources.items():
            handle, data = _open_h5(path, name.replace("_", " ") + " feature", tail)
            handles.append(handle)
            background = name.startswith("noisy_")
            expected = NUM_BACKGROUND_VIDEOS if background else NUM_AVE_VIDEOS
            opened[name] = (path, data, _check_rows(path, data.shape[0], expected, max_videos,
                                                    background))
        if "noisy_audio" in opened and opened["noisy_audio"][2] != opened["noisy_visual"][2]:
            raise FeatureFileError(f"{opened['noisy_audio'][0]} and {opened['noisy_visual'][0]} "
                                   f"have {opened['noisy_audio'][2]} and "
                                   f"{opened['noisy_visual'][2]} rows; the background videos "
                                   f"need both streams of each video")
        if "noisy_audio" in opened:
            splits[BACKGROUND_SPLIT] = np.arange(opened["noisy_audio"][2], dtype=np.int64)
        with atomic_dir(out) as tmp:
            counts = _write_store(tmp, opened, splits, np_dtype)
            write_json(tmp / "meta.json", {
                "format_version": AVE_STORE_FORMAT, "dataset": "ave", "dtype": np_dtype.name,
                "max_videos": max_videos, "splits": counts,
                "visual": "VGG-19 pool5 maps kept at 7x7x512 per segment",
                "sources": {name: str(path.resolve()) for name, (path, _) in sources.items()}})
    finally:
        for handle in handles:
            handle.close()
    return out


def _write_store(folder: Path, opened: dict, splits: dict[str, np.ndarray],
                 dtype: np.dtype) -> dict[str, int]:
    """Fill folder/<split>/{audio,visual,indices}.npy from the opened h5 arrays."""
    outs: dict[str, dict[str, np.ndarray]] = {}
    for split, indices in splits.items():
        (folder / split).mkdir()
        np.save(folder / split / "indices.npy", indices)
        outs[split] = {stream: np.lib.format.open_memmap(
            folder / split / f"{stream}.npy", mode="w+", dtype=dtype,
            shape=(len(indices), *tail)) for stream, tail in (("audio", AUDIO_SHAPE),
                                                              ("visual", VISUAL_SHAPE))}
    for name, (path, data, rows) in opened.items():
        background = name.startswith("noisy_")
        stream = name.removeprefix("noisy_")
        chosen = [BACKGROUND_SPLIT] if background else list(SPLITS)
        targets = [(_positions(splits[split], rows), outs[split][stream]) for split in chosen]
        _write_stream(path, data, rows, targets, dtype, background)
    for arrays in outs.values():
        for array in arrays.values():
            array.flush()
    return {split: len(indices) for split, indices in splits.items()}


def load_ave_features(store: str | Path, split: str, mmap: bool = True) -> AveFeatures:
    """One split of a store written by `build_ave_feature_store` (read-only memory maps by
    default, so RAM stays low). `split`: train, val, test or noisy (the background videos)."""
    store = Path(store)
    if split not in STORE_SPLITS:
        raise ValueError(f"unknown AVE store split {split!r}; expected one of "
                         f"{', '.join(STORE_SPLITS)}")
    if not (store / "meta.json").is_file():
        raise FeatureFileError(f"AVE feature store {store} not found (no meta.json); build it "
                               f"with `vaplan build-features --dataset ave`")
    meta = read_json(store / "meta.json")
    if meta.get("dataset") != "ave" or meta.get("format_version") != AVE_STORE_FORMAT:
        raise FeatureFileError(f"{store}: not an AVE feature store of format {AVE_STORE_FORMAT} "
                               f"(meta.json: dataset={meta.get('dataset')!r}, "
                               f"format_version={meta.get('format_version')!r})")
    if split not in meta.get("splits", {}):
        raise FeatureFileError(f"{store}: no {split!r} split (the background videos need "
                               f"--noisy-audio and --noisy-visual when the store is built)")
    folder = store / split
    try:
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None,
                                allow_pickle=False) for name in ("indices", "audio", "visual")}
    except (OSError, ValueError) as err:
        raise FeatureFileError(f"{folder}: incomplete or corrupt store split ({err})") from err
    indices = arrays["indices"]
    for name, tail in (("audio", AUDIO_SHAPE), ("visual", VISUAL_SHAPE)):
        if arrays[name].shape != (len(indices), *tail):
            raise FeatureFileError(f"{folder}/{name}.npy has shape {arrays[name].shape}, "
                                   f"expected {(len(indices), *tail)}")
    if split != BACKGROUND_SPLIT:
        expected = split_rows(split, int(meta.get("max_videos", 0)))
        if not np.array_equal(indices, expected):
            raise FeatureFileError(f"{folder}/indices.npy differs from the official {split} "
                                   f"order (a store built from other split files?)")
    return AveFeatures(split, np.asarray(indices), arrays["audio"], arrays["visual"])


def load_split_with_features(store: str | Path, split: str, mmap: bool = True
                             ) -> tuple[AveSplit, AveFeatures]:
    """The split's annotations restricted to the rows the store holds, and its features."""
    features = load_ave_features(store, split, mmap)
    annotations = load_split(split)
    rows = np.flatnonzero(np.isin(annotations.indices, features.indices))
    return _subset(annotations, rows), features
