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
from pipelines.steps.evaluation import EVAL_SPLITS, champion_scorer
from vaplan.config import ExperimentConfig, to_dict
from vaplan.data.dataset import load_dataset
from vaplan.data.types import PseudoLabels
from vaplan.errors import NonFiniteTrainingError, UserError
from vaplan.gate import feature_mismatch, gate_score_key, video_scores
from vaplan.io import write_json
from vaplan.label_table import labels_table, write_labels
from vaplan.report import flat_scores, results_markdown
from vaplan.runs import short_name
from vaplan.train import check_trained, evaluate_model, load_checkpoint, predict

WEAK_STAGE = "video"  # the label table's stage for models trained on the weak video labels
WEAK_CHOICE = {"apply": "never", "modalities": {  # the labels record of a pipeline version
    modality: {"source": "video", "reason": "trained on the weak video labels (no pseudo "
                                            "labels)"} for modality in ("audio", "visual")}}


def register_checkpoint(checkpoint: str | Path, experiment: ExperimentConfig, *,
                        model_name: str, preset: str = "", tracking_uri: str | None = None,
                        promote_metric: str = "val/seg_type") -> dict:
    """Score `checkpoint` on `experiment.data`'s val and test, register it as a new
    `model_name` version and gate it; returns the registration record."""
    checkpoint = Path(checkpoint)
    try:
        model, train_cfg, extra = load_checkpoint(checkpoint)
        check_trained(model, extra, f"checkpoint {checkpoint}")
    except (OSError, ValueError, NonFiniteTrainingError) as err:  # missing, corrupt, untrained
        raise UserError(str(err).splitlines()[0]) from err
    experiment = replace(experiment, train=train_cfg)  # the config it was trained with
    dataset = load_dataset(experiment.data)
    mismatch = feature_mismatch(train_cfg.model, dataset.val.features)
    if mismatch:
        raise UserError(f"checkpoint {checkpoint} cannot take the features of "
                         f"{dataset.description}: it expects {mismatch}")
    scores = {name: evaluate_model(predict(model, getattr(dataset, name).features),
                                   getattr(dataset, name)) for name in EVAL_SPLITS}
    uri = tracking.use_tracking_uri(tracking_uri)
    experiment_id = tracking.prepare_store(uri)
    tags = {"vaplan.pipeline": "register-checkpoint", "vaplan.dataset_digest": dataset.digest,
            "vaplan.checkpoint": checkpoint.name}
    with tracking.start_run(experiment_id, tags=tags) as run, \
            tempfile.TemporaryDirectory(prefix="vaplan-register-") as tmp:
        run_id = run.info.run_id
        tracking.client().update_run(run_id, name=short_name("register", checkpoint.name,
                                                              run_id=run_id))
        tracking.log_flat_params(experiment)
        tracking.log_scores(flat_scores(scores))
        labels = write_labels(Path(tmp) / "labels.parquet", weak_label_table(dataset))
        config_json = write_json(Path(tmp) / "config.json", {
            "experiment": to_dict(experiment), "model_name": model_name, "preset": preset,
            "checkpoint": {"file": checkpoint.name, "extra": extra},
            "dataset": {"digest": dataset.digest, "description": dataset.description}})
        info = registry.log_han_model(model_name, checkpoint, labels, config_json,
                                      flat_scores(scores), {"dataset_digest": dataset.digest,
                                                            "parent_run_id": run_id})
        version = str(info.registered_model_version)
        registry.tag_version(model_name, version, dataset.digest, train_cfg.model.name)
        key = gate_score_key(promote_metric)
        notes = results_markdown(scores, {}, WEAK_CHOICE) + (
            f"\n\nRegistered from `{checkpoint.name}` (`vaplan register-checkpoint`)"
            + (f", imported from {extra['source']}" if extra.get("imported") else "") + ".")
        decision = registry.apply_promotion_gate(
            model_name, version, video_scores(model, dataset.val, key), promote_metric,
            experiment.registry, champion_scorer(model_name, dataset.val, key), notes=notes)
        record = {"model_name": model_name, "version": version,
                  "model_uri": f"models:/{model_name}/{version}", "decision": decision.to_dict(),
                  "labels": WEAK_CHOICE, "scores": scores, "quality": {}, "parent_run_id": run_id,
                  "dataset": {"digest": dataset.digest, "description": dataset.description},
                  "description": decision.description() + "\n\n" + notes}
        write_json(Path(tmp) / registry.RECORD, record)
        mlflow.log_artifact(str(Path(tmp) / registry.RECORD))
        mlflow.log_artifact(str(config_json))
        page = report.write_version_report(Path(tmp), run_id, experiment_id)
        mlflow.log_artifact(str(page), report.REPORT_FILE.rpartition("/")[0])
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
