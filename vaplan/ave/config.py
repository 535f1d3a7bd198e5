"""The AVE experiment's typed, frozen configuration (docs/ave.md "Tracked pipeline").

`AveExperimentConfig` is what one tracked AVE run (`pipelines.ave`) and one Table 9 unit need:
`data.sim.*` (AVE-sim, `vaplan.sim.ave.AveSimConfig`), `model.name` (avel | psp | cmbs),
`train.*` (the weak recipe, `vaplan.ave.train.AveTrainConfig`), `plg.*` (PLG's AV segment
labels: use, thresholds or their search on val, prompt sets) and `registry.*` (the one
promotion gate's options, `vaplan.config.RegistryConfig`). Options are named and checked as
the LLP experiment's are (`vaplan.config.apply_overrides`: one line naming the option).

Recipes: each model trains with its reference's recipe (`AVE_RECIPES`). `ave_experiment`
builds a preset + `--set` overrides; when `model.name` changes, every `train.*` option the
preset left at AVEL's recipe takes the chosen model's recipe, unless `--set` gives it
(`--set model.name=psp --set train.epochs=1`: PSP's batch 128 and BCE loss, one epoch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from vaplan.ave.train import AVE_RECIPES, AveTrainConfig
from vaplan.config import (PROBABILITY, Checked, RegistryConfig, apply_overrides, one_of,
                           option, preset_error)
from vaplan.errors import ConfigError
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS
from vaplan.sim.ave import AveSimConfig

AveModelName = Literal["avel", "psp", "cmbs"]
PROMOTE_METRIC = "val/accuracy"  # the gate compares per-video val segment accuracy


@dataclass(frozen=True)
class AveModelConfig(Checked):
    """Which weak model (`vaplan.ave.build_ave_model`, at its reference's widths)."""

    SECTION: ClassVar[str] = "model"

    name: AveModelName = "avel"


@dataclass(frozen=True)
class AveDataConfig(Checked):
    """Where the AVE data comes from: AVE-sim (`data.sim.*`; real AVE features: docs/ave.md)."""

    SECTION: ClassVar[str] = "data"

    sim: AveSimConfig = field(default_factory=AveSimConfig)


@dataclass(frozen=True)
class AvePLGConfig(Checked):
    """PLG for AVE: the AV segment label is the video's event where both teachers'
    thresholded labels carry it (`vaplan.ave.train.plg_segment_classes`).

    use:    train with the PLG segment objective (weight `train.plg_weight`); false = the
            weak baseline (labels are still made and their quality logged)
    search: pick (visual, audio) thresholds on **val** (`vaplan.ave.quality.search_thresholds`,
            grid 0.030..0.045); false = `visual_threshold` / `audio_threshold` as given
    """

    SECTION: ClassVar[str] = "plg"

    use: bool = True
    search: bool = True
    # searched on AVE-sim val, seeds 0 and 1 (docs/results.md "AVE-sim")
    visual_threshold: float = option(0.036, PROBABILITY)
    audio_threshold: float = option(0.0355, PROBABILITY)
    visual_prompt: str = option("VP1", one_of(VISUAL_PROMPTS, "the visual prompt sets"))
    audio_prompt: str = option("AP2", one_of(AUDIO_PROMPTS, "the audio prompt sets"))


@dataclass(frozen=True)
class AveExperimentConfig(Checked):
    """Everything one AVE run needs: data, model, weak training, PLG and the gate."""

    data: AveDataConfig = field(default_factory=AveDataConfig)
    model: AveModelConfig = field(default_factory=AveModelConfig)
    train: AveTrainConfig = field(default_factory=lambda: AVE_RECIPES["avel"])
    plg: AvePLGConfig = field(default_factory=AvePLGConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    def effective_train(self) -> AveTrainConfig:
        """The train section as trained: plg_weight 0 when plg.use is false (the baseline)."""
        return self.train if self.plg.use else dataclasses.replace(self.train, plg_weight=0.0)


def validate_ave_experiment(cfg: AveExperimentConfig) -> AveExperimentConfig:
    """Checks across options (run after the last override)."""
    if cfg.plg.use and cfg.train.plg_weight <= 0:
        raise ConfigError("plg.use=true trains with the PLG segment objective: set "
                          "train.plg_weight > 0 (e.g. 1.0), or plg.use=false for the baseline")
    return cfg


AVE_PRESETS: dict[str, AveExperimentConfig] = {
    # AVE-sim at full size (3,339 + 178 train videos, 402 val / 402 test) with AVEL's recipe
    # (250 epochs: a GPU run) and PLG's segment objective at weight 1.
    "ave-sim": AveExperimentConfig(train=dataclasses.replace(AVE_RECIPES["avel"],
                                                             plg_weight=1.0)),
}


def is_ave_preset(name: str) -> bool:
    return name in AVE_PRESETS


def with_model_recipe(cfg: AveExperimentConfig, name: str) -> AveExperimentConfig:
    """`cfg` with `model.name=name` and that model's recipe for every `train.*` option still at
    the current model's recipe (an option the preset changed, e.g. plg_weight, stays)."""
    if name not in AVE_RECIPES:
        raise ConfigError(f"model.name must be one of {list(AVE_RECIPES)}, got {name!r}")
    old, new = AVE_RECIPES[cfg.model.name], AVE_RECIPES[name]
    kept = {f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(AveTrainConfig)
            if getattr(cfg.train, f.name) != getattr(old, f.name)}
    return dataclasses.replace(cfg, model=AveModelConfig(name),
                               train=dataclasses.replace(new, **kept))


def ave_experiment(preset: str, overrides: list[str] | tuple[str, ...] = ()
                   ) -> AveExperimentConfig:
    """An AVE preset + "section.option=value" overrides, with the chosen model's recipe
    (module docstring); ConfigError (one line) on a bad preset, option or value."""
    if preset not in AVE_PRESETS:
        raise preset_error(preset, "AVE")
    base = AVE_PRESETS[preset]
    cfg = apply_overrides(base, list(overrides))  # every override checked once here
    if cfg.model.name != base.model.name:
        cfg = apply_overrides(with_model_recipe(base, cfg.model.name), list(overrides))
    return validate_ave_experiment(cfg)


def row_experiment(cfg: AveExperimentConfig, overrides: tuple[str, ...] | list[str], seed: int
                   ) -> AveExperimentConfig:
    """A Table 9 unit's config (vaplan.ablation "9"): `cfg` with the row's overrides (its
    model, `plg.use`) and `train.seed=seed`; the row's model takes its recipe as in
    `ave_experiment` (what `--set` or the preset changed stays)."""
    named = apply_overrides(cfg, list(overrides))
    return validate_ave_experiment(apply_overrides(
        with_model_recipe(cfg, named.model.name), [*overrides, f"train.seed={seed}"]))
