"""The tracked AVE pipeline (`vaplan run --preset ave-sim`, docs/ave.md "Tracked pipeline"): one
parent run, a child run per step through `pipelines.reuse.run_step` (the LLP pipeline's reuse
and crash recovery) — generate_labels -> train -> evaluate -> register — and the registered
model `vaplan-<model.name>` (vaplan-avel, vaplan-psp, vaplan-cmbs), gated by the one promotion
gate (`registry.apply_promotion_gate`, per-video val accuracy). The library side is
`vaplan.ave.experiment`; this module is also the registered pyfunc's models-from-code file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

import vaplan
from pipelines import commands, registry, tracking
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import VIDEO_SCORES  # here (N,) per-video val accuracy
from vaplan.ave import experiment as ave
from vaplan.ave.config import PROMOTE_METRIC, AveExperimentConfig
from vaplan.config import NAME, Checked, flatten, from_dict, option, to_dict
from vaplan.errors import UserError
from vaplan.io import read_json, write_json
from vaplan.metrics import ave_segment_accuracy
from vaplan.report import flat_scores
from vaplan.runs import short_name, stop_on_signals
from vaplan.store_uri import parse_model_uri, ui_links

LABELS, THRESHOLDS = "labels/plg.parquet", "labels/thresholds.json"
CHECKPOINT, SCORES = "checkpoint/ave.pt", "scores.json"
EVALUATE_FORMAT = 2  # 2: also writes VIDEO_SCORES
STEP_NAMES = ("generate_labels", "train", "evaluate", "register")
REGISTER_FORMAT = 2  # 2: gates on the evaluate step's VIDEO_SCORES
AfterStep = Callable[[str, StepResult], None]


@dataclass(frozen=True)
class AveRun(Checked):
    """A tracked AVE run: the experiment plus where and how it is tracked (as
    pipelines.config.PipelineConfig; model_name None = `vaplan-<model.name>`)."""

    SECTION = ""
    experiment: AveExperimentConfig = field(default_factory=AveExperimentConfig)
    preset: str = ""
    overrides: tuple[str, ...] = ()
    experiment_name: str = option("vaplan", NAME)
    tracking_uri: str | None = None
    model_name: str | None = option(None, NAME)
    run_name: str = ""
    work_dir: str = ""
    register: bool = True
    reuse: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model_name is None:
            object.__setattr__(self, "model_name", f"vaplan-{self.experiment.model.name}")
        super().__post_init__()


@dataclass
class AveResult:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_name: str = ""
    steps: dict[str, StepResult] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    registration: dict | None = None


# ---------------------------------------------------------------- steps


def generate_labels(ctx: StepContext, data, cfg: AveExperimentConfig) -> StepResult:
    """PLG's AV segment classes of train and val; thresholds (given or searched on val) and
    the label quality on val: plg/val/accuracy, plg/val/seg, plg/val/event."""
    def compute(out: Path, log: StepLog) -> None:
        labels = ave.make_labels(cfg, data)
        ave.write_labels(out / LABELS, data, labels)  # Parquet, as LLP's label tables
        write_json(out / THRESHOLDS, {"visual": labels.visual_threshold,
                                      "audio": labels.audio_threshold,
                                      "searched_on_val": labels.searched})
        log.scores({"visual_threshold": labels.visual_threshold,
                    "audio_threshold": labels.audio_threshold}, prefix="plg/")
        log.scores(labels.quality, prefix="plg/val/")

    return run_step(ctx, "generate_labels", cfg.plg, {"dataset": data.digest}, compute)


def train(ctx: StepContext, data, cfg: AveExperimentConfig, labels: StepResult) -> StepResult:
    """The model's weak loss (+ the PLG segment objective when plg.use); the best val epoch's
    checkpoint, carrying the experiment config."""
    train_cfg = cfg.effective_train()
    inputs = {"dataset": data.digest, **({"labels": labels.digest(LABELS)} if cfg.plg.use else {})}

    def compute(out: Path, log: StepLog) -> None:
        pseudo = (ave.read_labels(labels.path(LABELS), "train", data.train.annotations)
                  if cfg.plg.use else None)
        result = ave.train_model(cfg, data, pseudo, lambda epoch: log.scores(
            epoch.metrics(), step=epoch.epoch))
        ave.save_checkpoint(out / CHECKPOINT, result.model, cfg, {
            "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "epochs_completed": len(result.history), "dataset": data.digest,
            "labels": inputs.get("labels")})
        log.scores({"best_epoch": result.best_epoch,
                    "best/val/accuracy": result.best_val_accuracy})

    return run_step(ctx, "train", {"model": cfg.model, "train": train_cfg}, inputs, compute,
                    params={**section_params(cfg.model, train_cfg), "plg.use": cfg.plg.use})


def evaluate(ctx: StepContext, data, model: StepResult) -> StepResult:
    """Segment accuracy on val and test (val/accuracy, test/accuracy) and val's per-video
    accuracy for the register step's gate, from one prediction per split."""
    def compute(out: Path, log: StepLog) -> None:
        net, _, _ = ave.load_checkpoint(model.path(CHECKPOINT))
        scores, val_videos = ave.scores_and_val_videos(net, data)
        for name, values in scores.items():
            log.scores(values, prefix=f"{name}/")
        write_json(out / SCORES, scores)
        write_json(out / VIDEO_SCORES, val_videos.tolist())

    inputs = {"dataset": data.digest, "checkpoint": model.digest(CHECKPOINT)}
    return run_step(ctx, "evaluate", {"format": EVALUATE_FORMAT}, inputs, compute, params={})


