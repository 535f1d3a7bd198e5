"""Feature store on a fixture written in exactly the official LLP layout, and its failures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaplan.data.features import build_feature_store, load_feature_store, load_store_video_ids
from vaplan.data.types import SplitData

IDS = ["-0A9suni5YA_20_30", "0BKZGJfNvO8_30_40", "zzQ5Wf2CtbQ_120_130"]  # LLP filenames


def _write_official(root, ids, seed=0):
    """feats/vggish (10,128), feats/res152 (80,2048), feats/r2plus1d_18 (10,512) float32."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for folder, shape in (("vggish", (10, 128)), ("res152", (80, 2048)),
                          ("r2plus1d_18", (10, 512))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for vid in ids:
            array = rng.normal(size=shape).astype(np.float32)
            np.save(root / folder / f"{vid[:11]}.npy", array)
            arrays[folder, vid] = array
    return arrays


@pytest.fixture
def official(tmp_path):
    root = tmp_path / "feats"
    return root, _write_official(root, IDS)


def test_build_and_load_round_trip(tmp_path, official):
    root, arrays = official
    split = SplitData("val", np.array(IDS), np.zeros((3, 25), np.uint8))
    out = build_feature_store(root, split, tmp_path / "store" / "val", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["audio.npy", "meta.json", "video_ids.npy",
                                                      "visual.npy", "visual_3d.npy"]
    assert json.loads((out / "meta.json").read_text())["num_videos"] == 3
    assert list(load_store_video_ids(out)) == IDS
    feats = load_feature_store(out)
    assert feats.audio.shape == (3, 10, 128) and feats.audio.dtype == np.float16
    assert feats.visual.shape == (3, 10, 2048) and feats.visual_3d.shape == (3, 10, 512)
    for row, vid in enumerate(IDS):
        pooled = arrays["res152", vid].reshape(10, 8, 2048).mean(axis=1)  # mean of each 8 frames
        np.testing.assert_allclose(feats.visual[row], pooled, atol=2e-3)
        np.testing.assert_allclose(feats.audio[row], arrays["vggish", vid], atol=4e-3)
        np.testing.assert_allclose(feats.visual_3d[row], arrays["r2plus1d_18", vid], atol=4e-3)
    # Reordered / subset loading, memory-mapped loading.
    sub = load_feature_store(out, video_ids=[IDS[2], IDS[0]])
    np.testing.assert_array_equal(sub.audio, feats.audio[[2, 0]])
    mapped = load_feature_store(out, video_ids=IDS, mmap=True)
    assert isinstance(mapped.visual, np.memmap)
    np.testing.assert_array_equal(mapped.visual, feats.visual)


def test_float32_store_and_rebuild_replaces(tmp_path, official):
    root, arrays = official
    out = tmp_path / "store"
    build_feature_store(root, IDS, out, progress=False)
    build_feature_store(root, IDS[:2], out, dtype="float32", progress=False)
    feats = load_feature_store(out)
    assert len(feats) == 2 and feats.audio.dtype == np.float32
    np.testing.assert_allclose(feats.audio[1], arrays["vggish", IDS[1]], rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["feats", "store"]  # no temp folders left


def test_load_names_missing_video_ids(tmp_path, official):
    root, _ = official
    out = build_feature_store(root, IDS, tmp_path / "store", progress=False)
    with pytest.raises(KeyError, match="nope_0_10"):
        load_feature_store(out, video_ids=[IDS[0], "nope_0_10"])
    with pytest.raises(FileNotFoundError, match="absent"):
        load_feature_store(tmp_path / "absent")


def _expect_failure(tmp_path, root, match_path, match_text):
    with pytest.raises(ValueError) as info:
        build_feature_store(root, IDS, tmp_path / "store", progress=False)
    message = str(info.value)
    assert IDS[1] in message and str(match_path) in message and match_text in message
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["feats"]  # the temp folder is cleaned up


def test_missing_file_names_video_and_path(tmp_path, official):
    root, _ = official
    path = root / "r2plus1d_18" / f"{IDS[1][:11]}.npy"
    path.unlink()
    _expect_failure(tmp_path, root, path, "missing")


def test_wrong_shape_names_video_and_path(tmp_path, official):
    root, _ = official
    path = root / "res152" / f"{IDS[1][:11]}.npy"
    np.save(path, np.zeros((10, 2048), np.float32))
    _expect_failure(tmp_path, root, path, "(80, 2048)")


def test_nan_names_video_and_path(tmp_path, official):
    root, _ = official
    path = root / "vggish" / f"{IDS[1][:11]}.npy"
    bad = np.zeros((10, 128), np.float32)
    bad[3, 7] = np.nan
    np.save(path, bad)
    _expect_failure(tmp_path, root, path, "NaN")


def test_unreadable_file_and_bad_arguments(tmp_path, official):
    root, _ = official
    path = root / "vggish" / f"{IDS[1][:11]}.npy"
    path.write_bytes(b"garbage")
    _expect_failure(tmp_path, root, path, "cannot read")
    with pytest.raises(ValueError, match="dtype"):
        build_feature_store(root, IDS, tmp_path / "s", dtype="int8", progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        build_feature_store(root, IDS + IDS[:1], tmp_path / "s", progress=False)


def test_cli_bad_feature_file_is_one_line(tmp_path, capsys):
    """`vaplan build-features` on a garbage .npy: exit 2, one line naming video and file."""
    from vaplan.cli import run_app
    from vaplan.data.llp import load_split

    ids = list(load_split("val").video_ids[:2])
    root = tmp_path / "feats"
    _write_official(root, ids)
    bad = root / "vggish" / f"{ids[1][:11]}.npy"
    bad.write_bytes(b"garbage")
    out = tmp_path / "store"
    assert run_app(["build-features", "--feats", str(root), "--split", "val", "--max-videos",
                    "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and ids[1] in err, err
    assert not out.exists()
