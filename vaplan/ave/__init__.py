"""Weakly-supervised audio-visual event localization on AVE (docs/ave.md).

`vaplan.data.ave` holds the annotations; this package holds the models and their training:
`build_ave_model(name)` for name in `AVE_MODELS` (AVEL, PSP, CMBS — one forward contract,
`vaplan.ave.avel.AveOutput`) and each model's weak recipe `AVE_RECIPES[name]` (an
`AveTrainConfig` for `vaplan.ave.train.train_weak`, the one training loop of all three).
"""

from __future__ import annotations

from torch import nn

from vaplan.ave.avel import AVELWeak
from vaplan.ave.cmbs import CMBSWeak
from vaplan.ave.psp import PSPWeak
from vaplan.ave.train import AVE_RECIPES, AveTrainConfig
from vaplan.errors import ConfigError

AVE_MODEL_CLASSES: dict[str, type[nn.Module]] = {"avel": AVELWeak, "psp": PSPWeak,
                                                 "cmbs": CMBSWeak}
AVE_MODELS: tuple[str, ...] = tuple(AVE_MODEL_CLASSES)


def check_model_name(name: str) -> str:
    """`name` if it is one of AVE_MODELS, else a ConfigError naming the choices."""
    if name not in AVE_MODEL_CLASSES:
        raise ConfigError(f"unknown AVE model {name!r}; expected one of {list(AVE_MODELS)}")
    return name


def build_ave_model(name: str, **kwargs) -> nn.Module:
    """The weak model `name` at its reference's widths (keyword arguments override them)."""
    return AVE_MODEL_CLASSES[check_model_name(name)](**kwargs)


def ave_recipe(name: str) -> AveTrainConfig:
    """The weak training recipe of model `name` (from its reference main; docs/ave.md)."""
    return AVE_RECIPES[check_model_name(name)]


__all__ = ["AVE_MODELS", "AVE_RECIPES", "AveTrainConfig", "ave_recipe", "build_ave_model"]
