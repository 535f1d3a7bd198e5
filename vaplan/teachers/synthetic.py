"""Small generated videos (colour frames + tones) for tests, smoke runs and benchmarks.

Nothing here is used to score real data; it lets `vaplan teach` and the benchmark run on a
machine without LLP videos.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np



def segment_colour(t: int) -> tuple[int, int, int]:
    """A distinct RGB colour per second, so tests can check which frame was picked."""
    return (int(25 * t) % 256, int(255 - 20 * t) % 256, int(60 + 37 * t) % 256)


def write_test_video(path: str | os.PathLike, duration: float = 10.0, fps: int = 8,
                     size: tuple[int, int] = (96, 64), audio: bool = True,
                     tone_hz: float = 440.0, variable_frame_rate: bool = False,
                     audio_rate: int = 44_100, colour=None) -> Path:
    """Write an MP4 (H.264 video + AAC audio) whose second t shows `segment_colour(t)`.

    colour: optional time (s) -> RGB of the frame shown then (e.g. a dark middle frame).

    variable_frame_rate: frame intervals alternate between 1/(2 fps) and 3/(2 fps), with
    timestamps in milliseconds, so only timestamp-based frame picking gets the colours right.
    """
    import av

    path = Path(path)
    width, height = size
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, 1000)
        video.codec_context.time_base = Fraction(1, 1000)  # millisecond pts (VFR-capable)
        video.options = {"preset": "ultrafast"}
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=audio_rate)
            sound.layout = "mono"
        for time in _frame_times(duration, fps, variable_frame_rate):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = colour(time) if colour else segment_colour(int(time))
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = int(round(time * 1000))
            frame.time_base = Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            _write_tone(container, sound, duration, tone_hz, audio_rate)
    return path


def _frame_times(duration: float, fps: int, variable: bool) -> list[float]:
    times, time, step = [], 0.0, 1.0 / fps
    index = 0
    while time < duration - 1e-9:
        times.append(time)
        time += step * (0.5 if index % 2 == 0 else 1.5) if variable else step
        index += 1
    return times


def _write_tone(container, stream, duration: float, tone_hz: float, rate: int) -> None:
    import av

    total = int(round(duration * rate))
    t = np.arange(total) / rate
    signal = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    chunk = 1024
    for start in range(0, total, chunk):
        piece = signal[start:start + chunk][None, :]  # (1, n) planar mono
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp",
                                           layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_corrupt_video(path: str | os.PathLike, size: int = 4096, seed: int = 0) -> Path:
    """A file with a video extension and random bytes."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_tiny_roberta(folder: str | os.PathLike) -> Path:
    """A 1-layer RoBERTa (model + byte-level tokenizer, no merges) saved with save_pretrained.

    Only a stand-in for laion_clap's `roberta-base` downloads in tests and benchmarks without
    the Hugging Face cache: its text embeddings are meaningless.
    """
    import json

    from transformers import RobertaConfig, RobertaModel
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list(bytes_to_unicode().values())
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = RobertaConfig(vocab_size=len(tokens), hidden_size=768, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaModel(config).save_pretrained(folder)
    return folder


def use_tiny_roberta(folder: str | os.PathLike, patch) -> None:
    """Point laion_clap's two `from_pretrained('roberta-base')` calls at `folder`.

    patch: an object with `setattr(target, name, value)` (e.g. pytest.MonkeyPatch) so the
    caller can undo it. Also relaxes vaplan's roberta-base checks, which the stand-in fails.
    """
    from transformers import RobertaModel, RobertaTokenizer

    from vaplan.teachers import clap_teacher

    for cls in (RobertaModel, RobertaTokenizer):
        original = cls.from_pretrained.__func__
        patch.setattr(cls, "from_pretrained",
                      classmethod(lambda c, name, *a, _o=original, **k: _o(c, str(folder))))
    patch.setattr(clap_teacher, "check_roberta_cache", lambda: None)
    patch.setattr(clap_teacher, "MIN_TOKENIZER_VOCAB", 100)
