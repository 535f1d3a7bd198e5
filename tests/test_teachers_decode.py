"""PyAV decoding of generated videos: middle frames, 48 kHz chunks, odd and broken files."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from vaplan.teachers.decode import (SAMPLE_RATE, DecodeError, decode_video,  # noqa: E402
                                    index_video_files, split_audio)
from vaplan.teachers.synthetic import (segment_colour, write_corrupt_video,  # noqa: E402
                                       write_test_video)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "full": write_test_video(folder / "full_0_10.mp4"),
        "short": write_test_video(folder / "short_0_7.mp4", duration=7.0),
        "long": write_test_video(folder / "long_0_12.mp4", duration=12.5, tone_hz=880.0),
        "vfr": write_test_video(folder / "vfr_0_10.mp4", variable_frame_rate=True),
        "silent": write_test_video(folder / "silent_0_10.mp4", audio=False),
        "corrupt": write_corrupt_video(folder / "corrupt_0_10.mp4"),
    }


def _colours(frames):
    return np.asarray([frames[t, 4, 4].astype(int) for t in range(len(frames))])


def _expected(seconds):
    return np.asarray([segment_colour(s) for s in seconds])


@pytest.mark.parametrize("name", ["full", "long", "vfr"])
def test_middle_frame_of_each_segment(videos, name):
    decoded = decode_video(videos[name])
    assert decoded.frames.shape == (10, 64, 96, 3) and decoded.frames.dtype == np.uint8
    assert decoded.audio.shape == (10, SAMPLE_RATE) and decoded.audio.dtype == np.float32
    # lossy H.264: colours within a few levels of the colour of that second
    assert np.abs(_colours(decoded.frames) - _expected(range(10))).max() <= 8
    assert np.all(np.abs(decoded.audio).max(axis=1) > 0.1)  # every chunk holds the tone


def test_short_video_repeats_the_last_segment(videos):
    decoded = decode_video(videos["short"])
    assert decoded.frames.shape[0] == 10 and decoded.audio.shape == (10, SAMPLE_RATE)
    assert np.abs(_colours(decoded.frames) - _expected([0, 1, 2, 3, 4, 5, 6, 6, 6, 6])).max() <= 8
    # AAC priming adds a few ms, so chunk 7 may hold a sliver; 8 and 9 repeat the last one
    np.testing.assert_array_equal(decoded.audio[9], decoded.audio[8])
    assert decoded.duration == pytest.approx(7.0, abs=0.1)


def test_no_audio_stream_is_an_error_naming_the_file(videos):
    with pytest.raises(DecodeError, match="silent_0_10.mp4.*no audio stream"):
        decode_video(videos["silent"])
    assert decode_video(videos["silent"], audio=False).frames.shape[0] == 10


def test_corrupt_and_missing_files_are_errors_naming_the_file(videos, tmp_path):
    with pytest.raises(DecodeError, match="corrupt_0_10.mp4"):
        decode_video(videos["corrupt"])
    with pytest.raises(DecodeError, match="nowhere.mp4: no such video file"):
        decode_video(tmp_path / "nowhere.mp4")


def test_split_audio_pads_partial_and_missing_chunks():
    samples = np.arange(int(2.5 * SAMPLE_RATE), dtype=np.float32)
    chunks = split_audio(samples)
    np.testing.assert_array_equal(chunks[0], samples[:SAMPLE_RATE])
    half = samples[2 * SAMPLE_RATE:]
    np.testing.assert_array_equal(chunks[2], np.concatenate([half, half]))  # repeat-padded
    np.testing.assert_array_equal(chunks[9], chunks[2])  # past the end: last chunk repeated


def test_index_video_files(videos):
    found = index_video_files(videos["full"].parent)
    assert found["full_0_10"] == videos["full"] and "corrupt_0_10" in found
