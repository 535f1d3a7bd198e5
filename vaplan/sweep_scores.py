"""What the label sweeps' trials score, without Ray (docs/ray.md): PLG label quality on val
(`plg_scores`), and for PLD the labels the retrain step would train on (`chosen_labels`),
their quality and gain over PLG (`pld_scores`) and the "no denoising" arm (`no_denoising`).
"""

from __future__ import annotations

from typing import Mapping

from vaplan.config import PLDConfig, get_path
from vaplan.method import apply_label_choice, choose_labels, denoise_pseudo_labels
from vaplan.pseudo_labels import pseudo_label_report
from vaplan.sweeps import searched

PLG_OBJECTIVE, PLD_OBJECTIVE = "plg/val/average", "pld/val/average"


def plg_scores(report: Mapping[str, float]) -> dict[str, float]:
    """A PLG label report of val as `plg/val/<modality>/<score>` and the objective (the mean
    of the two modalities' averages, the "Average" of Tables 2-4)."""
    return {**{f"plg/val/{key}": value for key, value in report.items()},
            PLG_OBJECTIVE: (report["audio/average"] + report["visual/average"]) / 2}


def no_denoising(space: dict, base) -> list[dict]:
    """The "no denoising" arm (`pld.apply=never`), unless the space already reaches it; the
    searched options at the base config's values (they do not change the PLG labels)."""
    apply = space.get("pld.apply")
    values = next(iter(apply.values())) if isinstance(apply, dict) else [apply]
    if apply is None or "never" in values:
        return []
    return [{**{k: get_path(base, k) for k in searched(space)}, "pld.apply": "never"}]


def chosen_labels(stage, pld: PLDConfig, split: str = "val"):
    """The labels of `split` the retrain step would train on with this PLD setting: denoised
    or PLG per modality as `pld.apply` decides on val (never: PLG, the no-denoising arm).
    `stage`: the stage-one predictions and PLG labels (`ray_jobs.tune_pld.stage_one`)."""
    val = denoise_pseudo_labels(stage.prob_val, stage.labels_val, pld)
    choices = choose_labels(stage.labels_val, val, stage.val.gt_audio, stage.val.gt_visual, pld)
    if split == "val":
        return apply_label_choice(stage.labels_val, val, choices)
    denoised = denoise_pseudo_labels(stage.prob_train, stage.labels_train, pld)
    return apply_label_choice(stage.labels_train, denoised, choices)


def pld_scores(stage, pld: PLDConfig) -> dict[str, float]:
    """The trial's val labels' quality, flip rates, gain over PLG and the objective."""
    after = chosen_labels(stage, pld)
    report = pseudo_label_report(after, stage.val.gt_audio, stage.val.gt_visual)
    scores = {f"pld/val/{key}": value for key, value in report.items()}
    scores[PLD_OBJECTIVE] = (report["audio/average"] + report["visual/average"]) / 2
    for m in ("audio", "visual"):
        before = getattr(stage.labels_val, f"seg_{m}").astype(bool)
        flipped = before ^ getattr(after, f"seg_{m}").astype(bool)
        scores[f"pld/val/{m}/flipped_percent"] = 100 * flipped.sum() / max(before.sum(), 1)
        scores[f"gain/{m}/average"] = report[f"{m}/average"] - stage.plg[f"{m}/average"]
    return scores
