"""The LLP feature store: the official one-`.npy`-per-video layout -> one compact folder per split.

Official layout (Tian et al. 2020), <id> = first 11 characters of the LLP filename:
    feats_root/vggish/<id>.npy        (10, 128)   audio
    feats_root/res152/<id>.npy        (80, 2048)  ResNet152 frames at 8 fps
    feats_root/r2plus1d_18/<id>.npy   (10, 512)   R(2+1)D-18 3D

A store is a folder with audio.npy (N,T,128), visual.npy (N,T,2048, the 80 frames pooled 8 -> 1 at
build time; HAN's fc_v is affine so this equals the official fc_v-then-pool), visual_3d.npy
(N,T,512), video_ids.npy (N,) and meta.json. It is written into a temporary sibling folder and
moved into place with os.replace (vaplan.io.atomic_dir), so a reader never sees half a store;
folders and files follow the umask. Loading can memory-map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from vaplan.categories import NUM_SEGMENTS
from vaplan.data.types import Features, SplitData
from vaplan.errors import FeatureFileError
from vaplan.io import atomic_dir

FRAMES_PER_SEGMENT = 8
STREAMS: dict[str, tuple[str, tuple[int, int]]] = {
    # store array name -> (official folder, expected per-video shape)
    "audio": ("vggish", (NUM_SEGMENTS, 128)),
    "visual": ("res152", (NUM_SEGMENTS * FRAMES_PER_SEGMENT, 2048)),
    "visual_3d": ("r2plus1d_18", (NUM_SEGMENTS, 512)),
}
STORE_FORMAT_VERSION = 1


def official_id(video_id: str) -> str:
    """Key of the official feature files: the first 11 characters of the LLP filename."""
    return str(video_id)[:11]


def read_official_feature(feats_root: Path, stream: str, video_id: str) -> np.ndarray:
    """Load and validate one video's `.npy` of one stream -> float32 (rows, dim)."""
    folder, shape = STREAMS[stream]
    path = Path(feats_root) / folder / f"{official_id(video_id)}.npy"
    if not path.is_file():
        raise FeatureFileError(f"video {video_id}: missing {stream} feature file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        raise FeatureFileError(f"video {video_id}: cannot read {path}: {err}") from err
    if array.shape != shape:
        raise FeatureFileError(f"video {video_id}: {path} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise FeatureFileError(f"video {video_id}: {path} contains NaN or inf values")
    return array.astype(np.float32, copy=False)


def pool_frames(frames: np.ndarray) -> np.ndarray:
    """(T*8, D) frames -> (T, D) means of each 8 consecutive frames."""
    return frames.reshape(NUM_SEGMENTS, FRAMES_PER_SEGMENT, -1).mean(axis=1)


def _video_ids(split: SplitData | Iterable[str]) -> list[str]:
    ids = [str(v) for v in (split.video_ids if isinstance(split, SplitData) else split)]
    if not ids:
        raise ValueError("build_feature_store: no video ids given")
    if len(set(ids)) != len(ids):
        raise ValueError("build_feature_store: duplicate video ids in the split")
    return ids


def _write_arrays(feats_root: Path, ids: list[str], folder: Path, dtype: np.dtype,
                  progress: bool) -> None:
    """Fill audio/visual/visual_3d .npy memmaps in `folder`, one video at a time."""
    from rich.progress import track

    outs = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype,
                                            shape=(len(ids), NUM_SEGMENTS, shape[1]))
            for name, (_, shape) in STREAMS.items()}
    for row, video_id in enumerate(track(ids, description="feature store",
                                         disable=not progress)):
        for name, out in outs.items():
            array = read_official_feature(feats_root, name, video_id)
            if name == "visual":
                array = pool_frames(array)  # (80, 2048) -> (10, 2048)
            cast = array.astype(dtype)
            if not np.isfinite(cast).all():
                raise FeatureFileError(f"video {video_id}: {name} features overflow {dtype.name}")
            out[row] = cast
    for out in outs.values():
        out.flush()
    del outs


def build_feature_store(feats_root: str | os.PathLike, split: SplitData | Iterable[str],
                        out_path: str | os.PathLike, dtype: str = "float16",
                        progress: bool = True) -> Path:
    """Validate every official feature file of `split` and write one compact store folder.

    Raises ValueError naming the video id and the path for a missing file, a wrong shape or
    NaN/inf values; nothing is written to `out_path` then.
    """
    ids = _video_ids(split)
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.float16, np.float32):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    out_path = Path(out_path)
    with atomic_dir(out_path) as tmp:  # replaces out_path as a whole; folder mode follows umask
        _write_arrays(Path(feats_root), ids, tmp, np_dtype, progress)
        np.save(tmp / "video_ids.npy", np.array(ids, dtype=str))
        meta = {"format_version": STORE_FORMAT_VERSION, "num_videos": len(ids),
                "dtype": np_dtype.name, "feature_set": "official",
                "visual": "res152 frames pooled 8 -> 1 per segment",
                "source": str(Path(feats_root).resolve())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_path


def _rows_for(stored: np.ndarray, video_ids: Iterable[str], path: Path) -> np.ndarray | None:
    """Row index of each requested id (None when the request is the stored order)."""
    wanted = [str(v) for v in video_ids]
    if len(wanted) == len(stored) and all(a == b for a, b in zip(wanted, stored)):
        return None
    position = {vid: i for i, vid in enumerate(stored)}
    missing = [vid for vid in wanted if vid not in position]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise KeyError(f"feature store {path} lacks {len(missing)} requested video(s): {shown}")
    return np.array([position[vid] for vid in wanted], dtype=np.int64)


def load_feature_store(path: str | os.PathLike, video_ids: Iterable[str] | None = None,
                       mmap: bool = False) -> Features:
    """Load a store written by `build_feature_store`, optionally memory-mapped.

    With `video_ids` the rows come back in that order (a copy unless it is the stored order);
    ids the store lacks raise KeyError naming them.
    """
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"feature store {path} not found (no meta.json)")
    mode = "r" if mmap else None
    try:
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
                  for name in (*STREAMS, "video_ids")}
    except (OSError, ValueError) as err:
        raise FeatureFileError(f"feature store {path} is incomplete or corrupt: {err}") from err
    stored = arrays.pop("video_ids")
    for name, array in arrays.items():
        if array.ndim != 3 or array.shape[:2] != (len(stored), NUM_SEGMENTS):
            raise FeatureFileError(f"feature store {path}: {name}.npy has shape {array.shape}, "
                             f"expected ({len(stored)}, {NUM_SEGMENTS}, D)")
    rows = None if video_ids is None else _rows_for(stored, video_ids, path)
    if rows is not None:
        arrays = {name: np.asarray(array[rows]) for name, array in arrays.items()}
    return Features(arrays["audio"], arrays["visual"], arrays["visual_3d"])


def load_store_video_ids(path: str | os.PathLike) -> np.ndarray:
    """The (N,) video ids of a store, in row order."""
    return np.load(Path(path) / "video_ids.npy", allow_pickle=False)
