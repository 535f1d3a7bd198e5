"""Batch driver of `vaplan teach`: videos -> CLIP/CLAP segment scores in the Parquet cache.

For each batch of videos: decode (+ preprocess) in a thread pool while the previous batch is
encoded, score every prompt set of each modality (text embeddings are computed once), append
to the cache. Failures (missing file, no audio, corrupt) are recorded and reported at the
end; videos already in the cache are skipped, so an interrupted run resumes. With
`agreement_frames` K > 0, CLIP also scores K other frames of each segment and the cache gets
their min/max per class (vaplan.teachers.agreement); the summary is printed and written to
`agreement.json` in the cache folder.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vaplan.categories import MODALITIES, NUM_SEGMENTS
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS, prompt_texts
from vaplan.teachers.cache import ScoreCacheWriter, build_cache_meta, cached_video_ids
from vaplan.teachers.decode import check_extra_frames, decode_video, index_video_files
from vaplan.teachers.scoring import score_segments


@dataclass(frozen=True)
class TeachConfig:
    """Everything one `vaplan teach` run needs."""

    videos: str  # folder of videos named <LLP filename>.<ext>
    split_csv: str  # LLP-style file: filename<TAB>event_labels
    out: str  # cache folder
    modalities: tuple[str, ...] = MODALITIES
    device: str = "cpu"
    precision: str = "fp32"  # fp32 (default) | fp16 | bf16 (opt-in autocast, both teachers)
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"  # open_clip tag looked up in the HF cache
    clip_ckpt: str | None = None
    clap_ckpt: str | None = None
    allow_random_weights: bool = False
    batch_videos: int = 16
    num_workers: int = 4
    limit: int | None = None  # score at most this many videos (smoke tests)
    agreement_frames: int = 0  # K other frames per segment scored by CLIP (0: off; even)
    agreement_prompt: str = "VP1"  # the summary's prompt set and threshold (any τ later)
    agreement_threshold: float = 0.041


@dataclass
class TeachReport:
    """Outcome of one run (failures are (video id, message))."""

    requested: int = 0
    scored: dict[str, int] = field(default_factory=dict)  # modality -> videos written
    skipped: dict[str, int] = field(default_factory=dict)  # modality -> already cached
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    videos_processed: int = 0
    agreement: Any = None  # AgreementSummary over the cache, when agreement was recorded

    @property
    def videos_per_s(self) -> float:
        return self.videos_processed / self.seconds if self.seconds > 0 else 0.0


def prompt_sets(modality: str) -> dict[str, list[str]]:
    """PID -> 25 prompt texts for one modality."""
    ids = VISUAL_PROMPTS if modality == "visual" else AUDIO_PROMPTS
    return {pid: prompt_texts(pid) for pid in ids}


def build_teachers(cfg: TeachConfig) -> dict[str, Any]:
    """The requested teachers (lazy imports; TeacherUnavailable says what is missing)."""
    teachers: dict[str, Any] = {}
    if "visual" in cfg.modalities:
        from vaplan.teachers.clip_teacher import ClipTeacher

        teachers["visual"] = ClipTeacher(cfg.clip_model, cfg.clip_ckpt, cfg.clip_pretrained,
                                         cfg.device, cfg.precision, cfg.allow_random_weights)
    if "audio" in cfg.modalities:
        from vaplan.teachers.clap_teacher import ClapTeacher

        teachers["audio"] = ClapTeacher(cfg.clap_ckpt, cfg.device, cfg.precision,
                                        cfg.allow_random_weights)
    return teachers


def text_embeddings(teacher: Any, prompts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """PID -> (C, D) prompt embeddings, computed once per teacher (memoised on it)."""
    memo = getattr(teacher, "_vaplan_text_memo", None)
    if memo is None:
        memo = {}
        try:
            teacher._vaplan_text_memo = memo
        except AttributeError:  # a read-only proxy: just do not memoise
            pass
    out = {}
    for pid, texts in prompts.items():
        key = tuple(texts)
        if key not in memo:
            memo[key] = teacher.encode_texts(list(texts))  # (C, D)
        out[pid] = memo[key]
    return out


def teachers_meta(teachers: dict[str, Any], allow_random: bool) -> dict[str, Any]:
    """Cache meta of these teachers (random_weights if any teacher is random)."""
    entries = {m: t.describe(prompt_sets(m)) for m, t in teachers.items()}
    random = any(getattr(t, "random_weights", False) for t in teachers.values())
    if random and not allow_random:
        raise RuntimeError("teachers have random weights but allow_random_weights is False")
    return build_cache_meta(entries, random_weights=random, source="vaplan teach")


def _prepare_one(path: Path | None, video_id: str, needed: tuple[str, ...],
                 teachers: dict[str, Any], extra: int = 0) -> tuple[dict[str, Any], list[str]]:
    """Decode + preprocess one video for the `needed` modalities -> (inputs, errors);
    inputs["agreement"]: the K other frames of each segment, (T*K, ...), when extra = K > 0."""
    if path is None:
        return {}, [f"no video file named {video_id}.* in the video folder"]
    inputs, errors = {}, []
    for modality in needed:
        try:
            visual = modality == "visual"
            decoded = decode_video(path, frames=visual, audio=not visual,
                                   extra_frames=extra if visual else 0)
            media = decoded.frames if visual else decoded.audio
            inputs[modality] = teachers[modality].preprocess(media)  # (T, ...)
            if visual and extra:  # (T, K, H, W, 3) -> (T*K, ...)
                others = decoded.extra.reshape(-1, *decoded.extra.shape[2:])
                inputs["agreement"] = teachers[modality].preprocess(others)
        except Exception as exc:  # recorded, not fatal
            errors.append(f"{modality}: {exc}")
    return inputs, errors


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _prefetched(pool: ThreadPoolExecutor, batches: Iterator[list], work) -> Iterator:
    """Yield (batch, [future results]) while the next batch is already being decoded."""
    pending: list[tuple[list, list[Future]]] = []
    for batch in batches:
        pending.append((batch, [pool.submit(work, *item) for item in batch]))
        if len(pending) > 1:
            ready, futures = pending.pop(0)
            yield ready, [f.result() for f in futures]
    for ready, futures in pending:
        yield ready, [f.result() for f in futures]


def _score_modality(teacher: Any, texts: dict[str, np.ndarray], tensors: list) -> tuple:
    """Encode n videos' segments of one modality -> (probs, cosines, embeddings (n, T, D))."""
    torch = __import__("torch")
    stacked = torch.cat(tensors)  # (n*T, ...)
    encode = teacher.encode_images if teacher.modality == "visual" else teacher.encode_audio
    emb = encode(stacked).reshape(len(tensors), NUM_SEGMENTS, -1)  # (n, T, D)
    probs, cosines = score_segments(emb, texts)
    return probs, cosines, emb


