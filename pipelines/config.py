"""`PipelineConfig`: one tracked VAPLAN run (the experiment plus where and how it is tracked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from vaplan.config import (NAME, Checked, ExperimentConfig, configure, get_preset, integer,
                           one_of, option, validate_experiment)
from vaplan.metrics import SCORE_KEYS

STEP_NAMES = ("generate_labels", "train", "denoise", "retrain", "evaluate", "register")
# The steps of each `labels.source` (docs/pipelines.md "Label sources"); "pld" is STEP_NAMES.
SOURCE_STEPS = {
    "pld": STEP_NAMES,
    "plg": ("generate_labels", "train", "evaluate", "register"),
    "video": ("generate_labels", "train", "evaluate", "register"),
    "ma": ("generate_labels", "train", "ma_labels", "retrain", "evaluate", "register"),
}
PROMOTE_METRICS = tuple(f"val/{key}" for key in SCORE_KEYS)  # the gate resamples val videos


@dataclass(frozen=True)
class PipelineConfig(Checked):
    """A tracked run of labels -> train -> denoise -> retrain -> evaluate -> register (the
    steps of `experiment.labels.source`: SOURCE_STEPS).

    experiment:      the method's configuration (logged, flattened, as the run's params)
    preset:          name of the preset it came from (a tag, for the record)
    overrides:       the "section.option=value" strings applied to it (for the run's name)
    experiment_name: MLflow experiment that holds the parent run and its child runs
    tracking_uri:    None = MLFLOW_TRACKING_URI or the embedded SQLite store under ./mlruns
    model_name:      registered model that receives a new version per run; None (the
                     default) = one per backbone, `default_model_name(train.model.name)`:
                     vaplan-han, vaplan-mgn, vaplan-mm-pyramid (docs/backbones.md)
    promote_metric:  the run metric the promotion gate compares (higher is better)
    work_dir:        local folder for step outputs; "" = a temporary folder per run
    run_name:        name of the parent run ("" = "<preset> <overrides> <run id[:4]>")
    register:        False skips the register step (e.g. for sweeps)
    reuse:           False recomputes every step even when an earlier run has its output
    timeline_videos: how many val videos the timeline plots show
    progress:        show step names and the trainer's progress bars

    Every field is checked like the vaplan configs (`vaplan.config.check_fields`: types, a
    non-empty experiment_name/model_name, promote_metric one of val/<score>, timeline_videos
    >= 0) and the experiment by `vaplan.config.validate_experiment` (options that depend on
    each other), so a bad configuration is refused before any MLflow run exists.
    """

    SECTION: ClassVar[str] = ""  # its options are named as on the command line

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    preset: str = ""
    overrides: tuple[str, ...] = ()
    experiment_name: str = option("vaplan", NAME)
    tracking_uri: str | None = None
    model_name: str | None = option(None, NAME)  # None: default_model_name(the backbone)
    promote_metric: str = option("val/seg_type", one_of(PROMOTE_METRICS))
    work_dir: str = ""
    run_name: str = ""
    register: bool = True
    reuse: bool = True
    timeline_videos: int = option(3, integer(0))
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model_name is None:
            object.__setattr__(self, "model_name",
                               default_model_name(self.experiment.train.model.name))
        super().__post_init__()
        validate_experiment(self.experiment)


def default_model_name(backbone: str) -> str:
    """The registered model of a backbone's versions: "han" -> "vaplan-han", "mm_pyramid" ->
    "vaplan-mm-pyramid" (one registered model per backbone, each with its own champion)."""
    return f"vaplan-{backbone.replace('_', '-')}"


def pipeline_config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = (),
                                **options) -> PipelineConfig:
    """A PipelineConfig from a named vaplan preset plus "section.option=value" overrides
    (`vaplan.config.configure`: the backbone's and label source's recipes fill the options
    the overrides do not set)."""
    experiment = configure(get_preset(preset), list(overrides))
    return PipelineConfig(experiment=experiment, preset=preset, overrides=tuple(overrides),
                          **options)
