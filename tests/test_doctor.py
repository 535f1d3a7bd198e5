"""`vaplan doctor`: one line per input a run needs; exit 0 when all are usable, else 2.

A small real layout (compact stores + a Parquet teacher cache for the first 3 train and 2
val/test videos, `data.max_train_videos` / `data.max_eval_videos`), then one thing broken at
a time: a feature file missing from a store, a random-weight cache, a cache lacking a video, an
edited meta.json, an unreachable tracking server or Ray address.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from vaplan.cli import run_app
from vaplan.config import DataConfig, apply_overrides, get_preset
from vaplan.data.features import build_feature_store
from vaplan.data.llp import load_split
from vaplan.doctor import all_ok, check_data, check_experiment
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS, prompt_texts
from vaplan.teachers.cache import ScoreCacheWriter, build_cache_meta

SHAPES = {"vggish": (10, 128), "res152": (80, 2048), "r2plus1d_18": (10, 512)}
SIZES = {"train": 3, "val": 2, "test": 2}


def _ids(split: str, n: int | None = None) -> list[str]:
    return [str(v) for v in load_split(split).video_ids[: n or SIZES[split]]]


def _write_cache(path, ids_by_split, random_weights=False):
    teachers = {"visual": {"model": "test-clip", "checkpoint": "clip.safetensors",
                           "checkpoint_sha256": "ab" * 32,
                           "prompts": {p: prompt_texts(p) for p in VISUAL_PROMPTS}},
                "audio": {"model": "test-clap", "checkpoint": "clap.pt",
                          "checkpoint_sha256": "cd" * 32,
                          "prompts": {p: prompt_texts(p) for p in AUDIO_PROMPTS}}}
    rng = np.random.default_rng(0)
    meta = build_cache_meta(teachers, random_weights, source="test")
    with ScoreCacheWriter(path, meta) as writer:
        for ids in ids_by_split.values():
            for modality, pids in (("visual", VISUAL_PROMPTS), ("audio", AUDIO_PROMPTS)):
                probs = {p: rng.dirichlet(np.ones(25), size=(len(ids), 10)).astype(np.float32)
                         for p in pids}
                writer.append(ids, modality, probs)
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """(stores folder, good cache) for SIZES videos of each split."""
    root = tmp_path_factory.mktemp("doctor")
    rng = np.random.default_rng(0)
    for stream, shape in SHAPES.items():
        (root / "feats" / stream).mkdir(parents=True)
        for split in SIZES:
            for vid in _ids(split):
                np.save(root / "feats" / stream / f"{vid[:11]}.npy",
                        rng.normal(size=shape).astype(np.float16))
    for split in SIZES:
        build_feature_store(root / "feats", _ids(split), root / "stores" / split, progress=False)
    cache = _write_cache(root / "cache", {s: _ids(s) for s in SIZES})
    return root, cache


def _cfg(stores, cache, **extra) -> DataConfig:
    return DataConfig(source="llp", feature_dir=str(stores), teacher_cache=str(cache),
                      max_train_videos=SIZES["train"], max_eval_videos=SIZES["val"], **extra)


def _failures(checks) -> list[str]:
    return [c.line() for c in checks if not c.ok]


def test_a_complete_layout_passes(layout):
    root, cache = layout
    checks = check_data(_cfg(root / "stores", cache))
    assert all_ok(checks), _failures(checks)
    items = [c.item for c in checks]
    assert items[:4] == ["videos", "feature store train", "feature store val", "feature store test"]
    assert "teacher cache visual val" in items and "teacher cache audio test" in items
    assert all("\n" not in c.line() for c in checks)
    digests = next(c for c in checks if c.item == "teacher digests").detail
    assert "abababababab" in digests and "cdcdcdcdcdcd" in digests  # each checkpoint's sha256


def test_missing_feature_file_is_one_fail_line(layout, tmp_path):
    root, cache = layout
    val = _ids("val")
    build_feature_store(root / "feats", val[:1], tmp_path / "stores" / "val", progress=False)
    for split in ("train", "test"):
        (tmp_path / "stores" / split).symlink_to(root / "stores" / split)
    failures = _failures(check_data(_cfg(tmp_path / "stores", cache)))
    assert len(failures) == 1
    assert failures[0].startswith("FAIL  feature store val:") and val[1] in failures[0]
    assert "lacks 1 of 2 videos" in failures[0] and "vaplan build-features" in failures[0]

    (tmp_path / "stores" / "test").unlink()  # no store at all for a split
    failures = _failures(check_data(_cfg(tmp_path / "stores", cache)))
    assert any(line.startswith("FAIL  feature store test:") and "not found" in line
               for line in failures)


def test_random_weight_cache_fails_unless_allowed(layout, tmp_path):
    root, cache = layout
    random_cache = _write_cache(tmp_path / "random", {s: _ids(s) for s in SIZES}, True)
    failures = _failures(check_data(_cfg(root / "stores", random_cache)))
    assert len(failures) == 1 and failures[0].startswith("FAIL  teacher weights:")
    assert str(random_cache) in failures[0] and "data.allow_random_teachers=true" in failures[0]
    checks = check_data(_cfg(root / "stores", random_cache, allow_random_teachers=True))
    assert all_ok(checks)
    assert any(c.status == "warn" and c.item == "teacher weights" for c in checks)


def test_cache_gaps_and_edited_meta(layout, tmp_path):
    root, _ = layout
    ids = {s: _ids(s) for s in SIZES}
    partial = _write_cache(tmp_path / "partial", dict(ids, test=ids["test"][:1]))
    failures = _failures(check_data(_cfg(root / "stores", partial)))
    assert [line.split(":")[0] for line in failures] == ["FAIL  teacher cache audio test",
                                                         "FAIL  teacher cache visual test"]
    assert ids["test"][1] in failures[0]

    meta_file = partial / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["teachers"]["visual"]["checkpoint_sha256"] = "ee" * 32  # edited by hand
    meta_file.write_text(json.dumps(meta))
    failures = _failures(check_data(_cfg(root / "stores", partial)))
    assert any(line.startswith("FAIL  teacher digests:") for line in failures)

    checks = check_data(_cfg(root / "stores", tmp_path / "nowhere"))
    assert [c.item for c in checks if not c.ok] == ["teacher cache"]


def test_cli_exit_status_tracking_and_ray(layout, tmp_path, capsys, monkeypatch):
    root, cache = layout
    sets = ["--set", f"data.feature_dir={root / 'stores'}", "--set", f"data.teacher_cache={cache}",
            "--set", f"data.max_train_videos={SIZES['train']}",
            "--set", f"data.max_eval_videos={SIZES['val']}"]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert run_app(["doctor", "--preset", "llp", *sets, "--tracking-uri", store, "--sweep"]) == 0
    out = capsys.readouterr().out
    assert "OK    tracking store: " in out and "not created yet" in out
    assert "OK    ray: no RAY_ADDRESS" in out and out.strip().endswith("ready")
    assert not (tmp_path / "mlruns").exists()  # doctor creates nothing

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    code = run_app(["doctor", "--preset", "llp", *sets, "--tracking-uri",
                    f"http://127.0.0.1:{port}", "--sweep"])
    out = capsys.readouterr().out
    assert code == 2
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in fails] == ["FAIL  tracking store", "FAIL  ray"]
    assert "2 failed" in out


def test_config_errors_and_sim(capsys):
    assert run_app(["doctor", "--preset", "llp"]) == 2  # the paths are required: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.teacher_cache" in err[0]
    checks = check_experiment(apply_overrides(get_preset("sim-tiny"), []))
    assert all_ok(checks) and checks[0].item == "data"
