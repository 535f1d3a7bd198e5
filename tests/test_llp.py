"""The LLP annotation loader: shapes, the real files, and strict errors for malformed rows."""

import numpy as np
import pytest

from vaplan.categories import CLASSES, NUM_CLASSES
from vaplan.data import llp


def test_real_splits_have_published_sizes():
    sizes = {name: len(llp.load_split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 10000, "val": 649, "test": 1200}
    val = llp.load_split("val")
    assert val.video_labels.shape == (649, NUM_CLASSES)
    assert val.gt_audio.shape == val.gt_visual.shape == (649, 10, NUM_CLASSES)
    assert llp.load_split("train").gt_audio is None


def test_segment_truth_matches_rows_offset_exclusive():
    val = llp.load_split("val")
    # first audio row of the file for a val video: check its span exactly
    rows = [r for r in llp.parse_event_rows(llp.LLP_DIR / "AVVP_eval_audio.csv",
                                            llp.KNOWN_EMPTY_EVENTS)]
    index = {vid: i for i, vid in enumerate(val.video_ids)}
    row = next(r for r in rows if r.filename in index and r.offset - r.onset < 10)
    truth = val.gt_audio[index[row.filename], :, row.class_index]
    assert truth[row.onset:row.offset].all()


def test_load_split_returns_independent_copies():
    a = llp.load_split("val")
    a.video_labels[:] = 0
    assert llp.load_split("val").video_labels.sum() > 0


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown LLP split"):
        llp.load_split("dev")


def test_rows_outside_splits_are_listed_not_lost():
    assert len(llp.events_outside_splits("audio")) > 0
    assert all(isinstance(r.line, int) for r in llp.events_outside_splits("visual"))


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, message", [
    ("vid_a_0_10\tSpeech,NotAClass\n", "line 2.*|:2: unknown class 'NotAClass'"),
    ("vid_a_0_10\tSpeech\nvid_a_0_10\tDog\n", ":3: duplicated filename 'vid_a_0_10'"),
    ("vid_a_0_10\n", ":2: expected 2 non-empty"),
])
def test_weak_label_errors_name_file_and_line(tmp_path, body, message):
    path = _write(tmp_path, "weak.csv", "filename\tevent_labels\n" + body)
    with pytest.raises(llp.AnnotationError, match=message.split("|")[-1]) as err:
        llp.parse_weak_labels(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("row, message", [
    ("v_0_10\t3\t11\tDog", ":2: onset 3 / offset 11"),
    ("v_0_10\t5\t5\tDog", ":2: onset 5 / offset 5"),
    ("v_0_10\t-1\t4\tDog", ":2: onset -1"),
    ("v_0_10\t1.5\t4\tDog", ":2: onset/offset must be whole seconds"),
    ("v_0_10\t1\t4\tUnicorn", ":2: unknown class 'Unicorn'"),
    ("v_0_10\t1\t4", ":2: expected 4 non-empty"),
])
def test_event_row_errors(tmp_path, row, message):
    path = _write(tmp_path, "events.csv", "filename\tonset\toffset\tevent_labels\n" + row + "\n")
    with pytest.raises(llp.AnnotationError, match=message):
        llp.parse_event_rows(path)


def test_bad_header(tmp_path):
    path = _write(tmp_path, "weak.csv", "file\tlabels\nx\tDog\n")
    with pytest.raises(llp.AnnotationError, match=":1: header"):
        llp.parse_weak_labels(path)


def test_known_empty_events_are_exactly_the_published_ones():
    rows = llp.parse_event_rows(llp.LLP_DIR / "AVVP_eval_audio.csv", llp.KNOWN_EMPTY_EVENTS)
    empty = [r for r in rows if r.onset >= r.offset]
    assert len(empty) == len(llp.KNOWN_EMPTY_EVENTS) == 6
    with pytest.raises(llp.AnnotationError):
        llp.parse_event_rows(llp.LLP_DIR / "AVVP_eval_audio.csv")  # not allowed without the list


def test_classes_defined_once_and_in_file_order():
    assert len(CLASSES) == 25 and CLASSES[0] == "Speech" and CLASSES[-1] == "Clapping"
    assert len(set(CLASSES)) == 25
