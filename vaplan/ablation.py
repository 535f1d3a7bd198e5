"""Table 5 of the paper on any Dataset: baseline, PLG video-level, + L'_S, + L_S, + PLD.

Each row trains HAN with the same TrainConfig (only the loss variant and targets change) and
reports the ten test numbers; the pseudo-label quality on val is reported before and after PLD
(the PLD model is row 4's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vaplan.config import ExperimentConfig, LossConfig
from vaplan.data.types import Dataset
from vaplan.metrics import SCORE_KEYS
from vaplan.method import denoise_with_model, fit, make_pseudo_labels
from vaplan.pseudo_labels import pseudo_label_report

ROWS: tuple[tuple[str, str, str], ...] = (
    ("1", "baseline (HAN, Eq. 2)", "baseline"),
    ("2", "PLG video-level (L_V)", "video"),
    ("3", "PLG + L'_S (naive)", "naive"),
    ("4", "PLG + L_S (richness)", "richness"),
    ("5", "PLG + L_S + PLD", "richness"),
)


@dataclass
class AblationResult:
    """Test scores per row, and pseudo-label quality on val before/after PLD."""

    rows: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)
    label_quality: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _row_config(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    loss = dataclasses.replace(cfg.train.loss, variant=variant)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss=loss))


def run_ablation(cfg: ExperimentConfig, dataset: Dataset, rows: tuple[str, ...] = ("1", "2", "3", "4", "5"),
                 progress: bool = True, log=print) -> AblationResult:
    """Train the requested Table 5 rows on `dataset` and evaluate each on its test split."""
    import time

    from vaplan.train import evaluate_model

    start = time.perf_counter()
    result = AblationResult()
    train_pseudo = make_pseudo_labels(dataset, "train", cfg.plg)
    val_pseudo = make_pseudo_labels(dataset, "val", cfg.plg)
    val = dataset.val
    result.label_quality["PLG"] = pseudo_label_report(val_pseudo, val.gt_audio, val.gt_visual)
    stage_one = None
    for row_id, name, variant in ROWS:
        needs_stage_one = row_id == "5" and stage_one is None
        if row_id not in rows and not needs_stage_one:
            continue
        row_cfg = _row_config(cfg, variant).train
        log(f"[ablation] row {row_id}: {name}")
        if row_id == "5":
            clean = denoise_with_model(stage_one.model, dataset.train, train_pseudo, cfg.pld,
                                       row_cfg.device)
            val_clean = denoise_with_model(stage_one.model, val, val_pseudo, cfg.pld,
                                           row_cfg.device)
            result.label_quality["PLD"] = pseudo_label_report(val_clean, val.gt_audio,
                                                              val.gt_visual)
            trained = fit(row_cfg, dataset, clean, progress=progress)
        else:
            pseudo = None if variant == "baseline" else train_pseudo
            trained = fit(row_cfg, dataset, pseudo, progress=progress)
            if row_id == "4":
                stage_one = trained
        if row_id in rows:
            result.rows.append((row_id, name, evaluate_model(trained.model, dataset.test)))
    result.seconds = time.perf_counter() - start
    return result


def format_ablation(result: AblationResult) -> str:
    """Plain-text tables: ten test numbers per row, then pseudo-label quality on val."""
    header = ["row", "method"] + [k.replace("_", " ") for k in SCORE_KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_id, name, scores in result.rows:
        lines.append("| " + " | ".join([row_id, name] + [f"{scores[k]:.1f}" for k in SCORE_KEYS])
                     + " |")
    lines += ["", "| labels (val) | modality | video precision | seg F | event F | average |",
              "|---|---|---|---|---|---|"]
    for stage, report in result.label_quality.items():
        for modality in ("audio", "visual"):
            values = [report[f"{modality}/{k}"] for k in ("video_precision", "seg", "event",
                                                           "average")]
            lines.append(f"| {stage} | {modality} | " + " | ".join(f"{v:.2f}" for v in values)
                         + " |")
    lines.append(f"\n({result.seconds:.0f} s)")
    return "\n".join(lines)
