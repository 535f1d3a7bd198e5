"""The VAPLAN method as four library calls shared by the ablation, the pipeline and the sweeps.

    pseudo = make_pseudo_labels(dataset, "train", plg)            # PLG (Eq. 3-4)
    stage1 = fit(train_cfg, dataset, pseudo)                      # L_V + lambda * L_S
    clean  = denoise_with_model(stage1.model, dataset.train, pseudo, pld, device)   # PLD
    final  = fit(train_cfg, dataset, clean)                       # retrain on denoised labels

Which labels the retrain uses is decided on evidence (`pld.apply`): `choose_labels` compares
the PLD and PLG labels of val per modality with a paired bootstrap over val videos, and
`apply_label_choice` builds the labels to train on from that decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from vaplan.config import PLDConfig, PLGConfig, TrainConfig
from vaplan.data.types import Dataset, PseudoLabels, SplitData
from vaplan.denoise import denoise_labels
from vaplan.pseudo_labels import generate_pseudo_labels, video_label_quality
from vaplan.stats import PairedBootstrap, paired_bootstrap

MODALITIES = ("audio", "visual")
PLD_APPLY = ("auto", "always", "never")


def make_pseudo_labels(dataset: Dataset, split: str, plg: PLGConfig) -> PseudoLabels:
    """PLG for one split of `dataset`, checking that teacher rows align with the split."""
    data: SplitData = getattr(dataset, split)
    teachers = dataset.teachers[split]
    if len(teachers.video_ids) != len(data) or not np.array_equal(
            np.asarray(teachers.video_ids, dtype=str), np.asarray(data.video_ids, dtype=str)):
        raise ValueError(f"teacher scores of split {split!r} are not row-aligned with its videos")
    return generate_pseudo_labels(teachers, data.video_labels, plg)


def denoise_pseudo_labels(prob_seg: np.ndarray, pseudo: PseudoLabels,
                          pld: PLDConfig) -> PseudoLabels:
    """PLD (Eq. 10-11) per enabled modality; prob_seg is the model's (N, T, 2, C) output."""
    audio, visual = pseudo.seg_audio, pseudo.seg_visual
    if pld.audio:
        audio = denoise_labels(prob_seg[:, :, 0], audio, pseudo.video_audio,
                               k=pld.audio_k, alpha=pld.audio_alpha)
    if pld.visual:
        visual = denoise_labels(prob_seg[:, :, 1], visual, pseudo.video_visual,
                                k=pld.visual_k, alpha=pld.visual_alpha)
    return PseudoLabels(seg_audio=audio, seg_visual=visual)


def fit(cfg: TrainConfig, dataset: Dataset, pseudo: PseudoLabels | None, on_epoch=None,
        progress: bool = True, targets=None):
    """Train the backbone (`cfg.model.name`) on dataset.train with `pseudo` targets (None:
    weak labels), or with ready `targets` (vaplan.train.TrainTargets, e.g. MA's); select on
    val."""
    from vaplan.train import build_targets, train_han  # torch is imported only when training

    if targets is None:
        targets = build_targets(dataset.train, pseudo)
    return train_han(cfg, dataset.train, targets, dataset.val, on_epoch=on_epoch,
                     progress=progress)


def denoise_with_model(model, split: SplitData, pseudo: PseudoLabels, pld: PLDConfig,
                       device: str = "cpu") -> PseudoLabels:
    """Predict `split` with the stage-one model and denoise its pseudo labels."""
    from vaplan.train import predict

    prediction = predict(model, split.features, device=device)
    return denoise_pseudo_labels(prediction.prob_seg, pseudo, pld)


@dataclass(frozen=True)
class LabelChoice:
    """Which labels one modality trains on (`source`: "pld" or "plg") and the evidence.

    Qualities are the val label-quality "average" ((seg F + event F) / 2, percent, as
    `label_quality`); `test` is the paired bootstrap of PLD - PLG over val videos (None when
    PLD is off for the modality, so its labels are the PLG ones).
    """

    modality: str
    source: str
    apply: str
    plg_quality: float
    pld_quality: float
    test: PairedBootstrap | None
    reason: str

    @property
    def uses_denoised(self) -> bool:
        return self.source == "pld"

    def to_dict(self) -> dict:
        return {"modality": self.modality, "source": self.source, "apply": self.apply,
                "plg_quality": self.plg_quality, "pld_quality": self.pld_quality,
                "test": None if self.test is None else self.test.to_dict(),
                "reason": self.reason}


