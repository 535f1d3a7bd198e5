"""Label steps: PLG (`generate_labels`) and PLD (`denoise`), their quality metrics and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines import plots
from pipelines.artifacts import LabelSplits, read_labels
from pipelines.reuse import StepContext, StepLog, StepResult, run_step
from pipelines.steps.common import (CHECKPOINT, PLD_FILE, PLG_FILE, label_splits, log_quality,
                                    write_label_table)
from vaplan.config import PLDConfig, PLGConfig
from vaplan.data.types import Dataset, PseudoLabels, SplitData
from vaplan.denoise import forward_loss_map
from vaplan.method import denoise_pseudo_labels
from vaplan.metrics import per_class_f
from vaplan.pseudo_labels import generate_pseudo_labels
from vaplan.train import load_checkpoint, predict


def generate_labels(ctx: StepContext, dataset: Dataset, plg: PLGConfig) -> StepResult:
    """PLG (Eq. 3-4) on train and val; quality on val; Fig. 3a."""
    def compute(out: Path, log: StepLog) -> None:
        labels = {name: (split.video_ids, generate_pseudo_labels(
            dataset.teachers[name], split.video_labels, plg))
            for name, split in label_splits(dataset).items()}
        write_label_table(out / PLG_FILE, "plg", labels, dataset, plg)
        val_labels, val = labels["val"][1], dataset.val
        log_quality(log, "plg", val_labels, val)
        plots.plot_per_class_f(
            {"audio PLG": per_class_f(val_labels.seg_audio, val.gt_audio),
             "visual PLG": per_class_f(val_labels.seg_visual, val.gt_visual)},
            "Per-class event-level F of PLG pseudo labels on val (Fig. 3a)",
            out / "plots/fig3a_plg_per_class_f.png")

    return run_step(ctx, "generate_labels", plg, {"dataset": dataset.digest}, compute)


def _denoise_split(model, split: SplitData, labels: PseudoLabels, pld: PLDConfig,
                   device: str) -> tuple[PseudoLabels, np.ndarray]:
    prob_seg = predict(model, split.features, device=device).prob_seg  # (N, T, 2, C)
    return denoise_pseudo_labels(prob_seg, labels, pld), prob_seg


def denoise(ctx: StepContext, dataset: Dataset, pld: PLDConfig, plg: PLGConfig,
            labels: StepResult, model: StepResult) -> StepResult:
    """PLD (Eq. 10-11) with the trained model's predictions; quality after PLD; Figs. 3b, 7."""
    def compute(out: Path, log: StepLog) -> None:
        han, _, _ = load_checkpoint(model.path(CHECKPOINT))
        before = read_labels(labels.path(PLG_FILE))
        after, probs = {}, {}
        for name, split in label_splits(dataset).items():
            denoised, probs[name] = _denoise_split(han, split, before[name][1], pld, "cpu")
            after[name] = (split.video_ids, denoised)
        write_label_table(out / PLD_FILE, "pld", after, dataset, plg)
        log_quality(log, "pld", after["val"][1], dataset.val)
        log.scores(_flip_rates(before, after), prefix="pld/")
        _denoise_plots(out, dataset.val, before["val"][1], after["val"][1], probs["val"], pld)

    inputs = {"dataset": dataset.digest, "labels": labels.digest(PLG_FILE),
              "checkpoint": model.digest(CHECKPOINT)}
    return run_step(ctx, "denoise", {"pld": pld, "plg": plg}, inputs, compute)


def _flip_rates(before: LabelSplits, after: LabelSplits) -> dict[str, float]:
    """Percent of positive PLG segment labels that PLD flipped, per split and modality."""
    rates = {}
    for split in before:
        for modality in ("audio", "visual"):
            old = getattr(before[split][1], f"seg_{modality}").astype(bool)
            new = getattr(after[split][1], f"seg_{modality}").astype(bool)
            rates[f"{split}/{modality}/flipped_percent"] = 100 * float(
                (old ^ new).sum() / max(old.sum(), 1))
    return rates


def _denoise_plots(out: Path, val: SplitData, before: PseudoLabels, after: PseudoLabels,
                   prob_seg: np.ndarray, pld: PLDConfig) -> None:
    """Fig. 3b (PLG vs PLD per class) and Fig. 7 (forward-loss heatmap of one val video)."""
    series = {}
    for modality, gt in (("audio", val.gt_audio), ("visual", val.gt_visual)):
        if getattr(pld, modality):
            series[f"{modality} PLG"] = per_class_f(getattr(before, f"seg_{modality}"), gt)
            series[f"{modality} PLD"] = per_class_f(getattr(after, f"seg_{modality}"), gt)
    if series:
        plots.plot_per_class_f(series, "PLG vs PLD per class on val (Fig. 3b)",
                               out / "plots/fig3b_plg_vs_pld_per_class_f.png")
    modality = "visual" if pld.visual or not pld.audio else "audio"
    m = 1 if modality == "visual" else 0
    old, new = getattr(before, f"seg_{modality}"), getattr(after, f"seg_{modality}")
    video = int(np.argmax((old ^ new).reshape(len(old), -1).sum(axis=1)
                          * 1000 + old.max(axis=1).sum(axis=1)))
    classes = np.flatnonzero(old[video].max(axis=0))
    if len(classes) == 0:
        return
    loss = forward_loss_map(prob_seg[video, :, m], old[video]) * old[video].max(axis=0)  # M'
    plots.plot_loss_heatmap(loss, (old[video] ^ new[video]).astype(bool), classes,
                            str(val.video_ids[video]), modality,
                            out / "plots/fig7_pld_forward_loss.png")
