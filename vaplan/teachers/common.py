"""Helpers shared by the CLIP and CLAP teachers: errors, precision, checkpoint digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from vaplan.errors import UserError

PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION = "fp32"  # what laion_clap and open_clip compute in; lower precision is opt-in


class TeacherUnavailable(RuntimeError):
    """A teacher cannot be built: a package or a weight file is missing (message says which)."""


class CheckpointError(TeacherUnavailable, UserError):
    """A teacher checkpoint file is unreadable (truncated, not a torch/safetensors file) or holds
    another model (missing, unexpected or differently shaped keys); the message names the file."""


def short_keys(keys, limit: int = 4) -> str:
    """`a, b, c, d (+7 more)`: a key list that fits in a one-line error."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model, state: dict, path, what: str, how: str,
                     ignorable: tuple[str, ...] = ()) -> None:
    """Strict match of a checkpoint's tensors against `model`: every key present, no extra key,
    every shape equal (keys ending in `ignorable` may be absent or extra). CheckpointError
    naming the file and the first mismatching keys otherwise."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(ignorable)]
    extra = [k for k in state if k not in expected and not k.endswith(ignorable)]
    if missing or extra:
        parts = ([f"{len(missing)} missing keys ({short_keys(missing)})"] if missing else []) + \
                ([f"{len(extra)} unexpected keys ({short_keys(extra)})"] if extra else [])
        raise CheckpointError(f"{path}: not a {what} checkpoint: {'; '.join(parts)}. {how}")
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)]
    if shapes:
        raise CheckpointError(f"{path}: not a {what} checkpoint: {len(shapes)} tensors of another "
                              f"shape ({short_keys(shapes, 2)}). {how}")


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


def read_checkpoint(path, what: str, how: str, weights_only: bool = True) -> dict:
    """The tensors of a published checkpoint file -> {key: tensor}.

    Reads safetensors files and torch pickles (a state_dict, or a dict holding it under
    "state_dict" as laion_clap and open_clip training save it); strips the "module." prefix a
    DistributedDataParallel save leaves on every key. A truncated or foreign file is a
    CheckpointError naming it (never a half-loaded model).
    """
    torch = require_torch()
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded = load_file(str(path), device="cpu")
        else:
            loaded = _torch_load(torch, path, weights_only)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same to the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot read it as a {what} checkpoint (truncated "
                              f"download or not a torch/safetensors file: {first}). "
                              f"{how}") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds no state_dict ({type(loaded).__name__}); expected "
                              f"a {what} checkpoint. {how}")
    if all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    return state


def _torch_load(torch, path, weights_only: bool):
    """torch.load on CPU; a pickle that weights_only refuses is re-read in full only when the
    caller allows it (laion_clap's own loader reads its checkpoints that way)."""
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if weights_only:
            raise
        return torch.load(str(path), map_location="cpu", weights_only=False)

