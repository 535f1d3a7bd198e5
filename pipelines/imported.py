"""`vaplan register-checkpoint`: register a trained HAN checkpoint that no pipeline run made
(e.g. the official one, `vaplan import-checkpoint`), scored and gated like a pipeline's version.

One run in the `vaplan` experiment evaluates it on val and test of the dataset `--preset`
names, logs the pyfunc with the weak video labels it was trained on (stage `video`: no segment
labels) and registers it; the gate then compares it with that registered model's champion
(docs/pipelines.md "Registering a given checkpoint").
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np

from pipelines import registry, report, tracking
from pipelines.steps.evaluation import EVAL_SPLITS
from vaplan.config import ExperimentConfig, to_dict
from vaplan.data.dataset import load_dataset
from vaplan.data.types import PseudoLabels
from vaplan.errors import NonFiniteTrainingError, UserError
from vaplan.gate import feature_mismatch, gate_score_key, video_scores
from vaplan.io import write_json
from vaplan.label_table import labels_table, write_labels
from vaplan.method import source_record
from vaplan.report import flat_scores, results_markdown
from vaplan.runs import short_name
from vaplan.train import check_trained, evaluate_model, load_checkpoint, predict

WEAK_STAGE = "video"  # the label table's stage for models trained on the weak video labels
WEAK_CHOICE = source_record("video")  # the labels record of a pipeline version


def register_checkpoint(checkpoint: str | Path, experiment: ExperimentConfig, *,
                        model_name: str, preset: str = "", tracking_uri: str | None = None,
                        promote_metric: str = "val/seg_type") -> dict:
    """Score `checkpoint` on `experiment.data`'s val and test, register it as a new
    `model_name` version, gate it (`registry.register_version`); returns the record."""
    checkpoint = Path(checkpoint)
    try:
        model, train_cfg, extra = load_checkpoint(checkpoint)
        check_trained(model, extra, f"checkpoint {checkpoint}")
    except (OSError, ValueError, NonFiniteTrainingError) as err:  # missing, corrupt, untrained
        raise UserError(str(err).splitlines()[0]) from err
    experiment = replace(experiment, train=train_cfg)  # the config it was trained with
    key = gate_score_key(promote_metric)
    dataset = load_dataset(experiment.data)
    mismatch = feature_mismatch(train_cfg.model, dataset.val.features)
    if mismatch:
        raise UserError(f"checkpoint {checkpoint} cannot take the features of "
                         f"{dataset.description}: it expects {mismatch}")
    preds = {name: predict(model, getattr(dataset, name).features) for name in EVAL_SPLITS}
    scores = {name: evaluate_model(preds[name], getattr(dataset, name)) for name in EVAL_SPLITS}
    experiment_id = tracking.prepare_store(tracking_uri)
    tags = {"vaplan.pipeline": "register-checkpoint", "vaplan.dataset_digest": dataset.digest,
            "vaplan.checkpoint": checkpoint.name}
    with tracking.start_run(experiment_id, tags=tags) as run, \
            tempfile.TemporaryDirectory(prefix="vaplan-register-") as tmp:
        run_id, out = run.info.run_id, Path(tmp) / "out"
        tracking.client().update_run(run_id, name=short_name("register", checkpoint.name,
                                                              run_id=run_id))
        tracking.log_flat_params(experiment)
        tracking.log_scores(flat_scores(scores))
        files = {"checkpoint": checkpoint,
                 "labels": write_labels(Path(tmp) / "labels.parquet", weak_label_table(dataset)),
                 "config": write_json(out / "config.json", {
                     "experiment": to_dict(experiment), "model_name": model_name,
                     "preset": preset, "checkpoint": {"file": checkpoint.name, "extra": extra},
                     "dataset": {"digest": dataset.digest,
                                 "description": dataset.description}})}
        source = f", imported from {extra['source']}" if extra.get("imported") else ""
        record = registry.register_version(
            out, model_name, files, scores, video_scores(preds["val"], dataset.val, key),
            registry.champion_scorer(model_name, dataset.val, key),
            promote_metric=promote_metric, cfg=experiment.registry,
            backbone=train_cfg.model.name, dataset=dataset, run_id=run_id,
            notes=results_markdown(scores, {}, WEAK_CHOICE) + "\n\nRegistered from "
            f"`{checkpoint.name}` (`vaplan register-checkpoint`){source}.",
            record={"labels": WEAK_CHOICE, "quality": {}})
        report.write_version_report(out, run_id, experiment_id)
        tracking.log_scores(registry.decision_metrics(record))
        mlflow.log_artifacts(str(out))  # registration.json, config.json, report/report.html
        tracking.set_description(record["description"])
    return record


def weak_label_table(dataset):
    """The label table of a model trained on the weak labels: per train and val video the
    video label y, no segment labels (stage `video`, no teacher probabilities)."""
    splits, video_labels = {}, {}
    for name in ("train", "val"):
        split = getattr(dataset, name)
        empty = np.zeros((len(split), *split.features.audio.shape[1:2],
                          split.video_labels.shape[1]), np.uint8)  # (N, T, C)
        splits[name] = (np.asarray(split.video_ids), PseudoLabels(empty, empty))
        video_labels[name] = split.video_labels
    no_prompt = SimpleNamespace(audio_prompt="", visual_prompt="")  # no teacher made them
    return labels_table(WEAK_STAGE, splits, video_labels, {}, no_prompt)
