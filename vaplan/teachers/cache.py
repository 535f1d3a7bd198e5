"""The teacher score cache: a folder of Parquet chunks plus `meta.json` (docs/teachers.md).

One row per video x segment x modality:

    video_id  string                 LLP filename
    segment   int8                   0..9
    modality  string                 "audio" | "visual"
    prob_<PID> list<float32>[25]     softmax of raw cosines (Eq. 3); null for the other modality
    cos_<PID>  list<float32>[25]     raw cosine similarities (may be null, e.g. LLP-sim)
    embedding  list<float32>         segment embedding (CLIP image / CLAP audio), may be null
    video_labels list<uint8>[25]     optional: the video-level labels of the split file
    agree_frames int8                 optional (version 2): K other frames CLIP scored per segment
    agree_min_<PID> list<float32>[25] optional: min over those K frames of the class probability
    agree_max_<PID> list<float32>[25] optional: max over them (`vaplan teach --agreement-frames`;
                                      null where not recorded; vaplan.teachers.agreement)

Chunks are appended (`part-<n>-<uuid>.parquet`, each written atomically), so an interrupted
run keeps everything flushed before it stopped and a re-run skips cached videos. `meta.json`
names the teachers (model, checkpoint digest, prompt texts) per modality with a digest each;
appending under a different digest raises, so scores from two models are never mixed.

Both `vaplan teach` (real CLIP/CLAP) and LLP-sim write through `ScoreCacheWriter`, and every
consumer reads through `load_teacher_scores`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from vaplan.categories import CLASSES, MODALITIES, NUM_CLASSES, NUM_SEGMENTS
from vaplan.data.types import TeacherScores
from vaplan.io import atomic_path, atomic_write
from vaplan.prompts import prompt_modality

CACHE_FORMAT = "vaplan-teacher-cache"
# 1: scores, embeddings, video labels; 2: + the optional agree_* columns (version-1 caches load
# unchanged, a writer upgrades the meta). A newer version is refused by `read_cache_meta`.
CACHE_VERSION = 2
META_FILE = "meta.json"
PART_GLOB = "part-*.parquet"
# Keys of a modality's teacher entry that do not change what the scores mean.
_VOLATILE_TEACHER_KEYS = frozenset({"digest", "notes"})


class CacheError(ValueError):
    """A teacher cache is missing, malformed, incomplete or incompatible."""


# ----------------------------------------------------------------------------- meta / digests


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def teacher_digest(entry: Mapping[str, Any]) -> str:
    """sha256 over one modality's teacher identity (model, checkpoint digest, prompts, ...)."""
    core = {k: v for k, v in entry.items() if k not in _VOLATILE_TEACHER_KEYS}
    return hashlib.sha256(_canonical_json(core).encode()).hexdigest()


def combined_digest(teachers: Mapping[str, Mapping[str, Any]], random_weights: bool) -> str:
    """Cache-level digest: the per-modality digests plus the random-weights flag."""
    parts = {m: teacher_digest(e) for m, e in sorted(teachers.items())}
    payload = _canonical_json({"teachers": parts, "random_weights": bool(random_weights)})
    return hashlib.sha256(payload.encode()).hexdigest()


