"""Helpers shared by the CLIP and CLAP teachers: errors, precision, checkpoint digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION = "fp32"  # what laion_clap and open_clip compute in; lower precision is opt-in


class TeacherUnavailable(RuntimeError):
    """A teacher cannot be built: a package or a weight file is missing (message says which)."""


def require_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TeacherUnavailable("the teachers need PyTorch: pip install torch") from exc
    return torch


def check_precision(precision: str) -> str:
    """The teacher precision, checked: fp32 (the default, on every device) or an explicit
    opt-in fp16/bf16 autocast. The former 'auto' (bf16/fp16 on GPU) is refused by name."""
    if precision == "auto":
        raise ValueError("precision 'auto' is gone: the teachers run in fp32 unless you pass "
                         "--precision fp16 or bf16 (docs/teachers.md)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
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
