"""Final steps: `evaluate` the retrained model on val and test, `register` it and promote."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import mlflow
import numpy as np
import pandas as pd

from pipelines import commands, plots, registry, report, tracking
from pipelines.artifacts import read_json, read_labels, write_json
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import CHECKPOINT, DENOISED_FILE, PLD_FILE, PLG_FILE
from pipelines.steps.labels import CHOICE_FILE
from vaplan.categories import CLASSES
from vaplan.config import ExperimentConfig, ModelConfig, to_dict
from vaplan.data.types import Dataset, Features, PseudoLabels, SplitData
from vaplan.errors import UserError
from vaplan.metrics import SCORE_KEYS, avvp_video_scores, filter_by_video, per_class_f
from vaplan.train import Predictions, check_trained, evaluate_model, load_checkpoint, predict

REGISTER_FORMAT = 3  # 3: registration.json also holds the scores, quality and description

EVAL_SPLITS = ("val", "test")


def _val_labels(step: StepResult, name: str, val: SplitData) -> PseudoLabels:
    video_ids, labels = read_labels(step.path(name))["val"]
    if not np.array_equal(video_ids.astype(str), val.video_ids.astype(str)):
        raise ValueError(f"{step.path(name)}: val video ids do not match the dataset")
    return labels


def _events(preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Official protocol: (N,T,C) audio and visual events."""
    return (filter_by_video(preds.prob_seg[:, :, 0], preds.prob_video),
            filter_by_video(preds.prob_seg[:, :, 1], preds.prob_video))


def per_class_table(val: SplitData, plg: PseudoLabels, pld: PseudoLabels,
                    preds: Predictions) -> pd.DataFrame:
    """Per-class event-level F (percent) on val of PLG, PLD and the model, per modality."""
    pred_audio, pred_visual = _events(preds)
    table = {"class": list(CLASSES),
             "val_videos_audio": val.gt_audio.max(axis=1).sum(axis=0).astype(int),
             "val_videos_visual": val.gt_visual.max(axis=1).sum(axis=0).astype(int)}
    for name, audio, visual in (("plg", plg.seg_audio, plg.seg_visual),
                                ("pld", pld.seg_audio, pld.seg_visual),
                                ("model", pred_audio, pred_visual)):
        table[f"{name}_audio_event_f"] = per_class_f(audio, val.gt_audio)
        table[f"{name}_visual_event_f"] = per_class_f(visual, val.gt_visual)
    return pd.DataFrame(table).round(3)


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
        val, plg_val, pld_val = dataset.val, _val_labels(plg, PLG_FILE, dataset.val), \
            _val_labels(pld, DENOISED_FILE, dataset.val)  # raw PLD output: what PLD did
        table = per_class_table(val, plg_val, pld_val, preds["val"])
        (out / "tables").mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "tables/per_class_val.csv", index=False)
        mlflow.log_table(table, "tables/per_class_val.json")
        _timelines(out, val, plg_val, pld_val, preds["val"], timeline_videos)

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT),
              "plg": plg.digest(PLG_FILE), "pld": pld.digest(DENOISED_FILE)}
    return run_step(ctx, "evaluate", {"timeline_videos": timeline_videos}, inputs, compute,
                    params={"pipeline.timeline_videos": timeline_videos})


def _timelines(out: Path, val: SplitData, plg: PseudoLabels, pld: PseudoLabels,
               preds: Predictions, count: int) -> None:
    """Figs. 5-7: GT, PLG, PLD and prediction timelines of a few val videos, A and V."""
    if count <= 0:
        return
    pred_audio, pred_visual = _events(preds)
    sources = {"audio": {"GT": val.gt_audio, "PLG": plg.seg_audio, "PLD": pld.seg_audio,
                         "pred": pred_audio},
               "visual": {"GT": val.gt_visual, "PLG": plg.seg_visual, "PLD": pld.seg_visual,
                          "pred": pred_visual}}
    changed = (plg.seg_visual ^ pld.seg_visual) | (plg.seg_audio ^ pld.seg_audio)
    picks = plots.pick_timeline_videos(val.video_labels, changed, count)
    if picks:
        plots.plot_timelines(val.video_ids, val.video_labels, sources, picks,
                             out / "plots/timelines_val.png")


