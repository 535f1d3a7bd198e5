"""The real-data path as one piece (docs/real-data.md), on a subset of real LLP video ids:

generated videos -> `vaplan teach` (random weights allowed) -> teacher cache; generated per-video
feature files in the official layout -> `vaplan build-features` -> stores; `vaplan doctor`;
`vaplan run --preset llp` (refused without data.allow_random_teachers, then accepted) -> a
registered version -> `vaplan evaluate` scores it on val, equal to the numbers logged.

The subset: the first 6 train and the first 4 val/test rows of the packaged split files
(`data.max_train_videos` / `data.max_eval_videos`, `vaplan teach --limit`,
`vaplan build-features --max-videos`). The teachers are stand-ins with the CLIP/CLAP teacher
interface (a fixed random projection of each frame's mean colour / each chunk's band energies)
so the test stays fast on a CPU; the real open_clip/laion_clap encoders and their checkpoint
files are covered by tests/test_teachers_models.py and tests/test_teacher_checkpoints.py.
Everything else (decoding, scoring, the Parquet cache, the stores, the pipeline, the registry)
is the code a user runs.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

pytest.importorskip("av")
torch = pytest.importorskip("torch")

from vaplan.cli import run_app  # noqa: E402
from vaplan.data.llp import load_split  # noqa: E402
from vaplan.metrics import SCORE_KEYS  # noqa: E402

N_TRAIN, N_EVAL = 6, 4
LLP_FILES = os.path.join(os.path.dirname(__file__), "..", "vaplan", "data", "llp_files")
SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
SHAPES = {"vggish": (10, 128), "res152": (80, 2048), "r2plus1d_18": (10, 512)}
DIM = 32


class StandInTeacher:
    """The teacher interface `vaplan teach` drives (preprocess, encode_*, describe), cheap."""

    random_weights = True

    def __init__(self, modality: str):
        self.modality = modality
        rng = np.random.default_rng(0 if modality == "visual" else 1)
        self.projection = rng.normal(size=(3 if modality == "visual" else 16, DIM))

    def describe(self, prompts):
        return {"model": f"test-stand-in:{self.modality}", "checkpoint": "random-init",
                "checkpoint_sha256": "", "random_weights": True, "precision": "fp32",
                "prompts": prompts}

    def preprocess(self, media):  # frames (n,H,W,3) uint8 | chunks (n,48000) -> (n, 3|16)
        media = np.asarray(media, dtype=np.float32)
        if self.modality == "visual":
            return torch.from_numpy(media.mean(axis=(1, 2)) / 255.0)
        bands = np.abs(np.fft.rfft(media, axis=-1))[:, : 16 * 100].reshape(len(media), 16, 100)
        return torch.from_numpy(np.log1p(bands.mean(axis=-1)).astype(np.float32))

    def _encode(self, inputs):
        return (inputs.numpy() @ self.projection).astype(np.float32)  # (n, DIM)

    encode_images = encode_audio = _encode

    def encode_texts(self, texts):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=DIM)
                         for t in texts]).astype(np.float32)  # (C, DIM)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = run_app([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """Videos and official feature files for the subset's real LLP ids."""
    from vaplan.teachers.synthetic import write_test_video

    root = tmp_path_factory.mktemp("llp")
    ids = {name: [str(v) for v in load_split(name).video_ids[:(N_TRAIN if name == "train"
                                                                 else N_EVAL)]]
           for name in SPLIT_FILES}
    rng = np.random.default_rng(0)
    for stream, shape in SHAPES.items():
        (root / "feats" / stream).mkdir(parents=True)
    (root / "videos").mkdir()
    for number, vid in enumerate(v for split in ids.values() for v in split):
        write_test_video(root / "videos" / f"{vid}.mp4", fps=4, size=(64, 48),
                         tone_hz=200.0 + 60 * number)
        for stream, shape in SHAPES.items():  # float16, as small as the layout allows
            np.save(root / "feats" / stream / f"{vid[:11]}.npy",
                    rng.normal(size=shape).astype(np.float16))
    return root, ids


def test_teach_build_features_run_register_evaluate(real_layout, tmp_path, capsys,
                                                    monkeypatch):
    from vaplan.teachers import run as teach_run
    from vaplan.teachers.cache import cached_video_ids, read_cache_meta

    root, ids = real_layout
    cache, stores = tmp_path / "teacher_cache", tmp_path / "stores"
    monkeypatch.setattr(teach_run, "build_teachers",
                        lambda cfg: {m: StandInTeacher(m) for m in cfg.modalities})

    # 1. vaplan teach, one split file at a time into one cache (the packaged files, --limit)
    for split, name in SPLIT_FILES.items():
        code, out, err = _cli(capsys, "teach", "--videos", root / "videos", "--split-csv",
                              os.path.join(LLP_FILES, name), "--out", cache, "--limit",
                              len(ids[split]), "--allow-random-weights", "--num-workers", 1)
        assert code == 0, err
    assert read_cache_meta(cache)["random_weights"] is True
    everything = {v for split in ids.values() for v in split}
    assert cached_video_ids(cache, "audio") == cached_video_ids(cache, "visual") == everything

    # 2. vaplan build-features per split (the subset of each split file)
    for split in SPLIT_FILES:
        code, out, err = _cli(capsys, "build-features", "--feats", root / "feats", "--split",
                              split, "--out", stores / split, "--max-videos", len(ids[split]))
        assert code == 0, err

    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    data = [f"data.feature_dir={stores}", f"data.teacher_cache={cache}",
            f"data.max_train_videos={N_TRAIN}", f"data.max_eval_videos={N_EVAL}"]
    sets = [a for option in data + ["train.epochs=1", "train.num_threads=1"]
            for a in ("--set", option)]

    # 3. doctor and the pipeline refuse the random-weight cache, each in one line
    code, out, err = _cli(capsys, "doctor", "--preset", "llp", *sets, "--tracking-uri", store)
    assert code == 2
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        next(line for line in out.splitlines() if line.startswith("FAIL  teacher weights"))]
    code, out, err = _cli(capsys, "run", "--preset", "llp", *sets, "--tracking-uri", store)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(cache) in err and "--set data.allow_random_teachers=true" in err
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # refused before any store exists

    # 4. allowed: doctor passes, the pipeline registers a version
    sets += ["--set", "data.allow_random_teachers=true"]
    code, out, err = _cli(capsys, "doctor", "--preset", "llp", *sets, "--tracking-uri", store)
    assert code == 0, out
    assert "WARN  teacher weights: RANDOM" in out and "OK    feature store val" in out
    code, out, err = _cli(capsys, "run", "--preset", "llp", *sets, "--tracking-uri", store,
                          "--quiet")
    assert code == 0, err
    assert "registered vaplan-han v1" in out

    # 5. vaplan evaluate scores the registered version on val: the numbers logged at registration
    code, out, err = _cli(capsys, "evaluate", "--model", "models:/vaplan-han/1", "--split",
                          "val", "--tracking-uri", store)
    assert code == 0, err
    printed = {line.split()[0].split("/")[1]: float(line.split()[1])
               for line in out.splitlines() if line.startswith("val/")}
    assert sorted(printed) == sorted(SCORE_KEYS)
    from pipelines.commands import logged_scores

    logged = logged_scores("vaplan-han", alias=None, version=1, split="val", tracking_uri=store)
    for key in SCORE_KEYS:
        assert printed[key] == pytest.approx(logged[key], abs=0.01), key