def _ave_scores(checkpoint: Path) -> Callable:
    """`registry.champion_scorer`'s `load` for an AVE champion: (data, split) -> (N,) per-video
    segment accuracy."""
    net, _, _ = ave.load_checkpoint(checkpoint)
    return lambda data, split: ave.video_scores(net, data, split)


def register(ctx: StepContext, data, cfg: AveExperimentConfig, model_name: str,
             model: StepResult, labels: StepResult, evaluation: StepResult) -> StepResult:
    """A new `model_name` version (the pyfunc below + checkpoint, PLG labels, config), gated
    against the champion on per-video val accuracy (paired bootstrap, `registry.*`)."""
    def compute(out: Path, log: StepLog) -> None:
        scores = read_json(evaluation.path(SCORES))
        candidate = np.asarray(read_json(evaluation.path(VIDEO_SCORES)))  # (N,) val
        config_json = write_json(out / "config.json", {  # task: commands.read_pulled_config
            "task": "ave", "experiment": to_dict(cfg), "model_name": model_name,
            "dataset": {"digest": data.digest, "description": data.description}})
        notes = (f"AVE segment accuracy: val {scores['val']['accuracy']:.2f}, test "
                 f"{scores['test']['accuracy']:.2f}; {cfg.model.name} "
                 f"{'+ PLG' if cfg.plg.use else 'weak baseline (no PLG)'}")
        files = {"checkpoint": model.path(CHECKPOINT), "labels": labels.path(LABELS),
                 "config": config_json}
        record = registry.register_version(
            out, model_name, files, scores, candidate,
            registry.champion_scorer(model_name, data, "val", load=_ave_scores),
            promote_metric=PROMOTE_METRIC, cfg=cfg.registry, backbone=cfg.model.name,
            dataset=data, run_id=ctx.parent_run_id, notes=notes,
            entry=Path(__file__), signature=model_signature())
        log.scores(registry.decision_metrics(record))

    inputs = {"dataset": data.digest, "checkpoint": model.digest(CHECKPOINT),
              "labels": labels.digest(LABELS), "scores": evaluation.digest(SCORES),
              "video_scores": evaluation.digest(VIDEO_SCORES)}
    config = {"model_name": model_name, "experiment": cfg, "format": REGISTER_FORMAT}
    return run_step(ctx, "register", config, inputs, compute,
                    params={**section_params(cfg.registry), "pipeline.model_name": model_name},
                    check_reuse=registry.still_registered)


# ---------------------------------------------------------------- the run


def run(cfg: AveRun, data=None, after_step: AfterStep | None = None) -> AveResult:
    """The whole AVE pipeline under one parent run; rerunning reuses every finished step.
    SIGTERM/SIGINT end the open runs KILLED (`vaplan.runs.stop_on_signals`)."""
    with stop_on_signals():
        return _run(cfg, data, after_step)