def _score_agreement(teacher: Any, texts: dict[str, np.ndarray], tensors: list, k: int):
    """The K other frames of n videos' segments -> (K, min, max), PID -> (n, T, C): the cache's
    agree_* columns (the same Eq. 3 probabilities as the middle frame's)."""
    torch = __import__("torch")
    emb = teacher.encode_images(torch.cat(tensors))  # (n*T*K, D)
    probs, _ = score_segments(emb.reshape(len(tensors), NUM_SEGMENTS, k, -1), texts)
    return (k, {pid: p.min(axis=2) for pid, p in probs.items()},  # (n, T, C)
            {pid: p.max(axis=2) for pid, p in probs.items()})


def _work_plan(cfg: TeachConfig, video_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """video id -> modalities still missing from the cache."""
    cached = {m: cached_video_ids(cfg.out, m) for m in cfg.modalities}
    plan = {}
    for vid in video_ids:
        needed = tuple(m for m in cfg.modalities if vid not in cached[m])
        if needed:
            plan[vid] = needed
    return plan


def run_teach(cfg: TeachConfig, teachers: dict[str, Any] | None = None,
              progress: bool = True) -> TeachReport:
    """Score every video of `cfg.split_csv` found in `cfg.videos` into `cfg.out`."""
    from vaplan.data.llp import parse_weak_labels

    for modality in cfg.modalities:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected {MODALITIES}")
    check_extra_frames(cfg.agreement_frames)
    if cfg.agreement_frames and "visual" not in cfg.modalities:
        raise ValueError("--agreement-frames needs the visual teacher (--modalities visual)")
    if cfg.agreement_frames:  # refuse a bad summary prompt/threshold before any scoring
        _agreement_summary(cfg, check_only=True)
    ids, labels = parse_weak_labels(Path(cfg.split_csv))
    if cfg.limit is not None:
        ids, labels = ids[:cfg.limit], labels[:cfg.limit]
    label_of = dict(zip(ids, labels))
    files = index_video_files(cfg.videos)
    teachers = teachers if teachers is not None else build_teachers(cfg)
    teachers = {m: teachers[m] for m in cfg.modalities}
    report = TeachReport(requested=len(ids))
    plan = _work_plan(cfg, list(ids))
    for m in cfg.modalities:
        report.skipped[m] = sum(1 for v in ids if m not in plan.get(v, ()))
        report.scored[m] = 0
    texts = {m: text_embeddings(t, prompt_sets(m)) for m, t in teachers.items()}
    meta = teachers_meta(teachers, cfg.allow_random_weights)
    items = [(files.get(v), v, needed) for v, needed in plan.items()]
    start = time.perf_counter()
    with ScoreCacheWriter(cfg.out, meta, flush_videos=cfg.batch_videos) as writer, \
            ThreadPoolExecutor(max(1, cfg.num_workers)) as pool, _progress(progress, len(items)) as bar:
        work = lambda path, vid, needed: _prepare_one(  # noqa: E731
            path, vid, needed, teachers, cfg.agreement_frames)
        for batch, results in _prefetched(pool, _batches(items, cfg.batch_videos), work):
            _score_batch(batch, results, teachers, texts, writer, label_of, report,
                         cfg.agreement_frames)
            bar(len(batch))
    report.seconds = time.perf_counter() - start
    if cfg.agreement_frames:
        report.agreement = _agreement_summary(cfg)
    return report


def _agreement_summary(cfg: TeachConfig, check_only: bool = False):
    """The cache's frame-agreement summary, also written to <out>/agreement.json (None if no
    scored segment has agreement, e.g. every video was cached before)."""
    from vaplan.io import write_json
    from vaplan.teachers.agreement import cache_agreement
    from vaplan.teachers.cache import CacheError

    if cfg.agreement_prompt not in VISUAL_PROMPTS:
        raise ValueError(f"--agreement-prompt must be one of {', '.join(VISUAL_PROMPTS)}, "
                         f"got {cfg.agreement_prompt!r}")
    if check_only:
        if not 0 < cfg.agreement_threshold < 1:
            raise ValueError(f"--agreement-threshold must be in (0, 1), got "
                             f"{cfg.agreement_threshold}")
        return None
    try:
        summary = cache_agreement(cfg.out, cfg.agreement_prompt, cfg.agreement_threshold,
                                  allow_random=True)
    except CacheError:
        return None
    write_json(Path(cfg.out) / "agreement.json", summary.to_dict())
    return summary


def _score_batch(batch: list, results: list, teachers: dict[str, Any],
                 texts: dict[str, dict[str, np.ndarray]], writer: ScoreCacheWriter,
                 label_of: dict[str, np.ndarray], report: TeachReport, extra: int = 0) -> None:
    """Encode, score and append one decoded batch; failures go into the report."""
    report.videos_processed += len(batch)
    for (_, vid, _), (_, errors) in zip(batch, results):
        report.failures.extend((vid, err) for err in errors)
    for modality, teacher in teachers.items():
        done = [(vid, inputs[modality]) for (_, vid, _), (inputs, _) in zip(batch, results)
                if modality in inputs]
        if not done:
            continue
        vids = [vid for vid, _ in done]
        try:
            probs, cosines, emb = _score_modality(teacher, texts[modality], [x for _, x in done])
            agreement = None
            if modality == "visual" and extra:
                others = [inputs["agreement"] for (_, vid, _), (inputs, _) in zip(batch, results)
                          if modality in inputs]
                agreement = _score_agreement(teacher, texts[modality], others, extra)
        except Exception as exc:  # e.g. out of memory: record the batch, keep going
            report.failures.extend((vid, f"{modality}: scoring failed ({exc})") for vid in vids)
            continue
        writer.append(vids, modality, probs, cosines, emb,
                      np.stack([label_of[v] for v in vids]), agreement=agreement)
        report.scored[modality] += len(vids)


class _progress:
    """A rich progress bar (or nothing) used as `with _progress(on, total) as advance:`."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress()
            self._bar.start()
            self._task = self._bar.add_task("teach", total=self.total)
        return self.advance

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def format_report(report: TeachReport, out: str) -> str:
    """Human-readable summary: counts, throughput, failures."""
    lines = [f"teacher cache: {out}",
             f"videos in split file: {report.requested}; processed this run: "
             f"{report.videos_processed} in {report.seconds:.1f} s "
             f"({report.videos_per_s:.2f} videos/s)"]
    for m in sorted(report.scored):
        lines.append(f"  {m}: scored {report.scored[m]}, already cached {report.skipped[m]}")
    if report.agreement is not None:
        lines.append(f"{report.agreement.describe()} (also {out}/agreement.json)")
    if report.failures:
        lines.append(f"FAILURES ({len(report.failures)}):")
        lines.extend(f"  {vid}: {msg}" for vid, msg in report.failures)
    else:
        lines.append("no failures")
    return "\n".join(lines)
