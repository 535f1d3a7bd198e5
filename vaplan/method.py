"""The VAPLAN method as four library calls shared by the ablation, the pipeline and the sweeps.

    pseudo = make_pseudo_labels(dataset, "train", plg)            # PLG (Eq. 3-4)
    stage1 = fit(train_cfg, dataset, pseudo)                      # L_V + lambda * L_S
    clean  = denoise_with_model(stage1.model, dataset.train, pseudo, pld, device)   # PLD
    final  = fit(train_cfg, dataset, clean)                       # retrain on denoised labels
"""

from __future__ import annotations

import numpy as np

from vaplan.config import PLDConfig, PLGConfig, TrainConfig
from vaplan.data.types import Dataset, PseudoLabels, SplitData
from vaplan.denoise import denoise_labels
from vaplan.pseudo_labels import generate_pseudo_labels


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
        progress: bool = True):
    """Train HAN on dataset.train with `pseudo` targets (None: weak labels), select on val."""
    from vaplan.train import build_targets, train_han  # torch is imported only when training

    targets = build_targets(dataset.train, pseudo)
    return train_han(cfg, dataset.train, targets, dataset.val, on_epoch=on_epoch,
                     progress=progress)


def denoise_with_model(model, split: SplitData, pseudo: PseudoLabels, pld: PLDConfig,
                       device: str = "cpu") -> PseudoLabels:
    """Predict `split` with the stage-one model and denoise its pseudo labels."""
    from vaplan.train import predict

    prediction = predict(model, split.features, device=device)
    return denoise_pseudo_labels(prediction.prob_seg, pseudo, pld)