def _run(cfg: AveRun, data, after_step: AfterStep | None) -> AveResult:
    exp, say = cfg.experiment, (print if cfg.progress else (lambda *a, **k: None))
    uri = tracking.use_tracking_uri(cfg.tracking_uri)
    experiment_id = tracking.prepare_store(uri, cfg.experiment_name)
    data = data if data is not None else ave.load_data(exp, progress=cfg.progress)
    say(f"[ave] {data.description} (digest {data.digest[:12]}); store {uri}")
    tags = {"vaplan.preset": cfg.preset, "vaplan.version": vaplan.__version__,
            "vaplan.dataset_digest": data.digest, "vaplan.pipeline": "parent",
            "vaplan.task": "ave"}
    with tracking.start_run(experiment_id, run_name=cfg.run_name or cfg.preset or None,
                            tags=tags) as parent, \
            tempfile.TemporaryDirectory(prefix="vaplan-ave-") as tmp:
        result = AveResult(uri, experiment_id, parent.info.run_id)
        result.run_name = cfg.run_name or short_name(cfg.preset or "ave", *cfg.overrides,
                                                     run_id=result.parent_run_id)
        tracking.client().update_run(result.parent_run_id, name=result.run_name)
        tracking.log_flat_params({**flatten(exp), "data.digest": data.digest,
                                  "data.description": data.description,
                                  "data.num_train": len(data.train),
                                  "data.num_background": len(data.background),
                                  "data.num_val": len(data.val), "data.num_test": len(data.test),
                                  "pipeline.preset": cfg.preset,
                                  "pipeline.model_name": cfg.model_name,
                                  "pipeline.promote_metric": PROMOTE_METRIC})
        ctx = StepContext(experiment_id, result.parent_run_id, Path(cfg.work_dir or tmp),
                          cfg.reuse, cfg.progress)
        steps = result.steps
        plan = [("generate_labels", lambda: generate_labels(ctx, data, exp)),
                ("train", lambda: train(ctx, data, exp, steps["generate_labels"])),
                ("evaluate", lambda: evaluate(ctx, data, steps["train"])),
                ("register", lambda: register(ctx, data, exp, cfg.model_name, steps["train"],
                                              steps["generate_labels"], steps["evaluate"]))]
        plan = plan if cfg.register else plan[:-1]
        for index, (name, step) in enumerate(plan, start=1):
            began = time.perf_counter()
            steps[name] = step()
            say(f"[ave] step {index}/{len(plan)} {name}: "
                f"{'reused' if steps[name].reused else 'done'} in "
                f"{time.perf_counter() - began:.1f}s (run {steps[name].run_id})")
            if after_step is not None:
                after_step(name, steps[name])
        _summarize(result)
    return result


def _summarize(result: AveResult) -> None:
    """The headline numbers and the registration onto the parent run."""
    steps = result.steps
    tracking.log_scores({k: v for k, v in steps["generate_labels"].metrics.items()
                         if k.startswith("plg/")})
    result.scores = read_json(steps["evaluate"].path(SCORES))
    tracking.log_scores(flat_scores(result.scores))
    lines = [f"**{result.run_name}** (AVE, docs/ave.md)", "",
             f"segment accuracy: val {result.scores['val']['accuracy']:.2f}, "
             f"test {result.scores['test']['accuracy']:.2f}"]
    if "register" in steps:
        result.registration = read_json(steps["register"].path(registry.RECORD))
        decision = result.registration["decision"]
        tracking.set_tags({"vaplan.model_version": result.registration["version"],
                           "vaplan.promotion": "promoted" if decision["promoted"] else "kept",
                           "vaplan.promotion.reason": decision["reason"]})
        lines += ["", result.registration["description"]]
    tracking.set_description("\n".join(lines))


