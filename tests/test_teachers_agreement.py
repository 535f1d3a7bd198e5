"""Frame agreement in `vaplan teach --agreement-frames K` (issue 19 item 3, docs/teachers.md).

Generated videos (vaplan.teachers.synthetic) whose middle frame of each second is dark while
the rest is bright (and the reverse), scored by a deterministic stand-in for CLIP that labels
class 0 (Speech) on bright frames only: a dark middle frame is a middle-only miss the other
frames contradict, a bright middle frame alone is an unconfirmed positive, a uniform video
agrees. Also: the extra frames' times, the cache columns (version 2; older caches load), and
the one-line refusals of bad options.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS  # noqa: E402
from vaplan.teachers.agreement import cache_agreement, summarise_agreement  # noqa: E402
from vaplan.teachers.cache import (CacheError, load_frame_agreement,  # noqa: E402
                                   load_teacher_scores, read_cache_meta)
from vaplan.teachers.decode import check_extra_frames, decode_video, segment_offsets  # noqa: E402
from vaplan.teachers.run import TeachConfig, format_report, run_teach  # noqa: E402
from vaplan.teachers.synthetic import segment_colour, write_test_video  # noqa: E402

T, C = NUM_SEGMENTS, NUM_CLASSES
BRIGHT, DARK = (235, 235, 235), (0, 0, 0)
KINDS = {  # time (s) -> colour; fps 8: the frame on screen at t + 0.5 is the one at t + 0.5
    "uniform": lambda t: BRIGHT,
    "darkmiddle": lambda t: DARK if abs(t % 1 - 0.5) < 1 / 16 else BRIGHT,
    "brightmiddle": lambda t: BRIGHT if abs(t % 1 - 0.5) < 1 / 16 else DARK,
}


class BrightnessTeacher:
    """A stand-in for ClipTeacher: class 0 scores high on a bright frame, nothing on a dark one.

    Eq. 3 probabilities: bright -> Speech e/(e+24) = 0.102, others 0.037; dark -> all 0.04;
    so at τ 0.041 only Speech on a bright frame is a label.
    """

    modality = "visual"
    random_weights = False

    def describe(self, prompts):
        return {"model": "test:brightness", "checkpoint": "", "prompts": prompts}

    def preprocess(self, frames):
        import torch

        return torch.tensor(np.asarray(frames).reshape(len(frames), -1).mean(1) / 255)  # (n,)

    def encode_images(self, brightness):
        bright = brightness.numpy() > 0.5
        return np.stack([bright, ~bright, np.zeros_like(bright)], 1).astype(np.float32)

    def encode_texts(self, texts):
        emb = np.zeros((len(texts), 3), np.float32)
        emb[0, 0], emb[1:, 2] = 1, 1  # class 0 matches a bright frame, the rest nothing
        return emb


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agreement-media")
    for kind, colour in KINDS.items():
        write_test_video(folder / f"{kind}.mp4", duration=10.0, audio=False, colour=colour)
    return folder


def teach(media, tmp_path, kinds, k=2, out="cache", **options):
    split = tmp_path / f"{out}.csv"
    split.write_text("filename\tevent_labels\n" +
                     "".join(f"{kind}\tSpeech,Car\n" for kind in kinds))
    cfg = TeachConfig(videos=str(media), split_csv=str(split), out=str(tmp_path / out),
                      modalities=("visual",), num_workers=1, agreement_frames=k, **options)
    return cfg, run_teach(cfg, teachers={"visual": BrightnessTeacher()}, progress=False)


def test_extra_frames_are_evenly_spaced_and_never_the_middle(tmp_path):
    assert segment_offsets(0).tolist() == [0.5]
    assert np.allclose(segment_offsets(2), [1 / 3, 0.5, 2 / 3])
    assert np.allclose(segment_offsets(4), [0.2, 0.4, 0.5, 0.6, 0.8])
    for bad in (1, 3, -2, 18, 2.0, True):
        with pytest.raises(ValueError, match=r"--agreement-frames must be 0 \(off\) or an even"):
            check_extra_frames(bad)
    path = write_test_video(tmp_path / "quarters.mp4", audio=False,  # a colour per 1/4 s
                            colour=lambda t: segment_colour(int(t * 4) % 10))
    decoded = decode_video(path, audio=False, extra_frames=2)
    assert decoded.frames.shape == (T, 64, 96, 3) and decoded.extra.shape == (T, 2, 64, 96, 3)
    for t in (0, 3, 9):  # t + 1/3 -> quarter 1, t + 0.5 and t + 2/3 -> quarter 2
        expected = [segment_colour((4 * t + q) % 10) for q in (1, 2)]
        seen = [tuple(decoded.extra[t, j].reshape(-1, 3).mean(0).round()) for j in (0, 1)]
        assert np.abs(np.subtract(seen, expected)).max() <= 6, (t, seen, expected)
    plain = decode_video(path, audio=False)
    assert plain.extra is None and np.array_equal(plain.frames, decoded.frames)


def test_dark_middle_frames_disagree_uniform_videos_agree(media, tmp_path):
    cfg, report = teach(media, tmp_path, ["uniform", "darkmiddle", "brightmiddle"])
    assert report.scored["visual"] == 3 and not report.failures
    summary = report.agreement
    # Speech: uniform 10 confirmed positives; darkmiddle 10 misses every other frame sees;
    # brightmiddle 10 positives no other frame confirms. Car (labelled, never seen): 30 misses.
    assert (summary.middle_positive, summary.unconfirmed_positive) == (20, 10)
    assert (summary.middle_negative, summary.middle_only_miss) == (40, 10)
    assert summary.unconfirmed_positive_share == 50 and summary.middle_only_miss_share == 25
    assert summary.frames == 2 and summary.segments == 3 * T
    assert "50.0% of the middle frame's labels unconfirmed" in format_report(report, cfg.out)
    assert json.loads((tmp_path / "cache" / "agreement.json").read_text())[
        "middle_only_miss_share"] == 25
    for kind, positive, unconfirmed, miss in (("uniform", 10, 0, 0), ("darkmiddle", 0, 0, 10),
                                              ("brightmiddle", 10, 10, 0)):
        _, one = teach(media, tmp_path, [kind], out=kind)
        s = one.agreement
        assert (s.middle_positive, s.unconfirmed_positive, s.middle_only_miss) == \
            (positive, unconfirmed, miss), kind
    rows = load_frame_agreement(tmp_path / "darkmiddle", "VP1")
    assert rows["middle"].shape == rows["lo"].shape == (T, C) and (rows["frames"] == 2).all()
    assert (rows["middle"][:, 0] < 0.041).all() and (rows["lo"][:, 0] > 0.1).all()
    # the stored scores let any τ be chosen later: above the bright score nothing is a label
    high = cache_agreement(tmp_path / "cache", "VP1", 0.2)
    assert high.middle_positive == 0 and high.middle_only_miss == 0


def test_older_caches_still_load_and_agreement_is_optional(media, tmp_path):
    _, plain = teach(media, tmp_path, ["darkmiddle"], k=0, out="plain")
    _, extra = teach(media, tmp_path, ["darkmiddle"], k=2, out="extra")
    assert plain.agreement is None and extra.agreement is not None
    before = load_teacher_scores(tmp_path / "plain", ["darkmiddle"]).get("VP1")
    after = load_teacher_scores(tmp_path / "extra", ["darkmiddle"]).get("VP1")
    np.testing.assert_array_equal(before, after)  # the middle frame's scores do not change
    with pytest.raises(CacheError, match="no frame agreement recorded.*--agreement-frames"):
        load_frame_agreement(tmp_path / "plain", "VP1")
    meta_path = tmp_path / "plain" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == 2
    meta_path.write_text(json.dumps(dict(meta, version=1)))  # as a pre-issue-19 cache
    np.testing.assert_array_equal(load_teacher_scores(tmp_path / "plain", ["darkmiddle"])
                                  .get("VP1"), before)
    teach(media, tmp_path, ["darkmiddle", "uniform"], k=2, out="plain")  # resume with K = 2
    assert read_cache_meta(tmp_path / "plain")["version"] == 2
    rows = load_frame_agreement(tmp_path / "plain", "VP1")
    assert len(rows["middle"]) == T  # only the newly scored video has agreement
    meta_path.write_text(json.dumps(dict(meta, version=99)))
    with pytest.raises(CacheError, match="version 99 is newer"):
        read_cache_meta(tmp_path / "plain")


def test_bad_agreement_options_are_refused_before_scoring(media, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import typer
    from vaplan.teachers import run
    from vaplan.teachers.command import teach as teach_command

    for options, words in (({"k": 3}, "--agreement-frames must be 0"),
                           ({"agreement_prompt": "AP1"}, "--agreement-prompt must be one of"),
                           ({"agreement_threshold": 1.5}, "--agreement-threshold must be in")):
        with pytest.raises(ValueError, match=words):
            teach(media, tmp_path, ["uniform"], **options)
    with pytest.raises(ValueError, match="needs the visual teacher"):
        run_teach(TeachConfig(videos=str(media), split_csv="x.csv", out=str(tmp_path / "a"),
                              modalities=("audio",), agreement_frames=2), teachers={})
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="threshold must be in"):
        summarise_agreement(np.zeros((1, C)), np.zeros((1, C)), np.zeros((1, C)),
                            np.zeros((1, C)), 0.0)

    app = typer.Typer()
    app.command()(teach_command)
    app.command("noop")(lambda: None)
    split = tmp_path / "split.csv"
    split.write_text("filename\tevent_labels\nuniform\tSpeech\n")
    args = ["teach", "--videos", str(media), "--split-csv", str(split), "--out",
            str(tmp_path / "cli"), "--modalities", "visual", "--num-workers", "1"]
    monkeypatch.setattr(run, "build_teachers", lambda cfg: {"visual": BrightnessTeacher()})
    refused = CliRunner().invoke(app, args + ["--agreement-frames", "3"])
    assert refused.exit_code == 2 and "--agreement-frames must be 0 (off)" in refused.output
    result = CliRunner().invoke(app, args + ["--agreement-frames", "4"])
    assert result.exit_code == 0, result.output
    assert "frame agreement (VP1, τ 0.041, 4 other frames, 10 segments): 0.0%" in result.output
