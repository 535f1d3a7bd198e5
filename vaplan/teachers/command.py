"""`vaplan teach`: a plain typer-compatible function (registered by vaplan.cli).

Importing this module is cheap: torch, open_clip, laion_clap and PyAV load inside `teach`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer


def _parse_modalities(text: str) -> tuple[str, ...]:
    from vaplan.categories import MODALITIES

    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in MODALITIES]
    if bad or not names:
        raise typer.BadParameter(f"--modalities {text!r}: expected a comma list of {MODALITIES}")
    return names


def _prefer_offline_hub() -> None:
    """With roberta-base cached, make laion_clap's import-time Hub lookups local (no hangs)."""
    if os.environ.get("HF_HUB_OFFLINE") or "huggingface_hub" in __import__("sys").modules:
        return
    try:
        from vaplan.teachers.clap_teacher import check_roberta_cache

        check_roberta_cache()
    except Exception:  # not cached: leave the Hub reachable, ClapTeacher will explain
        return
    os.environ["HF_HUB_OFFLINE"] = "1"


def teach(
    videos: Annotated[Path, typer.Option(help="folder of videos named <LLP filename>.mp4")],
    split_csv: Annotated[Path, typer.Option(help="LLP-style file: filename<TAB>event_labels")],
    out: Annotated[Path, typer.Option(help="teacher cache folder (created or resumed)")],
    modalities: Annotated[str, typer.Option(help="comma list: audio,visual")] = "audio,visual",
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu, cuda, cuda:1")] = "cpu",
    precision: Annotated[str, typer.Option(
        help="fp32 (default, every device) or an opt-in fp16|bf16 autocast; "
             "recorded in the cache")] = "fp32",
    clip_ckpt: Annotated[Optional[Path], typer.Option(help="open_clip checkpoint file")] = None,
    clip_model: Annotated[str, typer.Option(help="open_clip model name")] = "ViT-B-32",
    clip_pretrained: Annotated[str, typer.Option(help="open_clip tag looked up in the HF cache "
                                                      "when --clip-ckpt is not given")] = "openai",
    clap_ckpt: Annotated[Optional[Path], typer.Option(help="LAION CLAP 630k-audioset-best.pt")] = None,
    allow_random_weights: Annotated[bool, typer.Option(
        help="SMOKE TEST ONLY: random weights when a checkpoint is missing (flagged in the cache)")] = False,
    batch_videos: Annotated[int, typer.Option(help="videos per encoder batch")] = 16,
    num_workers: Annotated[int, typer.Option(help="decoding threads")] = 4,
    limit: Annotated[Optional[int], typer.Option(help="score at most N videos of the file")] = None,
    agreement_frames: Annotated[int, typer.Option(
        help="also score K other frames of each 1-s segment (0 off, or even: 2, 4) and record "
             "whether they agree with the middle frame (docs/teachers.md)")] = 0,
    agreement_prompt: Annotated[str, typer.Option(
        help="visual prompt set of the printed agreement summary")] = "VP1",
    agreement_threshold: Annotated[float, typer.Option(
        help="τ of the printed summary (the cache keeps the scores: any τ later)")] = 0.041,
) -> None:
    """Score videos with CLIP (visual) and CLAP (audio) into the Parquet teacher cache."""
    from vaplan.teachers.common import TeacherUnavailable, check_precision
    from vaplan.teachers.run import TeachConfig, format_report, run_teach

    try:
        check_precision(precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--precision") from None
    cfg = TeachConfig(videos=str(videos), split_csv=str(split_csv), out=str(out),
                      modalities=_parse_modalities(modalities), device=device,
                      precision=precision, clip_model=clip_model,
                      clip_pretrained=clip_pretrained or None,
                      clip_ckpt=str(clip_ckpt) if clip_ckpt else None,
                      clap_ckpt=str(clap_ckpt) if clap_ckpt else None,
                      allow_random_weights=allow_random_weights, batch_videos=batch_videos,
                      num_workers=num_workers, limit=limit, agreement_frames=agreement_frames,
                      agreement_prompt=agreement_prompt, agreement_threshold=agreement_threshold)
    if "audio" in cfg.modalities:
        _prefer_offline_hub()
    if allow_random_weights:
        typer.secho("WARNING: --allow-random-weights: missing checkpoints are replaced by random "
                    "weights; the cache is flagged random_weights and refused by the pipeline "
                    "unless data.allow_random_teachers=true.", fg="yellow", err=True)
    try:
        report = run_teach(cfg, progress=True)
    except (TeacherUnavailable, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(report, str(out)))
    if report.failures and not any(report.scored.values()):
        raise typer.Exit(1)