def run_and_check(cfg: AveRun) -> dict:
    """`vaplan run --preset ave-sim`: the pipeline, then the champion pulled back from the
    registry and re-evaluated on test next to the accuracy logged for it; the UI links."""
    os.environ.setdefault(commands.PROGRESS_BAR, "false")  # keep the output readable
    data = ave.load_data(cfg.experiment, progress=cfg.progress)
    result = run(cfg, data)
    summary = {"parent_run_id": result.parent_run_id, "run_name": result.run_name,
               "scores": result.scores}
    if result.registration is not None:
        decision, version = result.registration["decision"], result.registration["version"]
        print(f"registered {cfg.model_name} v{version}: "
              f"{'promoted to champion' if decision['promoted'] else 'kept as candidate'} "
              f"({decision['reason']})")
        with commands.no_progress_bar():
            champion = registry.resolve_version(cfg.model_name)
            logged = registry.version_record(champion).get("scores", {}).get("test", {})
            again = evaluate_registered(f"models:/{cfg.model_name}@champion", "test",
                                        result.tracking_uri, data=data)
        drift = abs(again["accuracy"] - logged.get("accuracy", float("nan")))
        print(f"{cfg.model_name}@champion (v{champion.version}) test accuracy: re-evaluated "
              f"{again['accuracy']:.2f}, logged {logged.get('accuracy', float('nan')):.2f} "
              f"(difference {drift:.2e})")
        summary["drift"] = drift
    print(ui_links(result.tracking_uri, result.experiment_id, result.parent_run_id))
    return summary


# ---------------------------------------------------------------- the registered model


@tracking.auth_errors()
def is_ave_model(model_uri: str, tracking_uri: str | None = None) -> bool:
    """Whether a registered version is an AVE model (its `vaplan.backbone` tag)."""
    from vaplan.ave import AVE_MODELS

    found = registry.open_version(tracking_uri, *parse_model_uri(model_uri))
    return found.tags.get(registry.BACKBONE_TAG) in AVE_MODELS


@tracking.auth_errors()
def evaluate_registered(model_uri: str, split: str = "test", tracking_uri: str | None = None,
                        data=None) -> dict[str, float]:
    """Load a registered AVE pyfunc (files checked against their sha256 first), predict
    `split` of the dataset its config records, return {"accuracy": segment accuracy}."""
    found = registry.open_version(tracking_uri, *parse_model_uri(model_uri))
    with tempfile.TemporaryDirectory(prefix="vaplan-evaluate-") as tmp:
        local, _ = commands._download_verified(found.name, found, Path(tmp))
        model = mlflow.pyfunc.load_model(str(local))
    record = model.unwrap_python_model().record
    if data is None:
        data = ave.load_data(from_dict(AveExperimentConfig, record["experiment"]))
    if data.digest != record["dataset"]["digest"]:
        raise UserError(f"{model_uri}: the dataset rebuilt from its config has digest "
                        f"{data.digest[:12]}, not the recorded {record['dataset']['digest'][:12]}")
    if split not in ("val", "test"):
        raise UserError(f"--split must be val or test for an AVE model, got {split!r}")
    part = getattr(data, split)
    frame = model.predict(ave.model_input(part.annotations.video_ids, part.audio, part.visual))
    classes = ave.classes_from_frame(frame, part.annotations.video_ids)
    return {"accuracy": ave_segment_accuracy(classes, part.annotations.truth)}


def model_signature():
    """Outputs and params of the AVE pyfunc's `predict` (inputs: audio and visual features)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema([ColSpec("string", "video_id"), ColSpec("long", "segment"),
                      ColSpec("long", "event"), ColSpec("string", "event_name")])
    return ModelSignature(inputs=None, outputs=outputs,
                          params=ParamSchema([ParamSpec("batch_size", "long", 256)]))


class AveModel(PythonModel):
    """A weak AVE model (AVEL, PSP or CMBS): per-segment classes from features (29 = 28 events
    + background), `vaplan.ave.experiment.predictions_frame`."""

    def load_context(self, context) -> None:
        from vaplan.serving import verify_integrity_file

        verify_integrity_file(context.artifacts, "the AVE model")
        self.model, self.experiment, self.extra = ave.load_checkpoint(
            context.artifacts["checkpoint"])
        with open(context.artifacts["config"]) as handle:
            self.record = json.load(handle)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from vaplan.ave.train import predict_segments

        ids, features = ave.features_from_input(model_input)
        batch = int((params or {}).get("batch_size", 256))
        return ave.predictions_frame(ids, predict_segments(self.model, features,
                                                           batch_size=batch))


if __name__.startswith("code_model_"):  # MLflow executes this file as the model's code
    mlflow.models.set_model(AveModel())
