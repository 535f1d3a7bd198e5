"""`PipelineConfig`: one tracked VAPLAN run (the experiment plus where and how it is tracked)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vaplan.config import ExperimentConfig, apply_overrides, get_preset

STEP_NAMES = ("generate_labels", "train", "denoise", "retrain", "evaluate", "register")


@dataclass(frozen=True)
class PipelineConfig:
    """A tracked run of labels -> train -> denoise -> retrain -> evaluate -> register.

    experiment:      the method's configuration (logged, flattened, as the run's params)
    preset:          name of the preset it came from (a tag, for the record)
    experiment_name: MLflow experiment that holds the parent run and its child runs
    tracking_uri:    None = MLFLOW_TRACKING_URI or the embedded SQLite store under ./mlruns
    model_name:      registered model that receives a new version per run
    promote_metric:  the run metric the promotion gate compares (higher is better)
    work_dir:        local folder for step outputs; "" = a temporary folder per run
    run_name:        name of the parent run ("" = MLflow picks one)
    register:        False skips the register step (e.g. for sweeps)
    reuse:           False recomputes every step even when an earlier run has its output
    timeline_videos: how many val videos the timeline plots show
    progress:        show step names and the trainer's progress bars
    """

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    preset: str = ""
    experiment_name: str = "vaplan"
    tracking_uri: str | None = None
    model_name: str = "vaplan-han"
    promote_metric: str = "val/seg_type"
    work_dir: str = ""
    run_name: str = ""
    register: bool = True
    reuse: bool = True
    timeline_videos: int = 3
    progress: bool = True


def pipeline_config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = (),
                                **options) -> PipelineConfig:
    """A PipelineConfig from a named vaplan preset plus "section.option=value" overrides."""
    experiment = apply_overrides(get_preset(preset), list(overrides))
    return PipelineConfig(experiment=experiment, preset=preset, **options)
