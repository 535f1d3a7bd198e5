"""Helpers shared by the CLIP and CLAP teachers: errors, precision, checkpoint digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class TeacherUnavailable(RuntimeError):
    """A teacher cannot be built: a package or a weight file is missing (message says which)."""


def require_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TeacherUnavailable("the teachers need PyTorch: pip install torch") from exc
    return torch


def resolve_precision(precision: str, device: str, default_gpu: str = "fp16") -> str:
    """'auto' -> fp32 on CPU, `default_gpu` elsewhere; other values are checked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "auto":
        return "fp32" if str(device).startswith("cpu") else default_gpu
    return precision


def autocast(device: str, precision: str):
    """torch.autocast for fp16/bf16 (no-op for fp32)."""
    torch = require_torch()
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=str(device).split(":")[0], dtype=dtype)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a checkpoint file (part of the cache digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | os.PathLike, what: str, how: str) -> Path:
    """The path if it is a file, else TeacherUnavailable saying what to download."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeacherUnavailable(f"{what} not found at {path}. {how}")
    return path
