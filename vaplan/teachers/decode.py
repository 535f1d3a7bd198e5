"""PyAV decoding of one video into the teachers' inputs.

Visual: the middle frame of each one-second segment (t + 0.5 s), RGB uint8, and optionally K
more frames of the segment for the frame-agreement statistic (`extra_frames`, K even: t + j/(K+1)
s, j = 1..K, never the middle one; docs/teachers.md). A frame is picked by its presentation
timestamp (the frame on screen at that instant), so variable frame rate is handled. Audio: the first audio stream resampled to 48 kHz mono float32, split into ten 1-s
chunks of 48,000 samples.

Length rules (documented in docs/teachers.md):
  * longer than 10 s: only the first 10 s are used;
  * shorter: a segment past the end of the stream repeats the last segment that has content
    (frame and audio); a partial last audio chunk is filled by repeating its own samples
    (as CLAP's `repeatpad` does).
A file that cannot be opened or decoded, has no video stream (when frames are asked for) or no
audio stream (when audio is asked for) raises `DecodeError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaplan.categories import NUM_SEGMENTS

SAMPLE_RATE = 48_000  # CLAP's input rate
SEGMENT_SECONDS = 1.0


class DecodeError(RuntimeError):
    """A video cannot be turned into teacher inputs; the message names the file."""


@dataclass
class DecodedVideo:
    """Teacher inputs of one video (either part None when not requested)."""

    path: str
    frames: np.ndarray | None  # (T, H, W, 3) uint8, RGB
    audio: np.ndarray | None  # (T, SAMPLE_RATE) float32 in [-1, 1]
    duration: float  # seconds of media actually found (≤ 10 s considered)
    extra: np.ndarray | None = None  # (T, K, H, W, 3) uint8: the segment's other frames


MAX_EXTRA_FRAMES = 16


def check_extra_frames(k: int, option: str = "--agreement-frames") -> int:
    """K other frames per segment: 0 (off) or an even number up to MAX_EXTRA_FRAMES (an odd K
    would put one on the middle frame itself); ValueError naming `option` otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_EXTRA_FRAMES or k % 2:
        raise ValueError(f"{option} must be 0 (off) or an even number 2..{MAX_EXTRA_FRAMES} "
                         f"(frames at t + j/(K+1) s, j = 1..K, never the middle one), got {k!r}")
    return k


def segment_offsets(extra_frames: int) -> np.ndarray:
    """Sorted times within a segment (seconds) of the middle frame and the K other frames."""
    k = check_extra_frames(extra_frames)
    return np.sort(np.append(np.arange(1, k + 1) / (k + 1), 0.5)) * SEGMENT_SECONDS


def _require_av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("video decoding needs PyAV: pip install 'av>=14'") from exc
    return av


def _open(path: str):
    av = _require_av()
    if not os.path.isfile(path):
        raise DecodeError(f"{path}: no such video file")
    try:
        return av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: cannot open as a video container ({exc})") from None


def decode_video(path: str | os.PathLike, frames: bool = True, audio: bool = True,
                 num_segments: int = NUM_SEGMENTS, extra_frames: int = 0) -> DecodedVideo:
    """Decode the requested parts of one video (see the module docstring for the rules)."""
    path = str(path)
    out_frames = out_audio = extra = None
    durations = []
    if frames:
        offsets = segment_offsets(extra_frames)  # (K+1,) seconds, the middle among them
        with _open(path) as container:
            picked, dur = _segment_frames(container, path, num_segments, offsets)
            durations.append(dur)
        middle = int(np.flatnonzero(offsets == 0.5 * SEGMENT_SECONDS)[0])
        out_frames = picked[:, middle]  # (T, H, W, 3)
        extra = np.delete(picked, middle, axis=1) if extra_frames else None  # (T, K, H, W, 3)
    if audio:
        with _open(path) as container:
            out_audio, dur = _segment_audio(container, path, num_segments)
            durations.append(dur)
    return DecodedVideo(path, out_frames, out_audio, min(durations) if durations else 0.0,
                        extra)


def _stream_start(stream, container) -> float:
    """Start time in seconds used as 0 for segment boundaries."""
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000
    return 0.0