def build_cache_meta(teachers: Mapping[str, Mapping[str, Any]], random_weights: bool,
                     source: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A complete meta dict for `ScoreCacheWriter`.

    teachers: modality -> {"model": str, "checkpoint": str, "checkpoint_sha256": str,
              "prompts": {PID: [25 texts]}, ...}; every PID must belong to that modality.
    source: who wrote the scores ("teach", "llp-sim", ...).
    """
    meta: dict[str, Any] = dict(extra or {})
    meta.update({"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": source,
                 "random_weights": bool(random_weights), "classes": list(CLASSES),
                 "num_segments": NUM_SEGMENTS, "teachers": {}})
    for modality, entry in teachers.items():
        entry = dict(entry)
        entry["digest"] = teacher_digest(entry)
        meta["teachers"][modality] = entry
    _validate_meta(meta, "<new meta>")
    meta["digest"] = combined_digest(meta["teachers"], meta["random_weights"])
    return meta


def _validate_meta(meta: Mapping[str, Any], where: str) -> None:
    teachers = meta.get("teachers")
    if not isinstance(teachers, Mapping) or not teachers:
        raise CacheError(f"{where}: meta needs a non-empty 'teachers' mapping "
                         f"(modality -> model, checkpoint, prompts)")
    for modality, entry in teachers.items():
        if modality not in MODALITIES:
            raise CacheError(f"{where}: unknown modality {modality!r}; expected {MODALITIES}")
        prompts = entry.get("prompts")
        if not isinstance(prompts, Mapping) or not prompts:
            raise CacheError(f"{where}: teachers[{modality!r}] needs 'prompts' {{PID: texts}}")
        for pid in prompts:
            if prompt_modality(pid) != modality:
                raise CacheError(f"{where}: prompt set {pid} is not a {modality} prompt set")
    if "random_weights" not in meta:
        raise CacheError(f"{where}: meta needs a 'random_weights' flag")


def _prompt_ids(meta: Mapping[str, Any], modality: str) -> list[str]:
    return sorted(meta["teachers"][modality]["prompts"])


def read_cache_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The cache's meta.json; raises CacheError naming the folder if missing or malformed."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise CacheError(f"{path}: not a teacher cache (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CacheError(f"{meta_path}: invalid JSON ({exc})") from None
    if meta.get("format") != CACHE_FORMAT:
        raise CacheError(f"{meta_path}: format {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
    if not isinstance(meta.get("version", 1), int) or meta.get("version", 1) > CACHE_VERSION:
        raise CacheError(f"{meta_path}: cache version {meta.get('version')!r} is newer than this "
                         f"vaplan reads (<= {CACHE_VERSION}); upgrade vaplan")
    _validate_meta(meta, str(meta_path))
    return meta


def _merge_meta(old: dict[str, Any], new: dict[str, Any], where: str) -> dict[str, Any]:
    """Old meta extended by new modalities; the same modality must have the same digest."""
    if bool(old["random_weights"]) != bool(new["random_weights"]):
        raise CacheError(f"{where}: cache has random_weights={old['random_weights']}, this run "
                         f"has random_weights={new['random_weights']}; use another --out folder")
    merged = dict(old)
    merged["teachers"] = dict(old["teachers"])
    for modality, entry in new["teachers"].items():
        old_entry = old["teachers"].get(modality)
        if old_entry is None:
            merged["teachers"][modality] = entry
            continue
        if teacher_digest(old_entry) != teacher_digest(entry):
            keys = (set(old_entry) | set(entry)) - _VOLATILE_TEACHER_KEYS
            diff = sorted(k for k in keys if old_entry.get(k) != entry.get(k))
            raise CacheError(f"{where}: the {modality} teacher differs from the cached one "
                             f"(fields {diff}; cached digest {teacher_digest(old_entry)[:12]}, "
                             f"new {teacher_digest(entry)[:12]}); refusing to mix scores — "
                             f"write to another folder")
    merged["digest"] = combined_digest(merged["teachers"], merged["random_weights"])
    return merged


# ----------------------------------------------------------------------------- writer


class ScoreCacheWriter:
    """Append teacher scores to a cache folder (created if missing).

    meta: from `build_cache_meta` (or any dict with 'teachers' and 'random_weights'; the
    digests are (re)computed here). An existing cache must have the same teacher digest for
    every modality both name, else CacheError. Rows are buffered and written as one Parquet
    part per `flush_videos` videos (and on `flush()`/`close()`).
    """

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any], flush_videos: int = 64):
        self.path = Path(path)
        self.flush_videos = max(1, int(flush_videos))
        new = _normalise_meta(meta)
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / META_FILE).exists():
            self.meta = _merge_meta(read_cache_meta(self.path), new, str(self.path))
            self.meta["version"] = CACHE_VERSION  # older parts stay readable (no agree_*)
        else:
            self.meta = new
        atomic_write(self.path / META_FILE, json.dumps(self.meta, indent=2))
        self._buffer: list[Any] = []  # pyarrow tables
        self._buffered_videos = 0
        self._closed = False

    def __enter__(self) -> "ScoreCacheWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def append(self, video_ids: Iterable[str], modality: str,
               probs: Mapping[str, np.ndarray], cosines: Mapping[str, np.ndarray] | None = None,
               embeddings: np.ndarray | None = None,
               video_labels: np.ndarray | None = None,
               agreement: tuple[int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
               | None = None) -> None:
        """Add n videos of one modality.

        probs/cosines: PID -> (n, T, C); every prompt set of that modality in the meta must be
        given. embeddings: (n, T, D) or None. video_labels: (n, C) {0,1} or None.
        agreement: (K, lo, hi), lo/hi PID -> (n, T, C) min/max class probability over the K
        other frames of each segment (visual; the agree_* columns), or None.
        """
        if self._closed:
            raise CacheError(f"{self.path}: writer is closed")
        ids = [str(v) for v in video_ids]
        table = _rows_table(self.meta, ids, modality, probs, cosines, embeddings, video_labels,
                            str(self.path))
        if agreement is not None:
            table = _with_agreement(table, self.meta, modality, len(ids), agreement,
                                    str(self.path))
        self._buffer.append(table)
        self._buffered_videos += len(ids)
        if self._buffered_videos >= self.flush_videos:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one new part file (atomically)."""
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(self._buffer, promote_options="permissive")
        part = self.path / f"part-{_next_part_number(self.path):06d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(part) as tmp:  # a reader never sees half a part (mode follows umask)
            pq.write_table(table, tmp, compression="zstd")
        self._buffer, self._buffered_videos = [], 0

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True


def _normalise_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    new = json.loads(_canonical_json(meta))  # deep copy, JSON types only
    new.setdefault("format", CACHE_FORMAT)
    new.setdefault("version", CACHE_VERSION)
    new.setdefault("classes", list(CLASSES))
    new.setdefault("num_segments", NUM_SEGMENTS)
    _validate_meta(new, "ScoreCacheWriter meta")
    if new["format"] != CACHE_FORMAT:
        raise CacheError(f"meta format {new['format']!r}, expected {CACHE_FORMAT!r}")
    for entry in new["teachers"].values():
        entry["digest"] = teacher_digest(entry)
    new["digest"] = combined_digest(new["teachers"], new["random_weights"])
    return new


def _next_part_number(path: Path) -> int:
    numbers = [int(p.name.split("-")[1]) for p in path.glob(PART_GLOB)
               if p.name.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def _check_shape(name: str, array: np.ndarray, shape: tuple[int | None, ...], where: str) -> None:
    ok = array.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, array.shape))
    if not ok:
        raise CacheError(f"{where}: {name} has shape {array.shape}, expected {shape}")


