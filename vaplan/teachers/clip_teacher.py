"""Visual teacher: open_clip image/text encoders (ViT-B-32 by default).

Weights come from a local checkpoint file (`checkpoint=`) or an open_clip pretrained tag that
is already in the user's Hugging Face cache (`pretrained="openai"`); nothing is downloaded
here. `allow_random=True` builds randomly initialised weights for smoke tests only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np

from vaplan.teachers.common import (DEFAULT_PRECISION, TeacherUnavailable, autocast,
                                    check_precision, check_state_dict, file_sha256,
                                    read_checkpoint, require_file, require_torch)

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_TAG = "openai"
CLIP_HOWTO = ("Download the OpenAI ViT-B/32 weights in open_clip format, e.g. "
              "`hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors` "
              "(then pass that file as --clip-ckpt, or keep it in the HF cache and use the "
              "'openai' tag); see docs/teachers.md.")


def _require_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise TeacherUnavailable("the visual teacher needs open_clip: "
                                 "pip install open_clip_torch") from exc
    return open_clip


def cached_tag_file(model_name: str, tag: str) -> str | None:
    """Local file of an open_clip pretrained tag in the HF cache, or None (never downloads)."""
    open_clip = _require_open_clip()
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise TeacherUnavailable(f"open_clip has no pretrained tag {tag!r} for {model_name}; "
                                 f"known: {open_clip.list_pretrained_tags_by_model(model_name)}")
    repo = cfg.get("hf_hub", "").strip("/")
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


@contextlib.contextmanager
def _quiet_random_init(quiet: bool):
    """Silence open_clip's "initialized randomly" warning when a checkpoint is loaded next."""
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_clip_weights(model, path: str, model_name: str = DEFAULT_CLIP_MODEL,
                      state: dict | None = None) -> None:
    """Load an open_clip checkpoint file into `model`, every tensor or nothing.

    Accepts the published open_clip layouts: `open_clip_model.safetensors`,
    `open_clip_pytorch_model.bin`, or a `.pt` state_dict as `torch.save(model.state_dict())` or
    open_clip's training (`{"state_dict": ...}`, "module." prefixes) writes it. The keys must
    match the model exactly (a `position_ids` buffer aside); anything else is a CheckpointError
    naming the file. OpenAI's original TorchScript `ViT-B-32.pt` is not read: use the open_clip
    file (docs/real-data.md).
    """
    what = f"open_clip {model_name}"
    state = read_checkpoint(path, what, CLIP_HOWTO) if state is None else state  # state: of `path`
    scale = state.get("logit_scale")
    if scale is not None and getattr(scale, "ndim", 0) != model.logit_scale.ndim:  # as open_clip
        state["logit_scale"] = scale.reshape(model.logit_scale.shape)
    check_state_dict(model, state, path, what, CLIP_HOWTO, ("position_ids",))
    expected = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


class ClipTeacher:
    """Encodes segment frames and prompt texts with open_clip.

    device: torch device string; precision: fp32 (default on every device, as open_clip
    computes) or an explicit opt-in fp16/bf16 autocast; recorded in the cache meta.
    quick_gelu: OpenAI weights need QuickGELU (True by default); a tag sets it from open_clip's
    own table.
    """

    modality = "visual"

    def __init__(self, model_name: str = DEFAULT_CLIP_MODEL, checkpoint: str | None = None,
                 pretrained: str | None = DEFAULT_CLIP_TAG, device: str = "cpu",
                 precision: str = DEFAULT_PRECISION, allow_random: bool = False,
                 quick_gelu: bool = True):
        torch = require_torch()
        open_clip = _require_open_clip()
        self.model_name, self.device = model_name, str(device)
        self.precision = check_precision(precision)
        weights, self.checkpoint, quick_gelu = self._resolve_weights(
            model_name, checkpoint, pretrained, allow_random, quick_gelu)
        self.random_weights = weights is None
        self.quick_gelu = quick_gelu
        # read (and refuse a truncated/foreign file) before the model is built
        state = None if weights is None else read_checkpoint(weights, f"open_clip {model_name}",
                                                              CLIP_HOWTO)
        with _quiet_random_init(weights is not None):  # weights follow, not "random init"
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu)
        if weights is not None:
            load_clip_weights(model, weights, model_name, state=state)
            del state
        self.model = model.to(self.device).eval()
        self.preprocess_image = preprocess  # PIL -> (3, S, S) tensor
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.checkpoint_sha256 = "" if weights is None else file_sha256(weights)
        self._torch = torch

    @staticmethod
    def _resolve_weights(model_name: str, checkpoint: str | None, pretrained: str | None,
                         allow_random: bool, quick_gelu: bool) -> tuple[str | None, str, bool]:
        """(file to load or None for random, description, quick_gelu)."""
        if checkpoint:
            path = require_file(checkpoint, "CLIP checkpoint", CLIP_HOWTO)
            return str(path), str(path), quick_gelu
        if pretrained:
            found = cached_tag_file(model_name, pretrained)
            if found:
                cfg = _require_open_clip().get_pretrained_cfg(model_name, pretrained)
                return found, f"{model_name}:{pretrained}", bool(cfg.get("quick_gelu", False))
        if allow_random:
            return None, "random-init", quick_gelu
        raise TeacherUnavailable(f"no CLIP weights: tag {pretrained!r} of {model_name} is not in "
                                 f"the Hugging Face cache and no --clip-ckpt was given. "
                                 f"{CLIP_HOWTO}")

    def describe(self, prompts: dict[str, list[str]]) -> dict[str, Any]:
        """The cache-meta entry of this teacher (enters the digest)."""
        return {"model": f"open_clip:{self.model_name}", "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.checkpoint_sha256, "quick_gelu": self.quick_gelu,
                "random_weights": self.random_weights, "precision": self.precision,
                "input": "middle frame of each 1-s segment",
                "prompts": prompts}

    def preprocess(self, frames: np.ndarray):
        """(n, H, W, 3) uint8 RGB -> (n, 3, S, S) float tensor (CPU; thread-safe)."""
        from PIL import Image

        images = [self.preprocess_image(Image.fromarray(frame)) for frame in frames]
        return self._torch.stack(images)

    def encode_images(self, pixels) -> np.ndarray:
        """(n, 3, S, S) tensor -> (n, D) float32 embeddings (not normalised)."""
        torch = self._torch
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return out.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(C,) prompts -> (C, D) float32 embeddings (not normalised)."""
        torch = self._torch
        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.model.encode_text(tokens)
        return out.float().cpu().numpy()
