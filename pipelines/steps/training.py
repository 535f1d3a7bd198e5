"""Training steps: `train` (on the PLG labels, or on the weak labels y for labels.source
video|ma) and `retrain` (on the labels PLD chose, or on MA's labels)."""

from __future__ import annotations

from pathlib import Path

from pipelines.reuse import StepContext, StepLog, StepResult, run_step
from pipelines.steps.common import (CHECKPOINT, PLD_FILE, PLG_FILE, VIDEO_FILE,
                                    log_label_input)
from pipelines.steps.labels import CHOICE_FILE
from vaplan.config import TrainConfig
from vaplan.data.types import Dataset
from vaplan.io import read_json
from vaplan.label_table import split_labels, write_labels
from vaplan.method import fit
from vaplan.train import save_checkpoint


def train(ctx: StepContext, dataset: Dataset, cfg: TrainConfig, labels: StepResult | None,
          labels_name: str = PLG_FILE, step_name: str = "train",
          same_as: str | None = None, source: str = "plg") -> StepResult:
    """Train the backbone on the labels `labels_name` of `labels`, or on the weak labels y
    when `labels` is None (their label table, stage `video`, is written as VIDEO_FILE);
    per-epoch metrics with the epoch as step. `source` (a `labels.source` kind) is recorded
    in the checkpoint as `labels_source`."""
    def compute(out: Path, log: StepLog) -> None:
        def on_epoch(stats) -> None:
            log.scores(stats.metrics(), step=stats.epoch)

        if labels is None:
            from pipelines.imported import weak_label_table  # the one weak label table

            write_labels(out / VIDEO_FILE, weak_label_table(dataset))
        pseudo = None if labels is None else split_labels(labels.path(labels_name),
                                                           dataset.train)
        result = fit(cfg, dataset, pseudo, on_epoch=on_epoch, progress=ctx.progress)
        save_checkpoint(out / CHECKPOINT, result.model, cfg,
                        {"best_epoch": result.best_epoch, "best_score": result.best_score,
                         "select_metric": cfg.select_metric, "dataset": dataset.digest,
                         "labels": digest, "labels_source": source, "step": step_name},
                        epochs_completed=result.epochs_completed)
        log.scores({"best_epoch": result.best_epoch,
                    f"best/val/{cfg.select_metric}": result.best_score})

    digest = "video" if labels is None else labels.digest(labels_name)  # y: the dataset's
    inputs = {"dataset": dataset.digest, "labels": digest}
    on_start = None if labels is None else (
        lambda: log_label_input(labels, labels_name, "training"))
    return run_step(ctx, step_name, cfg, inputs, compute, same_as=same_as, on_start=on_start)


def retrain(ctx: StepContext, dataset: Dataset, cfg: TrainConfig, denoised: StepResult,
            plg: StepResult) -> StepResult:
    """Train again on the labels PLD chose (the model that gets registered). When PLD kept
    PLG's labels in both modalities, that is the `train` step's computation (same config,
    dataset and labels), so its outputs are reused instead of training twice."""
    if kept_plg_labels(read_json(denoised.path(CHOICE_FILE))):
        return train(ctx, dataset, cfg, plg, step_name="retrain", same_as="train")
    return train(ctx, dataset, cfg, denoised, labels_name=PLD_FILE, step_name="retrain",
                 source="pld")


def kept_plg_labels(choice: dict) -> bool:
    """Did the denoise step keep PLG's labels for every modality (labels/choice.json)?"""
    return all(made["source"] == "plg" for made in choice["modalities"].values())
