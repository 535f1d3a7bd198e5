"""Pseudo-label tables as Parquet, and the summaries of a label change (flip rates, the
per-modality choice as metrics and tags). Written atomically (vaplan.io: temporary sibling +
os.replace, modes follow the umask).

Pseudo-label table (one row per video x segment x modality; schema in docs/pipelines.md):

    split string, video_id string, segment int8, modality string ("audio" | "visual"),
    stage string ("plg" | "pld"), prompt string, labels list<string> (class names of the
    segment's label set), video_labels list<string> (the weak video label y),
    teacher_prob fixed_size_list<float32>[25] (Eq. 3 probabilities of the prompt set)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vaplan.categories import CLASS_INDEX, CLASSES, NUM_CLASSES
from vaplan.config import PLGConfig
from vaplan.data.types import PseudoLabels, SplitData, TeacherScores
from vaplan.io import atomic_path

MODALITIES = ("audio", "visual")
LabelSplits = dict[str, tuple[np.ndarray, PseudoLabels]]  # split -> (video_ids (N,), labels)
LABEL_SCHEMA = pa.schema([
    ("split", pa.string()), ("video_id", pa.string()), ("segment", pa.int8()),
    ("modality", pa.string()), ("stage", pa.string()), ("prompt", pa.string()),
    ("labels", pa.list_(pa.string())), ("video_labels", pa.list_(pa.string())),
    ("teacher_prob", pa.list_(pa.float32(), NUM_CLASSES)),
])


def _name_lists(mask: np.ndarray) -> pa.ListArray:
    """(R, C) {0,1} -> list<string> of the class names set in each row (vectorised)."""
    rows, cols = np.nonzero(mask)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=mask.shape[0]))])
    values = pa.array(np.asarray(CLASSES, dtype=object)[cols], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _modality_block(split: str, video_ids: np.ndarray, seg: np.ndarray, video: np.ndarray,
                    probs: np.ndarray | None, modality: str, stage: str,
                    prompt: str) -> pa.Table:
    """Rows of one split and modality: (N*T) rows in video-major, segment-minor order."""
    n, t, c = seg.shape
    rows = n * t
    probs = np.full((n, t, c), np.nan, np.float32) if probs is None else probs
    flat_probs = pa.array(np.asarray(probs, np.float32).reshape(-1))
    columns = {
        "split": pa.array([split] * rows, pa.string()),
        "video_id": pa.array(np.repeat(np.asarray(video_ids, dtype=object), t), pa.string()),
        "segment": pa.array(np.tile(np.arange(t, dtype=np.int8), n)),
        "modality": pa.array([modality] * rows, pa.string()),
        "stage": pa.array([stage] * rows, pa.string()),
        "prompt": pa.array([prompt] * rows, pa.string()),
        "labels": _name_lists(seg.reshape(rows, c)),
        "video_labels": _name_lists(np.repeat(video, t, axis=0)),
        "teacher_prob": pa.FixedSizeListArray.from_arrays(flat_probs, c),
    }
    return pa.table(columns, schema=LABEL_SCHEMA)


def labels_table(stage: str | Mapping[str, str], splits: LabelSplits,
                 video_labels: dict[str, np.ndarray], teachers: dict[str, TeacherScores],
                 plg: PLGConfig) -> pa.Table:
    """The pseudo-label table of `splits` (see the module docstring for the schema); `stage`
    is one for all rows or {modality: stage} (the labels retrain uses: PLD or PLG per modality)."""
    stages = {m: stage for m in MODALITIES} if isinstance(stage, str) else dict(stage)
    blocks = []
    for split, (video_ids, labels) in splits.items():
        scores = teachers.get(split)
        for modality, seg, prompt in (("audio", labels.seg_audio, plg.audio_prompt),
                                      ("visual", labels.seg_visual, plg.visual_prompt)):
            probs = scores.probs.get(prompt) if scores is not None else None
            blocks.append(_modality_block(split, video_ids, seg, video_labels[split], probs,
                                          modality, stages[modality], prompt))
    return pa.concat_tables(blocks)


def write_labels(path: str | os.PathLike, table: pa.Table) -> Path:
    """Atomically write a pseudo-label table as Parquet (zstd)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def _segment_array(table: pa.Table, video_index: dict[str, int], n: int) -> np.ndarray:
    """(N, T, C) uint8 from the rows of one split and modality."""
    segments = table.column("segment").to_numpy().astype(np.int64)
    t = int(segments.max()) + 1 if len(segments) else 10
    out = np.zeros((n, t, NUM_CLASSES), np.uint8)
    rows = np.array([video_index[v] for v in table.column("video_id").to_pylist()], np.int64)
    labels = table.column("labels").combine_chunks()
    lengths = labels.value_lengths().to_numpy(zero_copy_only=False)
    names = labels.flatten().to_pylist()
    classes = np.array([CLASS_INDEX[name] for name in names], np.int64)
    row_of_value = np.repeat(np.arange(len(rows)), lengths)
    out[rows[row_of_value], segments[row_of_value], classes] = 1
    return out