def _rows_table(meta: Mapping[str, Any], ids: list[str], modality: str,
                probs: Mapping[str, np.ndarray], cosines: Mapping[str, np.ndarray] | None,
                embeddings: np.ndarray | None, video_labels: np.ndarray | None, where: str):
    """Build the (n*T)-row Arrow table of one append call."""
    import pyarrow as pa

    if modality not in meta["teachers"]:
        raise CacheError(f"{where}: modality {modality!r} is not in the cache meta "
                         f"({sorted(meta['teachers'])})")
    n, T, C = len(ids), NUM_SEGMENTS, NUM_CLASSES
    if len(set(ids)) != n:
        raise CacheError(f"{where}: duplicated video ids in one append")
    expected = _prompt_ids(meta, modality)
    if sorted(probs) != expected:
        raise CacheError(f"{where}: {modality} probs for prompt sets {sorted(probs)}, "
                         f"expected {expected}")
    columns: dict[str, Any] = {
        "video_id": pa.array(np.repeat(np.asarray(ids, dtype=object), T), pa.string()),
        "segment": pa.array(np.tile(np.arange(T, dtype=np.int8), n), pa.int8()),
        "modality": pa.array([modality] * (n * T), pa.string()),
    }
    if cosines is not None and not set(cosines) <= set(expected):
        raise CacheError(f"{where}: {modality} cosines for prompt sets {sorted(cosines)}, "
                         f"expected a subset of {expected}")
    for kind, arrays in (("prob", probs), ("cos", cosines or {})):
        for pid, array in arrays.items():
            array = np.asarray(array, dtype=np.float32)
            _check_shape(f"{kind}_{pid}", array, (n, T, C), where)
            if not np.isfinite(array).all():
                raise CacheError(f"{where}: {kind}_{pid} has non-finite values")
            columns[f"{kind}_{pid}"] = _fixed_list(array.reshape(n * T, C))
    if embeddings is not None:
        emb = np.asarray(embeddings, dtype=np.float32)
        _check_shape("embeddings", emb, (n, T, None), where)
        flat = emb.reshape(n * T, -1)
        offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
        columns["embedding"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.ravel()))
    if video_labels is not None:
        labels = np.asarray(video_labels, dtype=np.uint8)
        _check_shape("video_labels", labels, (n, C), where)
        columns["video_labels"] = _fixed_list(np.repeat(labels, T, axis=0))
    for other in meta["teachers"]:  # same columns in every row: nulls for the other modality
        for pid in _prompt_ids(meta, other):
            for kind in ("prob", "cos"):
                columns.setdefault(f"{kind}_{pid}", _null_list(n * T, pa.float32()))
    columns.setdefault("embedding", _null_list(n * T, pa.float32()))
    return pa.table(columns)


