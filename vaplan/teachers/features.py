"""CLIP/CLAP segment embeddings from the teacher cache as HAN inputs (the paper's star row).

The `clip_clap` model preset (vaplan.config.MODEL_PRESETS) expects 512-d audio (CLAP) and
512-d visual (CLIP ViT-B/32) inputs and no 3D stream.
"""

from __future__ import annotations

import os
from typing import Iterable

from vaplan.config import MODEL_PRESETS
from vaplan.data.types import Features
from vaplan.teachers.cache import CacheError, load_cached_embeddings


def load_clip_clap_features(cache: str | os.PathLike, video_ids: Iterable[str],
                            allow_random: bool = False, preset: str = "clip_clap") -> Features:
    """Features(audio=(N, T, 512) CLAP, visual=(N, T, 512) CLIP, visual_3d=None), float32."""
    ids = [str(v) for v in video_ids]
    audio = load_cached_embeddings(cache, "audio", ids, allow_random)  # (N, T, Da)
    visual = load_cached_embeddings(cache, "visual", ids, allow_random)  # (N, T, Dv)
    model = MODEL_PRESETS[preset]
    for name, array, dim in (("audio", audio, model.audio_dim), ("visual", visual, model.visual_dim)):
        if array.shape[-1] != dim:
            raise CacheError(f"{cache}: cached {name} embeddings are {array.shape[-1]}-d, the "
                             f"{preset!r} model preset expects {dim}-d")
    return Features(audio=audio, visual=visual, visual_3d=None)
