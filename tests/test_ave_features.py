"""The AVE feature store: official .h5 layout -> `vaplan build-features --dataset ave` -> loader.

The test writes tiny files in the layout of AVE-ECCV18 (dataset key 'avadataset', rows =
annotation indices; the background videos in *_noisy.h5) and builds a store of their first
ROWS rows with --max-videos (docs/ave.md, "Feature store").
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from vaplan.cli import run_app
from vaplan.data.ave import (BACKGROUND, FeatureFileError, load_ave_features, load_split,
                             load_split_with_features)

ROWS = 20  # annotation indices 0..19: 18 train, 1 val, 1 test videos
NOISY = 3


def write_h5(path, array, key="avadataset"):
    with h5py.File(path, "w") as handle:
        handle.create_dataset(key, data=array)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Tiny official-layout files: audio float64 (as the published noisy file), visual float32."""
    root = tmp_path_factory.mktemp("ave_h5")
    rng = np.random.default_rng(0)
    arrays = {"audio": rng.random((ROWS, 10, 128)),
              "visual": rng.random((ROWS, 10, 7, 7, 512), dtype=np.float32),
              "noisy_audio": rng.random((NOISY, 10, 128)),
              "noisy_visual": rng.random((NOISY, 10, 7, 7, 512), dtype=np.float32)}
    paths = {name: write_h5(root / f"{name}.h5", array) for name, array in arrays.items()}
    return root, paths, arrays


def build(capsys, paths, out, *extra, max_videos=ROWS):
    args = ["build-features", "--dataset", "ave", "--audio", str(paths["audio"]),
            "--visual", str(paths["visual"]), "--out", str(out)]
    if max_videos:
        args += ["--max-videos", str(max_videos)]
    code = run_app([*args, *map(str, extra)])
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def store(official, tmp_path_factory):
    _, paths, _ = official
    out = tmp_path_factory.mktemp("ave_store") / "store"
    assert run_app(["build-features", "--dataset", "ave", "--audio", str(paths["audio"]),
                    "--visual", str(paths["visual"]), "--noisy-audio",
                    str(paths["noisy_audio"]), "--noisy-visual", str(paths["noisy_visual"]),
                    "--max-videos", str(ROWS), "--out", str(out)]) == 0
    return out


def test_store_holds_each_split_in_the_official_order(official, store):
    _, _, arrays = official
    sizes = {}
    for split in ("train", "val", "test"):
        features = load_ave_features(store, split)
        order = load_split(split).indices
        np.testing.assert_array_equal(features.indices, order[order < ROWS])
        assert isinstance(features.visual, np.memmap) and features.visual.dtype == np.float16
        assert features.visual.shape == (len(features), 10, 7, 7, 512)
        np.testing.assert_array_equal(features.audio, arrays["audio"][features.indices]
                                      .astype(np.float16))
        np.testing.assert_array_equal(features.visual, arrays["visual"][features.indices]
                                      .astype(np.float16))
        sizes[split] = len(features)
    assert sizes == {"train": 18, "val": 1, "test": 1}
    noisy = load_ave_features(store, "noisy")
    np.testing.assert_array_equal(noisy.indices, np.arange(NOISY))
    np.testing.assert_array_equal(noisy.visual, arrays["noisy_visual"].astype(np.float16))


def test_split_annotations_are_aligned_with_the_stored_rows(store):
    annotations, features = load_split_with_features(store, "train")
    np.testing.assert_array_equal(annotations.indices, features.indices)
    assert annotations.truth.shape == (18, 10) and annotations.truth.max() <= BACKGROUND


def test_store_without_background_videos_says_how_to_add_them(official, tmp_path, capsys):
    _, paths, _ = official
    code, _ = build(capsys, paths, tmp_path / "s")
    assert code == 0
    with pytest.raises(FeatureFileError, match="--noisy-audio and --noisy-visual"):
        load_ave_features(tmp_path / "s", "noisy")
    with pytest.raises(FeatureFileError, match="not found"):
        load_ave_features(tmp_path / "missing", "val")


def bad_file(root, name, array, key="avadataset"):
    return write_h5(root / f"bad_{name}.h5", array, key)


@pytest.mark.parametrize("case", ["shape", "nan", "dtype", "key", "not_h5", "missing", "rows",
                                  "overflow"])
def test_bad_feature_files_are_one_line_errors(official, tmp_path, capsys, case):
    root, paths, arrays = official
    paths = dict(paths)
    max_videos = ROWS
    if case == "shape":
        paths["visual"] = bad_file(tmp_path, case, arrays["visual"].reshape(ROWS, 10, 49, 512))
        expected = r"has shape \(20, 10, 49, 512\), expected \(rows, 10, 7, 7, 512\)"
    elif case == "nan":
        visual = arrays["visual"].copy()
        visual[7, 3, 1, 1, 5] = np.nan
        paths["visual"] = bad_file(tmp_path, case, visual)
        video = load_split("train").video_ids[list(load_split("train").indices).index(7)]
        expected = rf"row 7 \(AVE index 7, video {video}\) has NaN or inf"
    elif case == "dtype":
        paths["audio"] = bad_file(tmp_path, case, (arrays["audio"] * 10).astype(np.int32))
        expected = "dtype int32, expected floating point"
    elif case == "key":
        paths["audio"] = bad_file(tmp_path, case, arrays["audio"], key="features")
        expected = "no dataset 'avadataset' \\(keys: features\\)"
    elif case == "not_h5":
        paths["audio"] = tmp_path / "audio.h5"
        paths["audio"].write_text("not hdf5")
        expected = "not a readable HDF5 file"
    elif case == "missing":
        paths["visual"] = tmp_path / "nowhere.h5"
        expected = "visual feature file not found: .*nowhere.h5"
    elif case == "rows":
        max_videos = 0
        expected = r"has 20 rows, expected 4143 \(use --max-videos"
    else:
        audio = arrays["audio"].copy()
        audio[12, 0, 0] = 1e6
        paths["audio"] = bad_file(tmp_path, case, audio)
        expected = r"row 12 .* overflow float16 \(use --dtype float32\)"
    code, captured = build(capsys, paths, tmp_path / "store", max_videos=max_videos)
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "store").exists()  # nothing half-written


@pytest.mark.parametrize("extra, expected", [
    (("--noisy-audio", "X"), "--noisy-audio and --noisy-visual go together"),
    (("--split", "val"), "takes no --split"),
    (("--dtype", "int8"), "--dtype must be float16 or float32"),
])
def test_bad_options_are_one_line_errors(official, tmp_path, capsys, extra, expected):
    _, paths, _ = official
    code, captured = build(capsys, paths, tmp_path / "store", *extra)
    assert code == 2 and expected in captured.err and len(captured.err.strip().splitlines()) == 1


def test_llp_options_are_refused_mixed_with_ave_ones(tmp_path, capsys):
    code = run_app(["build-features", "--feats", str(tmp_path), "--split", "val", "--audio",
                    str(tmp_path / "a.h5"), "--out", str(tmp_path / "s")])
    assert code == 2 and "takes no --audio" in capsys.readouterr().err
