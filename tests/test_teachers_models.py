"""Real teacher code paths, offline: open_clip ViT-B-32 (random init) and laion_clap HTSAT-tiny.

laion_clap downloads RoBERTa (weights + tokenizer) from the Hub; only those two downloads are
replaced by tiny local stand-ins written here (a 1-layer RobertaModel saved with
save_pretrained, a byte-level vocab with no merges), so laion_clap's own audio preprocessing
(int16 quantisation, repeatpad to 10 s, mel front end) and the HTSAT encoder really run.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network (set before transformers loads)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("av")
pytest.importorskip("open_clip")
pytest.importorskip("laion_clap")

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS  # noqa: E402
from vaplan.config import PLGConfig  # noqa: E402
from vaplan.teachers import clap_teacher  # noqa: E402
from vaplan.teachers.cache import (cached_video_ids, load_cached_video_labels,  # noqa: E402
                                   load_teacher_scores, read_cache_meta)
from vaplan.teachers.common import TeacherUnavailable  # noqa: E402
from vaplan.teachers.run import TeachConfig, format_report, run_teach  # noqa: E402
from vaplan.teachers.synthetic import write_corrupt_video, write_test_video  # noqa: E402

T, C = NUM_SEGMENTS, NUM_CLASSES
CHECK_ROBERTA_CACHE = clap_teacher.check_roberta_cache  # before the stand-in replaces it
IDS = ["aaaaaaaaaaa_0_10", "bbbbbbbbbbb_0_10", "ccccccccccc_0_10", "ddddddddddd_0_10",
       "eeeeeeeeeee_0_10"]


@pytest.fixture(scope="module")
def teachers(roberta_stand_in):
    from vaplan.teachers.clap_teacher import ClapTeacher
    from vaplan.teachers.clip_teacher import ClipTeacher

    clip = ClipTeacher("ViT-B-32", pretrained=None, device="cpu", allow_random=True)
    clap = ClapTeacher(None, device="cpu", allow_random=True)
    return {"visual": clip, "audio": clap}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Three good videos (one 7 s long), one without audio, one corrupt; one listed id has no file."""
    folder = tmp_path_factory.mktemp("media")
    write_test_video(folder / f"{IDS[0]}.mp4", tone_hz=300.0)
    write_test_video(folder / f"{IDS[1]}.mp4", duration=7.0, tone_hz=600.0)
    write_test_video(folder / f"{IDS[2]}.mp4", audio=False)
    write_corrupt_video(folder / f"{IDS[3]}.mp4")
    split = folder / "split.csv"
    rows = ["filename\tevent_labels", f"{IDS[0]}\tSpeech,Dog", f"{IDS[1]}\tCar",
            f"{IDS[2]}\tCello", f"{IDS[3]}\tBanjo", f"{IDS[4]}\tCat"]
    split.write_text("\n".join(rows) + "\n")
    return folder, split


def test_teachers_embed_through_the_real_paths(teachers):
    frames = np.zeros((2, 64, 96, 3), dtype=np.uint8)
    frames[1] = 200
    pixels = teachers["visual"].preprocess(frames)
    assert tuple(pixels.shape) == (2, 3, 224, 224)
    image_emb = teachers["visual"].encode_images(pixels)
    text_emb = teachers["visual"].encode_texts(["This photo contains the dog"] * 3)
    assert image_emb.shape == (2, 512) and text_emb.shape == (3, 512)
    audio = np.sin(np.linspace(0, 2000, 48_000, dtype=np.float32))[None].repeat(2, 0) * 0.2
    audio_emb = teachers["audio"].encode_audio(teachers["audio"].preprocess(audio))
    assert audio_emb.shape == (2, 512) and np.isfinite(audio_emb).all()
    assert teachers["audio"].encode_texts(["This sound contains the dog"]).shape == (1, 512)


