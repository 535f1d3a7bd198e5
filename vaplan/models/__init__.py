"""The AVVP backbones behind one factory (docs/backbones.md).

`build_model(ModelConfig)` builds `train.model.name`: HAN (han.py), MGN (mgn.py) or MM-Pyramid
(mm_pyramid.py). Every backbone takes (audio (B,T,Da), visual (B,T*F or T,Dv), visual_3d
(B,T,D3) or None) and returns a `HANOutput` (video, audio and visual video-level probabilities
(B,C), segment probabilities (B,T,2,C), index 0 audio), and has `auxiliary_loss()` (a loss term
of its own recipe, or None), so losses, PLD, evaluation, checkpoints and the pyfunc model work
unchanged.
"""

from __future__ import annotations

from torch import nn

from vaplan.config import ModelConfig
from vaplan.models.han import HAN, HANOutput, HybridAttentionLayer, count_parameters
from vaplan.models.inputs import FeatureInputs
from vaplan.models.mgn import MGN
from vaplan.models.mm_pyramid import MMPyramid

BACKBONES: dict[str, type[FeatureInputs]] = {"han": HAN, "mgn": MGN, "mm_pyramid": MMPyramid}

# Parameters the reference code's forward pass uses (docs/backbones.md,
# tests/test_backbones.py), for each backbone's MODEL_PRESETS entry.
REFERENCE_PARAMETERS = {"han": 4_569_675, "mgn": 4_366_065, "mm_pyramid": 40_827_469}


def build_model(config: ModelConfig | None = None) -> FeatureInputs:
    """The backbone `config.name` built from `config` (default: the published HAN)."""
    cfg = config if config is not None else ModelConfig()
    if cfg.name not in BACKBONES:
        raise ValueError(f"train.model.name must be one of {sorted(BACKBONES)}, got {cfg.name!r}")
    return BACKBONES[cfg.name](cfg)


def backbone_name(model: nn.Module) -> str:
    """The `train.model.name` of a built backbone."""
    for name, cls in BACKBONES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a vaplan backbone")


__all__ = ["BACKBONES", "HAN", "HANOutput", "HybridAttentionLayer", "MGN", "MMPyramid",
           "REFERENCE_PARAMETERS", "backbone_name", "build_model", "count_parameters"]
