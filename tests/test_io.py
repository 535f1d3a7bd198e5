"""vaplan.io: atomic writes that follow the umask, and every project writer that uses them.

Under umask 022 files are 0644 and folders 0755; under 027, 0640 and 0750 (tempfile alone
would give 0600/0700, unreadable for other users or workers on shared storage). A failing write
leaves the old file or folder intact and no temporary behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vaplan import io

MODES = {0o022: (0o644, 0o755), 0o027: (0o640, 0o750)}  # umask -> (file, folder)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(params=sorted(MODES), ids=lambda m: f"umask{m:03o}")
def umask(request):
    """Run the test under this umask; the process's umask is restored afterwards."""
    old = os.umask(request.param)
    try:
        yield MODES[request.param]
    finally:
        os.umask(old)


# ------------------------------------------------------------------ the helper itself

def test_failing_writes_leave_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.json"
    io.atomic_write(target, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half of the new cont")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        io.atomic_write(target, 12345)  # neither bytes nor str (bytes(12345) would be zeros)
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_failing_folder_write_leaves_the_old_folder(tmp_path):
    store = tmp_path / "store"
    with io.atomic_dir(store) as tmp:
        (tmp / "a.npy").write_bytes(b"old")
    with pytest.raises(ValueError, match="bad video"):
        with io.atomic_dir(store) as tmp:
            (tmp / "a.npy").write_bytes(b"new")
            raise ValueError("bad video")
    assert [p.name for p in store.iterdir()] == ["a.npy"]
    assert (store / "a.npy").read_bytes() == b"old" and leftovers(tmp_path) == []
    with io.atomic_dir(store) as tmp:  # a successful rewrite replaces the folder as a whole
        (tmp / "b.npy").write_bytes(b"new")
    assert [p.name for p in store.iterdir()] == ["b.npy"] and leftovers(tmp_path) == []


def test_helper_modes_follow_the_umask(tmp_path, umask):
    file_mode, dir_mode = umask
    assert io.current_umask() == 0o777 & ~dir_mode
    assert mode(io.atomic_write(tmp_path / "new" / "a.txt", b"x")) == file_mode
    assert mode(tmp_path / "new") == dir_mode
    with io.atomic_path(tmp_path / "b.bin") as tmp:
        tmp.unlink()
        tmp.write_bytes(b"recreated by the writer")
    assert mode(tmp_path / "b.bin") == file_mode
    with io.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c").write_text("c")
    assert mode(tmp_path / "folder") == dir_mode and mode(tmp_path / "folder/sub/c") == file_mode
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ the project's writers

def test_checkpoint_follows_the_umask_and_a_failed_save_keeps_the_old(tmp_path, umask,
                                                                      monkeypatch):
    from vaplan.config import ModelConfig, TrainConfig
    from vaplan.models import HAN
    from vaplan.train import save_checkpoint

    file_mode, _ = umask
    tiny = ModelConfig(audio_dim=8, visual_dim=16, visual_3d_dim=4, hidden_dim=16, ffn_dim=16)
    path = save_checkpoint(tmp_path / "ckpt" / "han.pt", HAN(tiny), TrainConfig(model=tiny),
                           epochs_completed=1)
    assert mode(path) == file_mode
    before = path.read_bytes()

    def broken_save(obj, target):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("vaplan.train.torch.save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, HAN(tiny), TrainConfig(model=tiny), epochs_completed=1)
    assert path.read_bytes() == before and leftovers(path.parent) == []


def test_label_table_and_json_follow_the_umask(tmp_path, umask):
    from vaplan.io import write_json
    from vaplan.label_table import labels_table, read_labels, write_labels
    from vaplan.config import PLGConfig
    from vaplan.data.types import PseudoLabels

    file_mode, dir_mode = umask
    rng = np.random.default_rng(0)
    ids = np.array(["a_0_10", "b_0_10"])
    seg = rng.integers(0, 2, (2, 10, 25), dtype=np.uint8)
    table = labels_table("plg", {"val": (ids, PseudoLabels(seg, seg))}, {"val": seg.max(1)}, {},
                         PLGConfig())
    parquet = write_labels(tmp_path / "labels" / "plg.parquet", table)
    assert mode(parquet) == file_mode and mode(parquet.parent) == dir_mode
    assert list(read_labels(parquet)["val"][0]) == list(ids)
    assert mode(write_json(tmp_path / "labels" / "manifest.json", {"a": 1})) == file_mode
    assert leftovers(parquet.parent) == []


def test_feature_store_folder_and_files_follow_the_umask(tmp_path, umask):
    from vaplan.data.features import build_feature_store

    file_mode, dir_mode = umask
    ids = ["-0A9suni5YA_20_30", "0BKZGJfNvO8_30_40"]
    rng = np.random.default_rng(1)
    for folder, shape in (("vggish", (10, 128)), ("res152", (80, 2048)),
                          ("r2plus1d_18", (10, 512))):
        (tmp_path / "feats" / folder).mkdir(parents=True)
        for vid in ids:
            np.save(tmp_path / "feats" / folder / f"{vid[:11]}.npy",
                    rng.normal(size=shape).astype(np.float32))
    store = build_feature_store(tmp_path / "feats", ids, tmp_path / "stores" / "val",
                                progress=False)
    assert mode(store) == dir_mode and mode(store.parent) == dir_mode
    files = sorted(store.iterdir())
    assert len(files) == 5 and all(mode(f) == file_mode for f in files), \
        {f.name: oct(mode(f)) for f in files}
    assert leftovers(store.parent) == []


def test_teacher_cache_parts_follow_the_umask(tmp_path, umask):
    from vaplan.prompts import prompt_texts
    from vaplan.teachers.cache import ScoreCacheWriter, build_cache_meta, cached_video_ids

    file_mode, dir_mode = umask
    meta = build_cache_meta({"visual": {"model": "clip-test", "checkpoint_sha256": "abc",
                                        "prompts": {"VP1": prompt_texts("VP1")}}},
                            random_weights=False, source="test")
    rng = np.random.default_rng(2)
    with ScoreCacheWriter(tmp_path / "cache", meta) as writer:
        writer.append(["a_0_10", "b_0_10"], "visual",
                      {"VP1": rng.dirichlet(np.ones(25), (2, 10)).astype(np.float32)})
    cache = tmp_path / "cache"
    parts = sorted(cache.glob("part-*.parquet"))
    assert len(parts) == 1 and mode(parts[0]) == file_mode
    assert mode(cache / "meta.json") == file_mode and mode(cache) == dir_mode
    assert leftovers(cache) == [] and cached_video_ids(cache, "visual") == {"a_0_10", "b_0_10"}


def test_cli_text_and_sweep_state_follow_the_umask(tmp_path, umask):
    from vaplan.sweeps import STATE_FILE, SweepState
    from vaplan.cli import _write_text

    file_mode, _ = umask
    _write_text(tmp_path / "out" / "table.txt", "row\n")
    assert mode(tmp_path / "out" / "table.txt") == file_mode
    state = SweepState(job="tune_plg", name="s", parent_run_id="r", experiment_id="1",
                       tracking_uri="sqlite:///x.db", base={}, space={}, num_samples=1)
    state.save(tmp_path / "sweep")
    assert mode(tmp_path / "sweep" / STATE_FILE) == file_mode
    assert SweepState.load(tmp_path / "sweep") == state and leftovers(tmp_path / "sweep") == []
