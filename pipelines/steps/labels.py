"""Label steps: PLG (`generate_labels`) and PLD (`denoise`), their quality metrics and plots.

`denoise` also decides, per modality, which labels the retrain step trains on (`pld.apply`,
`vaplan.method.choose_labels`): `labels/pld.parquet` holds exactly those labels (its `stage`
column says `pld` or `plg` per modality), `labels/denoised.parquet` the raw PLD output and
`labels/choice.json` the decision with its evidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import plots, tracking
from pipelines.artifacts import (LabelSplits, labels_table, read_json, read_labels, write_json,
                                 write_labels)
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import (CHECKPOINT, DENOISED_FILE, PLD_FILE, PLG_FILE, label_splits,
                                    log_quality, write_label_table)
from vaplan.config import PLDConfig, PLGConfig
from vaplan.data.types import Dataset, PseudoLabels, SplitData
from vaplan.denoise import forward_loss_map
from vaplan.method import LabelChoice, apply_label_choice, choose_labels, denoise_pseudo_labels
from vaplan.metrics import per_class_f
from vaplan.pseudo_labels import generate_pseudo_labels
from vaplan.train import load_checkpoint, predict

CHOICE_FILE = "labels/choice.json"
DENOISE_FORMAT = 2  # 2: pld.parquet = the chosen labels, raw PLD in denoised.parquet


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
    """PLD (Eq. 10-11) with the trained model's predictions; quality after PLD; Figs. 3b, 7;
    the labels to retrain on, chosen per modality on val evidence (`pld.apply`)."""
    def compute(out: Path, log: StepLog) -> None:
        han, _, _ = load_checkpoint(model.path(CHECKPOINT))
        before = read_labels(labels.path(PLG_FILE))
        after, probs = {}, {}
        for name, split in label_splits(dataset).items():
            denoised, probs[name] = _denoise_split(han, split, before[name][1], pld, "cpu")
            after[name] = (split.video_ids, denoised)
        write_label_table(out / DENOISED_FILE, "pld", after, dataset, plg)
        log_quality(log, "pld", after["val"][1], dataset.val)  # raw PLD (Fig. 3b, ablation)
        log.scores(_flip_rates(before, after), prefix="pld/")
        val = dataset.val
        choices = choose_labels(before["val"][1], after["val"][1], val.gt_audio, val.gt_visual,
                                pld)
        chosen = {name: (ids, apply_label_choice(before[name][1], after[name][1], choices))
                  for name, (ids, _) in after.items()}
        _write_chosen(out / PLD_FILE, chosen, choices, dataset, plg)
        log_quality(log, "labels", chosen["val"][1], val)  # what retrain trains on
        log.scores(_choice_scores(choices), prefix="pld/decision/")
        _write_choice(out, choices, pld)
        _denoise_plots(out, val, before["val"][1], after["val"][1], probs["val"], pld)

    inputs = {"dataset": dataset.digest, "labels": labels.digest(PLG_FILE),
              "checkpoint": model.digest(CHECKPOINT)}
    config = {"pld": pld, "plg": plg, "format": DENOISE_FORMAT}
    result = run_step(ctx, "denoise", config, inputs, compute, params=section_params(pld))
    tag_label_choice(read_json(result.path(CHOICE_FILE)), run_id=result.run_id)
    return result


def _write_chosen(path: Path, chosen: LabelSplits, choices: dict[str, LabelChoice],
                  dataset: Dataset, plg: PLGConfig) -> None:
    """The labels retrain uses; `stage` per row says where that modality's labels came from."""
    video_labels = {name: split.video_labels for name, split in label_splits(dataset).items()}
    table = labels_table("pld", chosen, video_labels, dataset.teachers, plg)
    modality = np.asarray(table.column("modality").to_pylist(), dtype=object)
    stage = np.where(modality == "audio", choices["audio"].source, choices["visual"].source)
    table = table.set_column(table.schema.get_field_index("stage"), "stage",
                             pa.array(stage, pa.string()))
    write_labels(path, table)


def _choice_scores(choices: dict[str, LabelChoice]) -> dict[str, float]:
    """Metrics of the decision: uses_pld (1/0) and PLD - PLG improvement with its interval."""
    scores = {}
    for modality, choice in choices.items():
        scores[f"{modality}/uses_pld"] = float(choice.uses_denoised)
        if choice.test is not None:
            scores[f"{modality}/improvement"] = choice.test.improvement
            scores[f"{modality}/improvement_low"] = choice.test.low
            scores[f"{modality}/improvement_high"] = choice.test.high
    return scores


def _write_choice(out: Path, choices: dict[str, LabelChoice], pld: PLDConfig) -> None:
    write_json(out / CHOICE_FILE, {"apply": pld.apply, "confidence": pld.confidence,
                                   "modalities": {m: c.to_dict() for m, c in choices.items()}})


def choice_tags(record: dict) -> dict[str, str]:
    """`pld.decision.<modality>` = pld | plg and `pld.decision.<modality>.reason` tags."""
    tags = {}
    for modality, choice in record["modalities"].items():
        tags[f"pld.decision.{modality}"] = choice["source"]
        tags[f"pld.decision.{modality}.reason"] = choice["reason"]
    return tags


def tag_label_choice(record: dict, run_id: str) -> None:
    """Tag a run (the denoise step's, the parent) with the per-modality label decision."""
    client = tracking.client()
    for key, value in choice_tags(record).items():
        client.set_tag(run_id, key, value)


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
