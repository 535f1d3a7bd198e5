"""Final steps: `evaluate` the retrained model on val and test, `register` it and promote."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import mlflow

from pipelines import registry, report
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import (CHECKPOINT, DENOISED_FILE, PLD_FILE, PLG_FILE,
                                   VIDEO_SCORES)
from pipelines.steps.labels import CHOICE_FILE
from vaplan import plots
from vaplan.config import ExperimentConfig, to_dict
from vaplan.data.types import Dataset
from vaplan.gate import gate_score_key, predicted_events
from vaplan.io import read_json, write_json
from vaplan.label_table import split_labels
from vaplan.metrics import avvp_video_scores
from vaplan.report import flat_scores, per_class_table, results_markdown
from vaplan.train import check_trained, evaluate_model, load_checkpoint, predict

REGISTER_FORMAT = 4  # 4: the gate's candidate scores come from the evaluate step
EVALUATE_FORMAT = 2  # 2: also the per-video val scores (VIDEO_SCORES)
EVAL_SPLITS = ("val", "test")


def evaluate(ctx: StepContext, dataset: Dataset, model: StepResult, plg: StepResult,
             pld: StepResult | None, timeline_videos: int = 3) -> StepResult:
    """The ten scores on val and test (`val/seg_type`, ...), the per-video val scores the gate
    resamples (VIDEO_SCORES), per-class table, timelines: one prediction per split."""
    def compute(out: Path, log: StepLog) -> None:
        han, _, _ = load_checkpoint(model.path(CHECKPOINT))
        preds = {name: predict(han, getattr(dataset, name).features) for name in EVAL_SPLITS}
        scores = {name: evaluate_model(preds[name], getattr(dataset, name))
                  for name in EVAL_SPLITS}
        for name, values in scores.items():
            log.scores(values, prefix=f"{name}/")
        write_json(out / "scores.json", scores)
        val = dataset.val
        events = predicted_events(preds["val"].prob_seg, preds["val"].prob_video)  # A, V
        write_json(out / VIDEO_SCORES, {key: values.tolist() for key, values in
                                        avvp_video_scores(*events, val.gt_audio,
                                                          val.gt_visual).items()})
        plg_val = split_labels(plg.path(PLG_FILE), val)  # PLD: its raw output; no PLD
        pld_val = plg_val if pld is None else split_labels(pld.path(DENOISED_FILE), val)
        table = per_class_table(val, plg_val, pld_val, *events)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "tables/per_class_val.csv", index=False)
        mlflow.log_table(table, "tables/per_class_val.json")
        plots.timelines_figure(val, plg_val, pld_val, *events, timeline_videos,
                               out / "plots/timelines_val.png")

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT),
              "plg": plg.digest(PLG_FILE),  # labels.source without a denoise step: no "pld"
              **({} if pld is None else {"pld": pld.digest(DENOISED_FILE)})}
    return run_step(ctx, "evaluate", {"timeline_videos": timeline_videos,
                                      "format": EVALUATE_FORMAT}, inputs, compute,
                    params={"pipeline.timeline_videos": timeline_videos})


def register(ctx: StepContext, dataset: Dataset, experiment: ExperimentConfig, model_name: str,
             promote_metric: str, model: StepResult, pld: StepResult, evaluation: StepResult,
             quality: Mapping[str, float] | None = None, labels_file: str = PLD_FILE,
             choice: dict | None = None) -> StepResult:
    """Register the retrained HAN + the labels it trained on + config as a new `model_name`
    version; gate it against the champion (paired bootstrap over val videos) with the
    evaluate step's per-video val scores (`registry.register_version`), and its report.

    The version keeps few tags (`vaplan.dataset_digest`, the gate's, the sha256 digests);
    scores, label `quality` (`plg|pld/val/<modality>/average`, for the description), the label
    choice and the decision go to `registration.json` in the version's run. `pld` holds the
    labels the model trained on (`labels_file`) and, unless `choice` (the labels record of a
    labels.source without a denoise step) is given, their choice (CHOICE_FILE)."""
    key = gate_score_key(promote_metric)

    def compute(out: Path, log: StepLog) -> None:
        split_scores = read_json(evaluation.path("scores.json"))
        if promote_metric not in flat_scores(split_scores):
            raise ValueError(f"promote_metric {promote_metric!r} is not a logged score; "
                             f"expected one of {sorted(flat_scores(split_scores))}")
        han, _, extra = load_checkpoint(model.path(CHECKPOINT))
        check_trained(han, extra, f"the retrained checkpoint {model.path(CHECKPOINT)}")
        config_json = write_json(out / "config.json", {
            "experiment": to_dict(experiment), "model_name": model_name,
            "dataset": {"digest": dataset.digest, "description": dataset.description}})
        files = {"checkpoint": model.path(CHECKPOINT), "labels": pld.path(labels_file),
                 "config": config_json}
        labels = choice if choice is not None else read_json(pld.path(CHOICE_FILE))
        measured = dict(quality or {})
        record = registry.register_version(
            out, model_name, files, split_scores,
            read_json(evaluation.path(VIDEO_SCORES))[key],  # (N,), mean: promote_metric
            registry.champion_scorer(model_name, dataset.val, key),
            promote_metric=promote_metric, cfg=experiment.registry,
            backbone=experiment.train.model.name, dataset=dataset, run_id=ctx.parent_run_id,
            notes=results_markdown(split_scores, measured, labels),
            record={"labels": labels, "quality": measured})
        report.write_version_report(out, ctx.parent_run_id, ctx.experiment_id)
        log.scores(registry.decision_metrics(record))

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT),
              "labels": pld.digest(labels_file),
              "label_choice": pld.digest(CHOICE_FILE) if choice is None else choice["source"],
              "scores": evaluation.digest("scores.json"),
              "video_scores": evaluation.digest(VIDEO_SCORES)}
    config = {"model_name": model_name, "promote_metric": promote_metric,
              "experiment": experiment, "format": REGISTER_FORMAT}
    params = {**section_params(experiment.registry), "pipeline.model_name": model_name,
              "pipeline.promote_metric": promote_metric}
    return run_step(ctx, "register", config, inputs, compute, params=params,
                    check_reuse=registry.still_registered)