def test_teach_resumes_reports_failures_and_feeds_plg(teachers, media, tmp_path):
    folder, split = media
    out = tmp_path / "cache"
    cfg = TeachConfig(videos=str(folder), split_csv=str(split), out=str(out),
                      allow_random_weights=True, batch_videos=1, num_workers=2)

    calls = {"n": 0}
    real = teachers["visual"].encode_images

    def fail_on_second(pixels):  # the run dies while encoding the second batch
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(pixels)

    interrupted = dict(teachers, visual=_Proxy(teachers["visual"], encode_images=fail_on_second))
    with pytest.raises(KeyboardInterrupt):
        run_teach(cfg, teachers=interrupted, progress=False)
    assert cached_video_ids(out, "visual") == {IDS[0]}  # what was written before survives
    assert cached_video_ids(out, "audio") == {IDS[0], IDS[1]}

    report = run_teach(cfg, teachers=teachers, progress=False)
    assert report.skipped["visual"] == 1 and report.skipped["audio"] == 2
    assert cached_video_ids(out, "visual") == set(IDS[:3])
    assert cached_video_ids(out, "audio") == set(IDS[:2])
    failed = {vid for vid, _ in report.failures}
    assert failed == {IDS[2], IDS[3], IDS[4]}
    text = format_report(report, str(out))
    assert "no audio stream" in text and IDS[3] in text and "no video file" in text

    meta = read_cache_meta(out)
    assert meta["random_weights"] is True and meta["teachers"]["visual"]["random_weights"]
    assert {m: meta["teachers"][m]["precision"] for m in ("audio", "visual")} == \
        {"audio": "fp32", "visual": "fp32"}  # the defaults, recorded
    with pytest.raises(ValueError, match="RANDOM"):
        load_teacher_scores(out, IDS[:2])
    scores = load_teacher_scores(out, IDS[:2], allow_random=True)
    for pid in ("VP1", "VP2", "VP3", "VP4", "AP1", "AP2"):
        probs = scores.get(pid)
        assert probs.shape == (2, T, C)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-4)
        assert np.abs(probs - 1 / C).max() < 0.04  # no logit scale: all close to 1/25
    labels = load_cached_video_labels(out, IDS[:2])
    assert labels[0].sum() == 2 and labels[1].sum() == 1
    from vaplan.pseudo_labels import generate_pseudo_labels

    pseudo = generate_pseudo_labels(scores, labels, PLGConfig())
    assert pseudo.seg_visual.shape == (2, T, C)
    assert (pseudo.seg_visual <= labels[:, None, :]).all()


class _Proxy:
    """A teacher with one method replaced (to simulate a crash mid-run)."""

    def __init__(self, inner, **overrides):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._inner, name)

    def __setattr__(self, name, value):  # e.g. the text-embedding memo lands on the teacher
        setattr(self._inner, name, value)


def test_teach_cli_visual_only(media, teachers, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import typer
    from vaplan.teachers import run
    from vaplan.teachers.command import teach

    app = typer.Typer()
    app.command()(teach)
    app.command("noop")(lambda: None)
    folder, split = media
    args = ["teach", "--videos", str(folder), "--split-csv", str(split), "--out",
            str(tmp_path / "c"), "--modalities", "visual", "--clip-pretrained", "",
            "--limit", "2", "--num-workers", "1"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "no CLIP weights" in refused.output
    # the success path reuses the already-built random ViT-B-32 (building one takes seconds)
    monkeypatch.setattr(run, "build_teachers", lambda cfg: {"visual": teachers["visual"]})
    result = CliRunner().invoke(app, args + ["--allow-random-weights"])
    assert result.exit_code == 0, result.output
    assert "videos/s" in result.output and "no failures" in result.output
    assert cached_video_ids(tmp_path / "c", "visual") == set(IDS[:2])


def test_missing_checkpoints_say_what_to_download(tmp_path):
    from vaplan.teachers.clap_teacher import ClapTeacher
    from vaplan.teachers.clip_teacher import ClipTeacher

    with pytest.raises(TeacherUnavailable, match="630k-audioset-best.pt"):
        ClapTeacher(None)
    with pytest.raises(TeacherUnavailable, match="CLIP checkpoint not found"):
        ClipTeacher(checkpoint=str(tmp_path / "missing.pt"))


def test_roberta_missing_offline_is_fast_and_clear(monkeypatch):
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(TeacherUnavailable, match="roberta-base"):
        CHECK_ROBERTA_CACHE()


def test_teachers_default_to_fp32_and_precision_enters_the_digest(teachers):
    """fp32 on every device unless fp16/bf16 is asked for (laion_clap's and open_clip's own
    precision); the precision is part of the teacher's cache identity."""
    import inspect

    from vaplan.teachers.cache import teacher_digest
    from vaplan.teachers.clap_teacher import ClapTeacher
    from vaplan.teachers.clip_teacher import ClipTeacher
    from vaplan.teachers.command import teach
    from vaplan.teachers.common import check_precision

    for factory in (ClapTeacher, ClipTeacher, TeachConfig, teach):
        assert inspect.signature(factory).parameters["precision"].default == "fp32", factory
    assert teachers["audio"].precision == teachers["visual"].precision == "fp32"
    entry = teachers["audio"].describe({"AP2": ["a"] * C})
    assert entry["precision"] == "fp32"
    assert teacher_digest(entry) != teacher_digest(dict(entry, precision="bf16"))
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="'auto' is gone.*fp16 or bf16"):
        check_precision("auto")
    with pytest.raises(ValueError, match="not one of"):
        check_precision("fp8")
    from typer.testing import CliRunner

    import typer

    app = typer.Typer()
    app.command()(teach)
    app.command("noop")(lambda: None)
    refused = CliRunner().invoke(app, ["teach", "--videos", ".", "--split-csv", "x.csv",
                                       "--out", "c", "--precision", "auto"])
    assert refused.exit_code == 2 and "'auto' is gone" in refused.output