def _with_agreement(table, meta: Mapping[str, Any], modality: str, n: int,
                    agreement: tuple[int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                    where: str):
    """The append's table plus agree_frames and agree_min_/agree_max_<PID> (every prompt set)."""
    import pyarrow as pa

    k, lo, hi = agreement
    expected = _prompt_ids(meta, modality)
    if not isinstance(k, int) or k < 1:
        raise CacheError(f"{where}: agreement needs K >= 1 other frames, got {k!r}")
    for kind, arrays in (("min", lo), ("max", hi)):
        if sorted(arrays) != expected:
            raise CacheError(f"{where}: agree_{kind} for prompt sets {sorted(arrays)}, "
                             f"expected {expected}")
        for pid in expected:
            array = np.asarray(arrays[pid], dtype=np.float32)
            _check_shape(f"agree_{kind}_{pid}", array, (n, NUM_SEGMENTS, NUM_CLASSES), where)
            if not np.isfinite(array).all():
                raise CacheError(f"{where}: agree_{kind}_{pid} has non-finite values")
            table = table.append_column(f"agree_{kind}_{pid}",
                                        _fixed_list(array.reshape(-1, NUM_CLASSES)))
    return table.append_column("agree_frames",
                               pa.array(np.full(table.num_rows, k, np.int8), pa.int8()))


def _fixed_list(matrix: np.ndarray):
    """(R, K) numpy -> Arrow list<K values> column.

    A plain list type, not fixed_size_list: pyarrow cannot read back null fixed-size lists
    from Parquet, and the other modality's rows are null. Lengths are checked on read.
    """
    import pyarrow as pa

    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def _null_list(rows: int, dtype):
    """A list column of `rows` nulls (the other modality's prompt sets)."""
    import pyarrow as pa

    return pa.nulls(rows, pa.list_(dtype))


# ----------------------------------------------------------------------------- readers


def _part_files(path: Path) -> list[Path]:
    return sorted(path.glob(PART_GLOB))


def _read_rows(path: Path, modality: str, wanted: list[str]):
    """All rows of one modality with the `wanted` columns (missing ones are absent)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for part in _part_files(path):
        try:
            names = set(pq.read_schema(part).names)
            cols = ["video_id", "segment", "modality"] + [c for c in wanted if c in names]
            table = pq.read_table(part, columns=cols)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CacheError(f"{part}: unreadable Parquet part ({exc})") from None
        table = table.filter(pc.equal(table["modality"], modality))
        if table.num_rows:
            tables.append(table)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _row_positions(table, video_ids: list[str], where: str) -> np.ndarray:
    """(N, T) index of the row holding each requested video/segment (last write wins)."""
    import pandas as pd

    n = len(video_ids)
    positions = np.full((n, NUM_SEGMENTS), -1, dtype=np.int64)
    if table is not None:
        vids = table["video_id"].to_numpy(zero_copy_only=False)
        segs = table["segment"].to_numpy().astype(np.int64)
        index = pd.Index(video_ids)
        if not index.is_unique:
            raise CacheError(f"{where}: requested video ids are not unique")
        video_rows = index.get_indexer(vids)
        keep = (video_rows >= 0) & (segs >= 0) & (segs < NUM_SEGMENTS)
        positions[video_rows[keep], segs[keep]] = np.nonzero(keep)[0]
    missing = np.argwhere(positions < 0)
    if len(missing):
        first = [f"{video_ids[i]} segment {t}" for i, t in missing[:5]]
        raise CacheError(f"{where}: {len(missing)} requested video segments are not cached, "
                         f"e.g. {first}")
    return positions


def _list_column(table, name: str, positions: np.ndarray, where: str) -> np.ndarray:
    """Gather a list<float> column at `positions` (N, T) -> (N, T, K) float32."""
    import pyarrow as pa

    if name not in table.column_names:
        raise CacheError(f"{where}: no column {name!r} in the cache")
    column = table[name].take(pa.array(positions.ravel()))
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        raise CacheError(f"{where}: column {name!r} is null for {column.null_count} requested rows")
    lengths = _list_lengths(column)
    if len(lengths) and (lengths.min() != lengths.max() or lengths.min() == 0):
        raise CacheError(f"{where}: column {name!r} has rows of different or zero lengths "
                         f"({lengths.min()}..{lengths.max()})")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    n, t = positions.shape
    return values.reshape(n, t, -1)


def _list_lengths(column) -> np.ndarray:
    """Per-row lengths of a list column as numpy."""
    import pyarrow.compute as pc

    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _check_random(meta: Mapping[str, Any], allow_random: bool, where: str) -> None:
    if meta.get("random_weights") and not allow_random:
        raise CacheError(f"{where}: this cache was scored with RANDOM teacher weights "
                         f"(a smoke test); a run accepts it only with --set data.allow_random_teachers=true "
                         f"(allow_random=True from Python), and only if that is what you want")


def cached_video_ids(path: str | os.PathLike, modality: str) -> set[str]:
    """Videos with all T segments cached for `modality` (empty set if no cache yet)."""
    path = Path(path)
    if not (path / META_FILE).exists():
        return set()
    table = _read_rows(path, modality, [])
    if table is None:
        return set()
    import pandas as pd

    frame = pd.DataFrame({"v": table["video_id"].to_numpy(zero_copy_only=False),
                          "s": table["segment"].to_numpy()})
    counts = frame.drop_duplicates().groupby("v")["s"].nunique()
    return set(counts.index[counts == NUM_SEGMENTS])


def load_teacher_scores(path: str | os.PathLike, video_ids: Iterable[str],
                        allow_random: bool = False,
                        prompt_ids: Iterable[str] | None = None) -> TeacherScores:
    """Probabilities of every cached prompt set (or `prompt_ids`), rows ordered as `video_ids`.

    Every modality named in the meta must hold all requested videos x T segments, else
    CacheError naming the missing ones. A random-weights cache is refused unless allow_random.
    """
    path = Path(path)
    meta = read_cache_meta(path)
    _check_random(meta, allow_random, str(path))
    ids = [str(v) for v in video_ids]
    wanted = sorted(prompt_ids) if prompt_ids is not None else None
    probs: dict[str, np.ndarray] = {}
    for modality in sorted(meta["teachers"]):
        pids = [p for p in _prompt_ids(meta, modality) if wanted is None or p in wanted]
        if not pids:
            continue
        where = f"{path} ({modality})"
        table = _read_rows(path, modality, [f"prob_{p}" for p in pids])
        positions = _row_positions(table, ids, where)
        for pid in pids:
            probs[pid] = _list_column(table, f"prob_{pid}", positions, where)  # (N, T, C)
    if wanted is not None and sorted(probs) != wanted:
        raise CacheError(f"{path}: prompt sets {sorted(set(wanted) - set(probs))} not cached")
    info = {"path": str(path), "digest": str(meta["digest"]),
            "random_weights": str(bool(meta["random_weights"])),
            "source": str(meta.get("source", ""))}
    for modality, entry in meta["teachers"].items():
        info[f"{modality}_model"] = str(entry.get("model", ""))
        info[f"{modality}_digest"] = str(entry.get("digest", ""))
    return TeacherScores(video_ids=np.asarray(ids, dtype=object), probs=probs, meta=info)


def load_cached_cosines(path: str | os.PathLike, prompt_id: str, video_ids: Iterable[str],
                        allow_random: bool = False) -> np.ndarray:
    """Raw cosine similarities (N, T, C) of one prompt set (for other scorings)."""
    path = Path(path)
    meta = read_cache_meta(path)
    _check_random(meta, allow_random, str(path))
    modality = prompt_modality(prompt_id)
    ids = [str(v) for v in video_ids]
    where = f"{path} ({modality})"
    table = _read_rows(path, modality, [f"cos_{prompt_id}"])
    return _list_column(table, f"cos_{prompt_id}", _row_positions(table, ids, where), where)


def load_cached_embeddings(path: str | os.PathLike, modality: str, video_ids: Iterable[str],
                           allow_random: bool = False) -> np.ndarray:
    """Segment embeddings (N, T, D) float32 of one modality, rows ordered as `video_ids`."""
    path = Path(path)
    meta = read_cache_meta(path)
    _check_random(meta, allow_random, str(path))
    if modality not in meta["teachers"]:
        raise CacheError(f"{path}: no {modality} teacher in this cache ({sorted(meta['teachers'])})")
    ids = [str(v) for v in video_ids]
    where = f"{path} ({modality})"
    table = _read_rows(path, modality, ["embedding"])
    return _list_column(table, "embedding", _row_positions(table, ids, where), where)


def load_cached_video_labels(path: str | os.PathLike, video_ids: Iterable[str]) -> np.ndarray:
    """The split file's video-level labels (N, C) uint8 stored with the scores."""
    path = Path(path)
    meta = read_cache_meta(path)
    ids = [str(v) for v in video_ids]
    errors = []
    for modality in sorted(meta["teachers"]):
        where = f"{path} ({modality})"
        table = _read_rows(path, modality, ["video_labels"])
        try:
            labels = _list_column(table, "video_labels", _row_positions(table, ids, where), where)
        except CacheError as exc:
            errors.append(str(exc))
            continue
        return labels[:, 0, :].astype(np.uint8)  # (N, C)
    raise CacheError(f"{path}: no stored video labels for the requested videos: {errors}")


def load_frame_agreement(path: str | os.PathLike, prompt_id: str,
                         allow_random: bool = False) -> dict[str, np.ndarray]:
    """Every cached visual segment with frame agreement recorded (`vaplan teach
    --agreement-frames`), as rows: {"middle", "lo", "hi", "labels"} (R, C) float32/uint8 (the
    middle frame's probability, min/max over the K other frames, the video's labels) and
    "frames" (R,) int. CacheError if none was recorded (older or K=0 caches)."""
    path = Path(path)
    meta = read_cache_meta(path)
    _check_random(meta, allow_random, str(path))
    if prompt_id not in meta["teachers"].get("visual", {}).get("prompts", {}):
        raise CacheError(f"{path}: no visual prompt set {prompt_id} in this cache")
    names = {"middle": f"prob_{prompt_id}", "lo": f"agree_min_{prompt_id}",
             "hi": f"agree_max_{prompt_id}", "labels": "video_labels"}
    table = _read_rows(path, "visual", [*names.values(), "agree_frames"])
    if table is not None and "agree_frames" in table.column_names:
        table = table.filter(table["agree_frames"].is_valid())
    if table is None or "agree_frames" not in table.column_names or not table.num_rows:
        raise CacheError(f"{path}: no frame agreement recorded; score videos with "
                         f"`vaplan teach --agreement-frames 2` (or 4) into a new --out folder")
    rows = np.arange(table.num_rows)[None, :]  # (1, R): `_list_column` gathers (N, T) rows
    out = {key: _list_column(table, name, rows, str(path))[0] for key, name in names.items()}
    out["labels"] = out["labels"].astype(np.uint8)
    out["frames"] = table["agree_frames"].to_numpy().astype(np.int64)
    return out
