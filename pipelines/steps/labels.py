"""Label steps: PLG (`generate_labels`), PLD (`denoise`, which also chooses per modality the
labels retrain trains on, `pld.apply`) and MA (`ma_labels`, labels.source=ma; docs/pipelines.md),
their quality metrics and plots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pipelines import tracking
from pipelines.reuse import StepContext, StepLog, StepResult, run_step, section_params
from pipelines.steps.common import (CHECKPOINT, DENOISED_FILE, MA_FILE, PLD_FILE, PLG_FILE,
                                    label_splits, log_quality, write_label_table)
from vaplan import plots
from vaplan.config import PLDConfig, PLGConfig
from vaplan.data.types import Dataset
from vaplan.io import read_json, write_json
from vaplan.label_table import (choice_scores, choice_tags, flip_rates, labels_table,
                                read_labels, write_labels)
from vaplan.ma_labels import ma_pseudo_labels, modality_aware_labels
from vaplan.method import apply_label_choice, choose_labels, denoise_pseudo_labels
from vaplan.pseudo_labels import generate_pseudo_labels
from vaplan.train import load_checkpoint, predict

CHOICE_FILE = "labels/choice.json"
DENOISE_FORMAT = 2  # 2: pld.parquet = the chosen labels, raw PLD in denoised.parquet
MA_FORMAT = 1
NO_PROMPT = SimpleNamespace(audio_prompt="", visual_prompt="")  # labels no teacher made


def generate_labels(ctx: StepContext, dataset: Dataset, plg: PLGConfig) -> StepResult:
    """PLG (Eq. 3-4) on train and val; quality on val; Fig. 3a."""
    def compute(out: Path, log: StepLog) -> None:
        labels = {name: (split.video_ids, generate_pseudo_labels(
            dataset.teachers[name], split.video_labels, plg))
            for name, split in label_splits(dataset).items()}
        write_label_table(out / PLG_FILE, "plg", labels, dataset, plg)
        log_quality(log, "plg", labels["val"][1], dataset.val)
        plots.plg_figure(labels["val"][1], dataset.val, out / "plots/fig3a_plg_per_class_f.png")

    return run_step(ctx, "generate_labels", plg, {"dataset": dataset.digest}, compute)


def denoise(ctx: StepContext, dataset: Dataset, pld: PLDConfig, plg: PLGConfig,
            labels: StepResult, model: StepResult) -> StepResult:
    """PLD (Eq. 10-11) with the trained model's predictions; quality after PLD; Figs. 3b, 7;
    the labels to retrain on, chosen per modality on val evidence (`pld.apply`)."""
    def compute(out: Path, log: StepLog) -> None:
        han, _, _ = load_checkpoint(model.path(CHECKPOINT))
        before = read_labels(labels.path(PLG_FILE))
        after, probs = {}, {}
        for name, split in label_splits(dataset).items():
            probs[name] = predict(han, split.features).prob_seg  # (N, T, 2, C)
            after[name] = (split.video_ids, denoise_pseudo_labels(probs[name], before[name][1],
                                                                  pld))
        write_label_table(out / DENOISED_FILE, "pld", after, dataset, plg)
        log_quality(log, "pld", after["val"][1], dataset.val)  # raw PLD (Fig. 3b, ablation)
        log.scores(flip_rates(before, after), prefix="pld/")
        val = dataset.val
        choices = choose_labels(before["val"][1], after["val"][1], val.gt_audio, val.gt_visual,
                                pld)
        chosen = {name: (ids, apply_label_choice(before[name][1], after[name][1], choices))
                  for name, (ids, _) in after.items()}
        write_label_table(out / PLD_FILE, {m: c.source for m, c in choices.items()}, chosen,
                          dataset, plg)  # `stage` per modality: where its labels came from
        log_quality(log, "labels", chosen["val"][1], val)  # what retrain trains on
        log.scores(choice_scores(choices), prefix="pld/decision/")
        write_json(out / CHOICE_FILE, {"apply": pld.apply, "confidence": pld.confidence,
                                       "modalities": {m: c.to_dict() for m, c in choices.items()}})
        plots.denoise_figures(out, val, before["val"][1], after["val"][1], probs["val"], pld)

    inputs = {"dataset": dataset.digest, "labels": labels.digest(PLG_FILE),
              "checkpoint": model.digest(CHECKPOINT)}
    config = {"pld": pld, "plg": plg, "format": DENOISE_FORMAT}
    result = run_step(ctx, "denoise", config, inputs, compute, params=section_params(pld))
    tag_label_choice(read_json(result.path(CHOICE_FILE)), run_id=result.run_id)
    return result


def ma_labels(ctx: StepContext, dataset: Dataset, seed: int, model: StepResult) -> StepResult:
    """MA's modality-aware video-level labels (`vaplan.ma_labels`, Wu & Yang 2021) of train
    (targets) and val (quality, `ma/val/<modality>/<k>` like PLG's) from `model`, trained on
    the weak labels; exchange partners drawn with `seed` (`train.seed`, as the ablation's
    `+ma` rows). Label table MA_FILE, stage `ma`: each video label for all T segments."""
    def compute(out: Path, log: StepLog) -> None:
        net, _, _ = load_checkpoint(model.path(CHECKPOINT))
        labels = {name: (split.video_ids, ma_pseudo_labels(
            modality_aware_labels(net, split, seed=seed)))
            for name, split in label_splits(dataset).items()}
        video_labels = {name: split.video_labels for name, split in label_splits(dataset).items()}
        write_labels(out / MA_FILE, labels_table("ma", labels, video_labels, {}, NO_PROMPT))
        log_quality(log, "ma", labels["val"][1], dataset.val)

    inputs = {"dataset": dataset.digest, "checkpoint": model.digest(CHECKPOINT)}
    return run_step(ctx, "ma_labels", {"seed": seed, "format": MA_FORMAT}, inputs, compute,
                    params={"labels.source": "ma", "train.seed": seed})


def tag_label_choice(record: dict, run_id: str) -> None:
    """Tag a run (the denoise step's, the parent) with the per-modality label decision."""
    tracking.set_tags(choice_tags(record), run_id=run_id)
