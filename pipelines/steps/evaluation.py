"""Final steps: `evaluate` the retrained model on val and test, `register` it and promote."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import mlflow

from pipelines import commands, registry, report
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import CHECKPOINT, DENOISED_FILE, PLD_FILE, PLG_FILE
from pipelines.steps.labels import CHOICE_FILE
from vaplan import plots
from vaplan.config import ExperimentConfig, to_dict
from vaplan.data.types import Dataset, SplitData
from vaplan.errors import UserError
from vaplan.gate import feature_mismatch, gate_score_key, predicted_events, video_scores
from vaplan.io import read_json, write_json
from vaplan.label_table import split_labels
from vaplan.report import flat_scores, per_class_table, results_markdown
from vaplan.train import check_trained, evaluate_model, load_checkpoint, predict

REGISTER_FORMAT = 3  # 3: registration.json also holds the scores, quality and description

EVAL_SPLITS = ("val", "test")


def evaluate(ctx: StepContext, dataset: Dataset, model: StepResult, plg: StepResult,
             pld: StepResult, timeline_videos: int = 3) -> StepResult:
    """The ten scores on val and test (`val/seg_type`, ...), per-class table, timelines."""
    def compute(out: Path, log: StepLog) -> None:
        han, _, _ = load_checkpoint(model.path(CHECKPOINT))
        preds = {name: predict(han, getattr(dataset, name).features) for name in EVAL_SPLITS}
        scores = {name: evaluate_model(preds[name], getattr(dataset, name))
                  for name in EVAL_SPLITS}
        for name, values in scores.items():
            log.scores(values, prefix=f"{name}/")
        write_json(out / "scores.json", scores)
        val = dataset.val
        plg_val, pld_val = (split_labels(step.path(name), val)  # PLD: its raw output
                            for step, name in ((plg, PLG_FILE), (pld, DENOISED_FILE)))
        events = predicted_events(preds["val"].prob_seg, preds["val"].prob_video)  # A, V
        table = per_class_table(val, plg_val, pld_val, *events)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "tables/per_class_val.csv", index=False)
        mlflow.log_table(table, "tables/per_class_val.json")
        plots.timelines_figure(val, plg_val, pld_val, *events, timeline_videos,
                               out / "plots/timelines_val.png")

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT),
              "plg": plg.digest(PLG_FILE), "pld": pld.digest(DENOISED_FILE)}
    return run_step(ctx, "evaluate", {"timeline_videos": timeline_videos}, inputs, compute,
                    params={"pipeline.timeline_videos": timeline_videos})


def champion_scorer(model_name: str, split: SplitData, key: str) -> registry.ChampionScores:
    """champion version -> its per-video `key` scores on `split` (the candidate's val videos).

    Pulls the version's checkpoint from the registry (digests verified); a checkpoint that
    cannot be loaded or fed these features raises registry.IncomparableChampion.
    """
    def score(version: str):  # -> (N,) per-video scores
        with tempfile.TemporaryDirectory(prefix="vaplan-champion-") as tmp:
            try:
                folder = commands.pull(model_name, tmp, version=version,
                                       tracking_uri=mlflow.get_tracking_uri())
                han, cfg, _ = load_checkpoint(folder / "checkpoint.pt")
            except (UserError, LookupError, OSError, ValueError) as err:
                raise registry.IncomparableChampion(
                    f"its checkpoint could not be loaded ({err})") from err
        mismatch = feature_mismatch(cfg.model, split.features)
        if mismatch:
            raise registry.IncomparableChampion(
                f"its checkpoint cannot take these features: it expects {mismatch}")
        return video_scores(han, split, key)
    return score


def register(ctx: StepContext, dataset: Dataset, experiment: ExperimentConfig, model_name: str,
             promote_metric: str, model: StepResult, pld: StepResult, evaluation: StepResult,
             quality: Mapping[str, float] | None = None) -> StepResult:
    """Register the retrained HAN + the labels it trained on + config as a new `model_name`
    version; gate it against the champion (paired bootstrap over val videos).

    The version keeps few tags (`vaplan.dataset_digest`, the gate's, the sha256 digests);
    scores, label `quality` (`plg|pld/val/<modality>/average`, for the description), the label
    choice and the decision go to `registration.json` in the version's run."""
    key = gate_score_key(promote_metric)

    def compute(out: Path, log: StepLog) -> None:
        split_scores = read_json(evaluation.path("scores.json"))
        scores = flat_scores(split_scores)
        if promote_metric not in scores:
            raise ValueError(f"promote_metric {promote_metric!r} is not a logged score; "
                             f"expected one of {sorted(scores)}")
        han, _, extra = load_checkpoint(model.path(CHECKPOINT))
        check_trained(han, extra, f"the retrained checkpoint {model.path(CHECKPOINT)}")
        candidate = video_scores(han, dataset.val, key)  # (N,), mean = scores[promote_metric]
        config_json = write_json(out / "config.json", {
            "experiment": to_dict(experiment), "model_name": model_name,
            "dataset": {"digest": dataset.digest, "description": dataset.description}})
        info = registry.log_han_model(model_name, model.path(CHECKPOINT), pld.path(PLD_FILE),
                                      config_json, scores,
                                      {"dataset_digest": dataset.digest,
                                       "parent_run_id": ctx.parent_run_id})
        version = str(info.registered_model_version)
        registry.tag_version(model_name, version, dataset.digest, experiment.train.model.name)
        labels = read_json(pld.path(CHOICE_FILE))
        notes = results_markdown(split_scores, dict(quality or {}), labels)
        decision = registry.apply_promotion_gate(
            model_name, version, candidate, promote_metric, experiment.registry,
            champion_scorer(model_name, dataset.val, key), notes=notes)
        write_json(out / registry.RECORD, {
            "model_name": model_name, "version": version,
            "model_uri": f"models:/{model_name}/{version}", "logged_model_uri": info.model_uri,
            "decision": decision.to_dict(), "labels": labels, "scores": split_scores,
            "quality": dict(quality or {}), "parent_run_id": ctx.parent_run_id,
            "dataset": {"digest": dataset.digest, "description": dataset.description},
            "description": decision.description() + "\n\n" + notes})
        report.write_version_report(out, ctx.parent_run_id, ctx.experiment_id)
        log.scores({"registry/version": int(version), "registry/promoted": int(decision.promoted),
                    "registry/improvement": decision.improvement,
                    "registry/improvement_low": decision.low,
                    "registry/improvement_high": decision.high})

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT),
              "labels": pld.digest(PLD_FILE), "label_choice": pld.digest(CHOICE_FILE),
              "scores": evaluation.digest("scores.json")}
    config = {"model_name": model_name, "promote_metric": promote_metric,
              "experiment": experiment, "format": REGISTER_FORMAT}
    params = {**section_params(experiment.registry), "pipeline.model_name": model_name,
              "pipeline.promote_metric": promote_metric}
    return run_step(ctx, "register", config, inputs, compute, params=params,
                    check_reuse=_still_registered)


def _still_registered(out: Path) -> bool:
    """Reuse a registration only while its version still exists in the registry."""
    record = read_json(out / "registration.json")
    try:
        registry.resolve_version(record["model_name"], version=record["version"])
    except Exception:
        return False
    return True
