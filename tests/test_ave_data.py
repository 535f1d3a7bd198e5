"""The packaged AVE annotations and their strict loader (vaplan.data.ave)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vaplan.data import ave
from vaplan.data.ave import AVE_CLASSES, BACKGROUND, AnnotationError, load_split
from vaplan.errors import UserError


def test_official_split_sizes_and_shapes():
    sizes = {"train": 3339, "val": 402, "test": 402}
    seen = []
    for split, size in sizes.items():
        data = load_split(split)
        assert len(data) == size
        assert data.truth.shape == (size, 10) and data.truth.dtype == np.int64
        assert data.video_label.shape == (size,)
        assert data.truth.min() >= 0 and data.truth.max() <= BACKGROUND
        # every non-background segment carries the video's event class
        events = data.truth != BACKGROUND
        assert np.all(data.truth[events] == np.broadcast_to(data.video_label[:, None],
                                                             data.truth.shape)[events])
        seen.extend(data.indices.tolist())
    assert sorted(seen) == list(range(ave.NUM_AVE_VIDEOS))  # disjoint and complete


def test_rows_become_segment_truth():
    annotations = ave._load_all(str(ave.AVE_DIR))[0]
    assert len(AVE_CLASSES) == 28 and BACKGROUND == 28
    # row 1: Church bell, MH3m4AwEcRY, start 6, end 8 -> segments 6 and 7
    assert annotations.video_ids[1] == "MH3m4AwEcRY"
    expected = np.full(10, BACKGROUND)
    expected[6:8] = AVE_CLASSES.index("Church bell")
    np.testing.assert_array_equal(annotations.truth[1], expected)
    # row 26: the published empty event -> all background, label kept
    assert np.all(annotations.truth[26] == BACKGROUND)
    assert annotations.video_label[26] == AVE_CLASSES.index("Church bell")
    # a class name with commas survives the CSV quoting
    assert np.sum(annotations.video_label == AVE_CLASSES.index("Male speech, man speaking")) > 0
    assert set(np.unique(annotations.video_label)) == set(range(28))


@pytest.fixture
def copy_dir(tmp_path):
    target = tmp_path / "ave"
    shutil.copytree(ave.AVE_DIR, target)
    return target


def _edit_line(path, line_number, new_text):
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line_number - 1] = new_text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("line, text, expected", [
    (3, "1,Church bel,MH3m4AwEcRY,good,6,8", "unknown category 'Church bel'"),
    (3, "1,Church bell,MH3m4AwEcRY,good,8,6", "start 8 / end 6"),
    (3, "1,Church bell,MH3m4AwEcRY,good,6,11", "start 6 / end 11"),
    (3, "1,Church bell,MH3m4AwEcRY,good,6,6", "start 6 / end 6"),
    (3, "1,Church bell,MH3m4AwEcRY,good,six,8", "start must be a whole number"),
    (3, "5,Church bell,MH3m4AwEcRY,good,6,8", "index 5 out of sequence"),
    (3, "1,Church bell,MH3m4AwEcRY,bad,6,8", "quality 'bad'"),
    (3, "1,Church bell,MH3m4,good,6,8", "not an 11-character YouTube id"),
    (3, "1,Church bell,MH3m4AwEcRY,good,6", "expected 6 non-empty columns"),
    (1, "index,category,video,quality,start,end", "header must be"),
])
def test_malformed_annotation_row_names_file_and_line(copy_dir, line, text, expected):
    path = copy_dir / "annotations.csv"
    _edit_line(path, line, text)
    with pytest.raises(AnnotationError) as raised:
        load_split("test", copy_dir)
    message = str(raised.value)
    assert f"{path}:{line}:" in message and expected in message
    assert isinstance(raised.value, UserError)  # one line, exit 2 in every CLI


def test_malformed_split_files_name_file_and_line(copy_dir):
    order = copy_dir / "val_order.txt"
    first = order.read_text().splitlines()[0]
    _edit_line(order, 2, first)
    with pytest.raises(AnnotationError, match=rf"{order}:2: index {first} repeated"):
        load_split("val", copy_dir)

    shutil.copy(ave.AVE_DIR / "val_order.txt", order)
    test_first = (copy_dir / "test_order.txt").read_text().splitlines()[0]
    _edit_line(order, 3, test_first)
    with pytest.raises(AnnotationError, match=r"test_order.txt:1: index \d+ is also in the val"):
        load_split("train", copy_dir)

    _edit_line(order, 3, "4143")
    with pytest.raises(AnnotationError, match=rf"{order}:3: index 4143 outside 0..4142"):
        load_split("val", copy_dir)

    shutil.copy(ave.AVE_DIR / "val_order.txt", order)
    (copy_dir / "test_order.txt").unlink()
    with pytest.raises(AnnotationError, match="AVE split file not found"):
        load_split("test", copy_dir)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown AVE split 'dev'"):
        load_split("dev")


def test_ave_segment_accuracy_pools_segments_and_takes_argmax():
    from vaplan.metrics import ave_segment_accuracy

    truth = np.array([[28, 3, 3, 28], [5, 5, 5, 5]])
    pred = np.array([[28, 3, 28, 28], [5, 5, 5, 1]])  # 6 of 8 right
    assert ave_segment_accuracy(pred, truth) == pytest.approx(75.0)
    scores = np.zeros((2, 4, 29))
    scores[np.arange(2)[:, None], np.arange(4)[None, :], pred] = 1.0
    assert ave_segment_accuracy(scores, truth) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="must both be"):
        ave_segment_accuracy(pred[:, :3], truth)
    # on the real test truth, predicting background everywhere scores the background share
    test = load_split("test")
    background = np.full_like(test.truth, BACKGROUND)
    assert ave_segment_accuracy(background, test.truth) == pytest.approx(
        100 * np.mean(test.truth == BACKGROUND))