def flat_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"val": {"seg_type": x}} -> {"val/seg_type": x}."""
    return {f"{split}/{key}": float(value) for split, values in scores.items()
            for key, value in values.items()}


def gate_score_key(promote_metric: str) -> str:
    """`val/<score>` -> `<score>`: the gate compares per-video val scores (SCORE_KEYS)."""
    split, _, key = promote_metric.partition("/")
    if split != "val" or key not in SCORE_KEYS:
        raise ValueError(f"promote_metric {promote_metric!r} must be val/<score> with <score> "
                         f"one of {', '.join(SCORE_KEYS)} (the gate resamples val videos)")
    return key


def video_scores(model, split: SplitData, key: str) -> np.ndarray:
    """Per-video `key` score (percent) of `model` on `split`, official protocol: (N,)."""
    pred_audio, pred_visual = _events(predict(model, split.features))
    return avvp_video_scores(pred_audio, pred_visual, split.gt_audio, split.gt_visual)[key]


def feature_mismatch(model: ModelConfig, features: Features) -> str | None:
    """Why a HAN(model) cannot take `features` (None when it can)."""
    got = {"audio_dim": features.audio.shape[-1], "visual_dim": features.visual.shape[-1],
           "visual_3d_dim": 0 if features.visual_3d is None else features.visual_3d.shape[-1]}
    wanted = {"audio_dim": model.audio_dim, "visual_dim": model.visual_dim,
              "visual_3d_dim": model.visual_3d_dim}
    if model.visual_3d_dim == 0:  # a 2D-only HAN ignores 3D features
        del got["visual_3d_dim"], wanted["visual_3d_dim"]
    diff = [f"{key} {wanted[key]} (features have {got[key]})" for key in wanted
            if wanted[key] != got[key]]
    if model.num_classes != len(CLASSES):
        diff.append(f"num_classes {model.num_classes} (expected {len(CLASSES)})")
    return "; ".join(diff) or None


def champion_scorer(model_name: str, split: SplitData, key: str) -> registry.ChampionScores:
    """champion version -> its per-video `key` scores on `split` (the candidate's val videos).

    Pulls the version's checkpoint from the registry (digests verified); a checkpoint that
    cannot be loaded or fed these features raises registry.IncomparableChampion.
    """
    def score(version: str) -> np.ndarray:
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
        tracking.client().set_model_version_tag(model_name, version, registry.DATASET_TAG,
                                                dataset.digest)
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


def results_markdown(scores: dict[str, dict[str, float]], quality: dict[str, float],
                     choice: dict) -> str:
    """Markdown for a version's and a parent run's description: the ten scores on val and
    test, the pseudo-label quality on val before/after PLD, which labels retrain used and why."""
    lines = ["**Scores** (percent, official AVVP protocol)", "",
             "| split | " + " | ".join(SCORE_KEYS) + " |",
             "| --- |" + " ---: |" * len(SCORE_KEYS)]
    lines += [f"| {split} | " + " | ".join(_cell(scores[split].get(key)) for key in SCORE_KEYS)
              + " |" for split in ("val", "test") if split in scores]
    lines += ["", "**Pseudo labels on val** (label quality = (seg F + event F) / 2)", "",
              "| modality | PLG | PLD | trained on | why |", "| --- | ---: | ---: | --- | --- |"]
    for modality, made in choice["modalities"].items():
        plg, pld = (quality.get(f"{stage}/val/{modality}/average") for stage in ("plg", "pld"))
        lines.append(f"| {modality} | {_cell(plg)} | {_cell(pld)} | "
                     f"**{made['source'].upper()}** | {made['reason']} |")
    lines += ["", f"Labels it was trained on: `pld.apply={choice['apply']}`."]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _still_registered(out: Path) -> bool:
    """Reuse a registration only while its version still exists in the registry."""
    record = read_json(out / "registration.json")
    try:
        registry.resolve_version(record["model_name"], version=record["version"])
    except Exception:
        return False
    return True
