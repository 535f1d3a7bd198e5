"""`vaplan doctor`: check every data input a run will need before any long step starts.

One `Check` per item (docs/real-data.md, "Preflight"): the feature store of each split and its
video coverage, the teacher cache (readable, digests consistent, random-weight flag against
`data.allow_random_teachers`) and its coverage of each split per modality. Only files are read
(feature arrays memory-mapped, Parquet video-id/segment columns); nothing is trained or scored.
The tracking store and Ray checks live in `pipelines.doctor` (MLflow/Ray stay out of vaplan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from vaplan.config import DataConfig, ExperimentConfig

Status = Literal["ok", "warn", "fail"]
SHOWN_IDS = 3  # missing video ids printed per line


@dataclass(frozen=True)
class Check:
    """One preflight item; `status` ok | warn (runs, but read the line) | fail (will not run)."""

    item: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        """`OK    feature store val: ...` (one line; the detail never holds a newline)."""
        detail = " ".join(self.detail.split())
        return f"{self.status.upper():<5} {self.item}: {detail}"


def all_ok(checks: Iterable[Check]) -> bool:
    return all(check.ok for check in checks)


def _missing_text(missing: list[str], total: int) -> str:
    shown = ", ".join(missing[:SHOWN_IDS]) + (" ..." if len(missing) > SHOWN_IDS else "")
    return f"lacks {len(missing)} of {total} videos ({shown})"


def check_experiment(cfg: ExperimentConfig) -> list[Check]:
    """The data checks of a whole experiment config (PLG prompt sets included)."""
    return check_data(cfg.data, prompt_ids=(cfg.plg.visual_prompt, cfg.plg.audio_prompt))


def check_data(cfg: DataConfig, prompt_ids: Iterable[str] = ()) -> list[Check]:
    """Every data item of `cfg`, in the order a run reads them."""
    if cfg.source == "sim":
        return [Check("data", "ok", f"LLP-sim (num_train {cfg.sim.num_train}, seed "
                                    f"{cfg.sim.seed}) is generated in memory; no files to check")]
    from vaplan.data.dataset import SPLITS, load_llp_split

    ids = {name: [str(v) for v in load_llp_split(cfg, name).video_ids] for name in SPLITS}
    checks = [_subset_check(cfg, ids)]
    if cfg.feature_set == "official":
        checks += [_feature_check(cfg, name, ids[name]) for name in SPLITS]
    checks += _cache_checks(cfg, ids, list(prompt_ids))
    return checks


def _subset_check(cfg: DataConfig, ids: dict[str, list[str]]) -> Check:
    sizes = ", ".join(f"{name} {len(v)}" for name, v in ids.items())
    if cfg.max_train_videos or cfg.max_eval_videos:
        return Check("videos", "warn", f"{sizes} (a subset: data.max_train_videos="
                                       f"{cfg.max_train_videos}, data.max_eval_videos="
                                       f"{cfg.max_eval_videos}; scores are not the benchmark's)")
    return Check("videos", "ok", f"{sizes} (the packaged LLP annotations)")


def _feature_check(cfg: DataConfig, split: str, ids: list[str]) -> Check:
    """The compact store `feature_dir/<split>`: readable, shapes right, every needed video."""
    from vaplan.data.dataset import split_limit
    from vaplan.data.features import load_feature_store, load_store_video_ids

    item = f"feature store {split}"
    if not cfg.feature_dir:
        return Check(item, "fail", "data.feature_dir is not set (--set data.feature_dir=DIR)")
    path = Path(cfg.feature_dir) / split
    limit = split_limit(cfg, split)
    how = f"build it: vaplan build-features --feats FEATS --split {split} --out {path}" + \
        (f" --max-videos {limit}" if limit else "")
    if not (path / "meta.json").is_file():
        return Check(item, "fail", f"{path} not found (no meta.json); {how}")
    try:
        feats = load_feature_store(path, mmap=True)  # checks every array's shape
        stored = set(str(v) for v in load_store_video_ids(path))
    except (OSError, ValueError) as err:
        return Check(item, "fail", f"{err}; {how}")
    missing = [v for v in ids if v not in stored]
    if missing:
        return Check(item, "fail", f"{path} {_missing_text(missing, len(ids))}; {how}")
    dims = f"audio {feats.audio.shape[-1]}, visual {feats.visual.shape[-1]}, " \
           f"3d {None if feats.visual_3d is None else feats.visual_3d.shape[-1]}"
    return Check(item, "ok", f"{path}: all {len(ids)} videos ({dims}, {feats.audio.dtype})")


def _cache_checks(cfg: DataConfig, ids: dict[str, list[str]], prompt_ids: list[str]) -> list[Check]:
    """Teacher cache: readable, digests, the random-weight flag, coverage per split x modality."""
    from vaplan.teachers.cache import CacheError, cached_video_ids, combined_digest, read_cache_meta

    if not cfg.teacher_cache:
        return [Check("teacher cache", "fail",
                      "data.teacher_cache is not set (--set data.teacher_cache=DIR)")]
    path = Path(cfg.teacher_cache)
    try:
        meta = read_cache_meta(path)
    except (CacheError, OSError, ValueError) as err:
        return [Check("teacher cache", "fail", f"{path}: {err} (write it with vaplan teach, "
                                               f"docs/real-data.md)")]
    teachers = meta["teachers"]
    checks = [Check("teacher cache", "ok", f"{path}: {meta.get('source', '?')}, modalities "
                                           f"{', '.join(sorted(teachers))}")]
    checks.append(_digest_check(meta, combined_digest(teachers, meta["random_weights"])))
    checks.append(_random_check(cfg, meta))
    cached_pids = {pid for entry in teachers.values() for pid in entry.get("prompts", {})}
    lacking = [p for p in prompt_ids if p not in cached_pids]
    if lacking:
        checks.append(Check("teacher prompts", "fail", f"{path} has no scores for prompt sets "
                                                       f"{lacking} (plg.*_prompt)"))
    for modality in sorted(teachers):
        try:
            cached = cached_video_ids(path, modality)
        except (CacheError, OSError, ValueError) as err:
            checks.append(Check(f"teacher cache {modality}", "fail", f"{path}: {err}"))
            continue
        for split, wanted in ids.items():
            item = f"teacher cache {modality} {split}"
            missing = [v for v in wanted if v not in cached]
            checks.append(
                Check(item, "fail", f"{path} {_missing_text(missing, len(wanted))} (all 10 "
                                    f"segments); score them: vaplan teach ... --out {path}")
                if missing else Check(item, "ok", f"all {len(wanted)} videos, 10 segments each"))
    return checks


def _digest_check(meta: dict, recomputed: str) -> Check:
    parts = []
    for modality, entry in sorted(meta["teachers"].items()):
        sha = str(entry.get("checkpoint_sha256", "")) or "none"
        parts.append(f"{modality} {entry.get('model', '?')} checkpoint sha256 {sha[:12]}")
    recorded = str(meta.get("digest", ""))
    if recorded != recomputed:
        return Check("teacher digests", "fail", f"meta.json digest {recorded[:12]} does not match "
                                                f"its teachers ({recomputed[:12]}): the file was "
                                                f"edited; re-run vaplan teach into a new folder")
    return Check("teacher digests", "ok", f"{recorded[:12]}; " + "; ".join(parts))


def _random_check(cfg: DataConfig, meta: dict) -> Check:
    if not meta.get("random_weights"):
        return Check("teacher weights", "ok", "real checkpoints (random_weights: false)")
    if cfg.allow_random_teachers:
        return Check("teacher weights", "warn", "RANDOM weights (a smoke test), accepted by "
                                                "data.allow_random_teachers=true")
    return Check("teacher weights", "fail", f"{cfg.teacher_cache} was scored with RANDOM teacher "
                                            f"weights (vaplan teach --allow-random-weights); the "
                                            f"run refuses it unless --set "
                                            f"data.allow_random_teachers=true")