def _choose(modality: str, plg_scores: np.ndarray, pld_scores: np.ndarray, pld: PLDConfig,
            samples: int, seed: int) -> LabelChoice:
    """The decision for one enabled modality from its per-video label quality (N,) arrays."""
    test = paired_bootstrap(pld_scores, plg_scores, samples=samples,
                            confidence=pld.confidence, seed=seed)
    evidence = f"PLD - PLG val quality {test.describe()}"
    if pld.apply == "always":
        source, reason = "pld", f"pld.apply=always (the paper's recipe); {evidence}"
    elif pld.apply == "never":
        source, reason = "plg", f"pld.apply=never; {evidence}"
    elif test.exceeds(0.0):
        source, reason = "pld", f"PLD better on val: {evidence}, lower bound > 0"
    else:
        source, reason = "plg", (f"PLD not better on val: {evidence}, lower bound <= 0; "
                                 f"keeping the PLG labels")
    return LabelChoice(modality, source, pld.apply, test.reference_mean, test.candidate_mean,
                       test, reason)


def choose_labels(plg: PseudoLabels, pld_labels: PseudoLabels, gt_audio: np.ndarray,
                  gt_visual: np.ndarray, pld: PLDConfig, samples: int = 2000,
                  seed: int = 0) -> dict[str, LabelChoice]:
    """Per modality, train on the PLD or the PLG labels (`pld.apply`), judged on val.

    plg / pld_labels: the val split's labels (N, T, C) before and after PLD; gt_*: its
    segment ground truth. `auto` takes the denoised labels only when the lower bound of
    PLD - PLG (paired bootstrap over val videos at `pld.confidence`) is > 0; `always` takes
    them (the paper), `never` keeps PLG. A modality with PLD off keeps its PLG labels.
    """
    if pld.apply not in PLD_APPLY:
        raise ValueError(f"pld.apply must be one of {', '.join(PLD_APPLY)}, got {pld.apply!r}")
    choices = {}
    for modality, gt in (("audio", gt_audio), ("visual", gt_visual)):
        before = getattr(plg, f"seg_{modality}")
        plg_scores = video_label_quality(before, gt)  # (N,)
        if not getattr(pld, modality):
            quality = float(plg_scores.mean())
            choices[modality] = LabelChoice(modality, "plg", pld.apply, quality, quality, None,
                                            f"pld.{modality}=false: PLD is off for {modality}")
            continue
        pld_scores = video_label_quality(getattr(pld_labels, f"seg_{modality}"), gt)
        choices[modality] = _choose(modality, plg_scores, pld_scores, pld, samples, seed)
    return choices


SOURCE_REASONS = {  # why a model trained on labels.source's labels (no choice was made)
    "video": "trained on the weak video labels (no pseudo labels)",
    "ma": "trained on MA's modality-aware video-level labels (from a model trained on y)",
    "plg": "trained on the PLG labels; no PLD step",
}


def source_record(source: str) -> dict:
    """The labels record (as `labels/choice.json`: apply, modalities -> source, reason) of a
    model trained on `labels.source`'s labels where no PLD choice was made: video, ma, plg."""
    if source not in SOURCE_REASONS:
        raise ValueError(f"labels.source={source!r} has no fixed labels record; expected one "
                         f"of {', '.join(SOURCE_REASONS)}")
    return {"source": source, "apply": "never",
            "modalities": {m: {"modality": m, "source": source, "apply": "never",
                               "reason": SOURCE_REASONS[source]} for m in MODALITIES}}


def apply_label_choice(plg: PseudoLabels, pld_labels: PseudoLabels,
                       choices: Mapping[str, LabelChoice]) -> PseudoLabels:
    """The labels to train on: per modality the PLD or PLG labels, as `choices` decided."""
    picked = {modality: getattr(pld_labels if choices[modality].uses_denoised else plg,
                                f"seg_{modality}") for modality in MODALITIES}
    return PseudoLabels(seg_audio=picked["audio"], seg_visual=picked["visual"])