def _segment_frames(container, path: str, num_segments: int,
                    offsets: np.ndarray) -> tuple[np.ndarray, float]:
    """(T, len(offsets), H, W, 3) uint8 frames on screen at t + offsets (sorted, < 1 s)."""
    av = _require_av()
    if not container.streams.video:
        raise DecodeError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    start = _stream_start(stream, container)
    targets = (np.arange(num_segments)[:, None] * SEGMENT_SECONDS + offsets).ravel()  # sorted
    num_targets = len(targets)
    chosen: list = [None] * num_targets
    previous, previous_time, next_target = None, 0.0, 0
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            time = float(frame.pts * frame.time_base) - start
            # every target before this frame's time was on screen as `previous`
            while next_target < num_targets and targets[next_target] < time:
                chosen[next_target] = previous if previous is not None else frame
                next_target += 1
            if next_target >= num_targets:
                break
            previous, previous_time = frame, time
    except (av.error.FFmpegError, ValueError) as exc:
        raise DecodeError(f"{path}: video stream is corrupt ({exc})") from None
    if previous is None and chosen[0] is None:
        raise DecodeError(f"{path}: video stream has no decodable frames")
    # targets past the end (short video): pad with the last frame on screen
    for t in range(next_target, num_targets):
        chosen[t] = previous
    rgb = [frame.to_ndarray(format="rgb24") for frame in _dedupe(chosen)]
    index = _dedupe_index(chosen)
    duration = min(previous_time + _frame_period(stream), num_segments * SEGMENT_SECONDS)
    picked = np.stack([rgb[i] for i in index])  # (T * len(offsets), H, W, 3)
    return picked.reshape(num_segments, len(offsets), *picked.shape[1:]), duration


def _dedupe(frames: list) -> list:
    """Distinct frame objects in first-seen order (padding repeats are converted once)."""
    seen, unique = set(), []
    for frame in frames:
        if id(frame) not in seen:
            seen.add(id(frame))
            unique.append(frame)
    return unique


def _dedupe_index(frames: list) -> list[int]:
    order: dict[int, int] = {}
    for frame in frames:
        order.setdefault(id(frame), len(order))
    return [order[id(frame)] for frame in frames]


def _frame_period(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


def _segment_audio(container, path: str, num_segments: int) -> tuple[np.ndarray, float]:
    """(T, SAMPLE_RATE) float32 mono chunks of the first audio stream."""
    av = _require_av()
    if not container.streams.audio:
        raise DecodeError(f"{path}: no audio stream (the audio teacher needs one)")
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    wanted = num_segments * SAMPLE_RATE
    pieces, total = [], 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
                total += pieces[-1].size
            if total >= wanted:
                break
        else:
            for out in resampler.resample(None):  # flush the resampler's delay
                pieces.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, ValueError) as exc:
        raise DecodeError(f"{path}: audio stream is corrupt ({exc})") from None
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if samples.size == 0:
        raise DecodeError(f"{path}: audio stream has no decodable samples")
    samples = samples[:wanted]
    return split_audio(samples, num_segments), samples.size / SAMPLE_RATE


def split_audio(samples: np.ndarray, num_segments: int = NUM_SEGMENTS) -> np.ndarray:
    """(S,) mono samples -> (T, SAMPLE_RATE) chunks, padded as the module docstring says."""
    chunks = np.zeros((num_segments, SAMPLE_RATE), dtype=np.float32)
    filled = 0
    for t in range(num_segments):
        piece = samples[t * SAMPLE_RATE:(t + 1) * SAMPLE_RATE]
        if piece.size == 0:
            break
        reps = -(-SAMPLE_RATE // piece.size)  # ceil: repeat a partial chunk to fill 1 s
        chunks[t] = np.tile(piece, reps)[:SAMPLE_RATE]
        filled = t + 1
    chunks[filled:] = chunks[filled - 1]  # past the end: repeat the last chunk with content
    return chunks


VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


def index_video_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Map each video's stem (the LLP filename) to its path in `folder` (recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            found.setdefault(path.stem, path)
    return found