def read_labels(path: str | os.PathLike) -> LabelSplits:
    """Read a pseudo-label Parquet table back into {split: (video_ids, PseudoLabels)}."""
    table = pq.read_table(path)
    missing = set(LABEL_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a pseudo-label table (missing columns {sorted(missing)})")
    out: LabelSplits = {}
    split_col = np.asarray(table.column("split").to_pylist(), dtype=object)
    modality_col = np.asarray(table.column("modality").to_pylist(), dtype=object)
    for split in dict.fromkeys(split_col):
        in_split = table.filter(pa.array(split_col == split))
        video_ids = np.asarray(list(dict.fromkeys(in_split.column("video_id").to_pylist())))
        index = {vid: i for i, vid in enumerate(video_ids)}
        arrays = {}
        for modality in MODALITIES:
            part = table.filter(pa.array((split_col == split) & (modality_col == modality)))
            arrays[modality] = _segment_array(part, index, len(video_ids))
        out[str(split)] = (video_ids, PseudoLabels(arrays["audio"], arrays["visual"]))
    return out


def split_labels(path: str | os.PathLike, split: SplitData) -> PseudoLabels:
    """The labels of one split from a table, checked against that split's video order."""
    video_ids, labels = read_labels(path)[split.name]
    if not np.array_equal(video_ids.astype(str), np.asarray(split.video_ids).astype(str)):
        raise ValueError(f"{path}: {split.name} video ids do not match the dataset "
                         f"({len(video_ids)} vs {len(split)} videos)")
    return labels


def flip_rates(before: LabelSplits, after: LabelSplits) -> dict[str, float]:
    """`<split>/<modality>/flipped_percent`: percent of positive `before` segment labels that
    differ in `after` (what PLD changed)."""
    rates = {}
    for split in before:
        for modality in MODALITIES:
            old = getattr(before[split][1], f"seg_{modality}").astype(bool)
            new = getattr(after[split][1], f"seg_{modality}").astype(bool)
            rates[f"{split}/{modality}/flipped_percent"] = 100 * float(
                (old ^ new).sum() / max(old.sum(), 1))
    return rates


def choice_scores(choices: Mapping) -> dict[str, float]:
    """Metrics of a label choice ({modality: vaplan.method.LabelChoice}): uses_pld (1/0) and
    the PLD - PLG improvement with its interval."""
    scores = {}
    for modality, choice in choices.items():
        scores[f"{modality}/uses_pld"] = float(choice.uses_denoised)
        if choice.test is not None:
            scores[f"{modality}/improvement"] = choice.test.improvement
            scores[f"{modality}/improvement_low"] = choice.test.low
            scores[f"{modality}/improvement_high"] = choice.test.high
    return scores


def choice_tags(record: dict) -> dict[str, str]:
    """`pld.decision.<modality>` = pld | plg and `pld.decision.<modality>.reason` tags of a
    recorded choice (`labels/choice.json`)."""
    tags = {}
    for modality, choice in record["modalities"].items():
        tags[f"pld.decision.{modality}"] = choice["source"]
        tags[f"pld.decision.{modality}.reason"] = choice["reason"]
    return tags
