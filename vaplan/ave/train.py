"""Weak training of the AVE models and their evaluation (docs/ave.md).

The weak protocol of the references: each training video gives only its event class; the model's
video-level prediction (softmax of the time-max-pooled segment scores) is fitted to it with a
multi-label soft-margin loss; every evaluation is per-segment argmax over 29 classes against the
segment truth (`vaplan.metrics.ave_segment_accuracy`). With PLG segment labels (`plg_weight` > 0)
a segment-level cross-entropy towards the pseudo label (the video's event where audio and visual
teachers agree, background elsewhere) is added, the extra objective the VAPLAN paper uses for AVEL.

AVEL's recipe (weak_supervised_main.py): Adam lr 1e-3, batch 64, StepLR(15000 steps, 0.1)
stepped per batch, 250 epochs, validation every 5 epochs. Deviation: the reference never updates
its best validation accuracy, so it saves after every validation; here the best validation
epoch is kept (ties keep the later one, as the official AVVP code does).
Shapes: N videos, B batch, T = 10 segments, K = 29 classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vaplan.config import DEVICE, NON_NEGATIVE, POSITIVE, SEED, Checked, integer, option
from vaplan.data.ave import BACKGROUND, NUM_AVE_CLASSES
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.metrics import ave_segment_accuracy
from vaplan.pseudo_labels import threshold_segments

NUM_OUTPUTS = NUM_AVE_CLASSES + 1  # 28 events + background


@dataclass(frozen=True)
class AveTrainConfig(Checked):
    """The AVEL weak recipe (defaults from the reference); plg_weight 0 = the weak baseline.
    Checked by the project's one option validation (vaplan.config `option` rules)."""

    SECTION: ClassVar[str] = "ave.train"

    epochs: int = option(250, integer(1))
    batch_size: int = option(64, integer(1))
    lr: float = option(1e-3, POSITIVE)
    lr_step_size: int = option(15000, integer(1))  # optimizer steps: the reference steps per batch
    lr_gamma: float = option(0.1, POSITIVE)
    eval_every: int = option(5, integer(1))
    plg_weight: float = option(0.0, NON_NEGATIVE)
    seed: int = option(0, SEED)
    device: str = option("cpu", DEVICE)


@dataclass(frozen=True)
class AveSplitTensors:
    """One split's model inputs and labels (features may be float16; cast per batch)."""

    audio: np.ndarray  # (N, T, 128)
    visual: np.ndarray  # (N, T, 7, 7, 512)
    video_label: np.ndarray  # (N,) int in [0, 28)
    truth: np.ndarray | None = None  # (N, T) int in [0, 28] (evaluation only)
    pseudo: np.ndarray | None = None  # (N, T) int in [0, 28]: PLG segment classes (training only)


@dataclass
class AveTrainResult:
    model: nn.Module  # the best validation epoch's weights
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss, lr (+ val_accuracy)


def weak_targets(video_label: torch.Tensor) -> torch.Tensor:
    """(B,) event classes -> (B, 29) one-hot video-level targets (the reference's MIL labels)."""
    return F.one_hot(video_label.long(), NUM_OUTPUTS).float()


def weak_loss(video_probs: torch.Tensor, video_label: torch.Tensor, segment_scores: torch.Tensor,
              pseudo: torch.Tensor | None, plg_weight: float) -> torch.Tensor:
    """Multi-label soft margin on the video prediction (+ plg_weight x segment cross-entropy)."""
    loss = F.multilabel_soft_margin_loss(video_probs, weak_targets(video_label))
    if plg_weight > 0:
        if pseudo is None:
            raise ConfigError("ave.train.plg_weight > 0 needs PLG segment labels for the train split")
        loss = loss + plg_weight * F.cross_entropy(segment_scores.reshape(-1, NUM_OUTPUTS),
                                                   pseudo.reshape(-1).long())
    return loss


@torch.no_grad()
def predict_segments(model: nn.Module, split: AveSplitTensors, device: str = "cpu",
                     batch_size: int = 256) -> np.ndarray:
    """(N, T) predicted classes: per-segment argmax of the segment scores."""
    model.eval()
    out = []
    for start in range(0, len(split.video_label), batch_size):
        audio = torch.as_tensor(split.audio[start:start + batch_size]).float().to(device)
        visual = torch.as_tensor(split.visual[start:start + batch_size]).float().to(device)
        out.append(model(audio, visual)[1].argmax(dim=-1).cpu().numpy())
    return np.concatenate(out)


def evaluate(model: nn.Module, split: AveSplitTensors, device: str = "cpu") -> float:
    """Segment accuracy (percent) of `model` on a split with truth."""
    if split.truth is None:
        raise ValueError("evaluate needs the split's segment truth")
    return ave_segment_accuracy(predict_segments(model, split, device), split.truth)


def train_weak(model: nn.Module, cfg: AveTrainConfig, train: AveSplitTensors,
               val: AveSplitTensors) -> AveTrainResult:
    """Train `model` with the weak protocol (+PLG when cfg.plg_weight > 0); keep the best val epoch."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = model.to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step_size, cfg.lr_gamma)
    labels = torch.as_tensor(train.video_label)
    pseudo = None if train.pseudo is None else torch.as_tensor(train.pseudo)
    best_state, best_epoch, best_accuracy, history = None, 0, -1.0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            audio = torch.as_tensor(train.audio[index.numpy()]).float().to(cfg.device)
            visual = torch.as_tensor(train.visual[index.numpy()]).float().to(cfg.device)
            video_probs, scores = model(audio, visual)
            loss = weak_loss(video_probs, labels[index].to(cfg.device), scores,
                             None if pseudo is None else pseudo[index].to(cfg.device), cfg.plg_weight)
            if not torch.isfinite(loss):
                raise NonFiniteTrainingError(f"AVE training: non-finite loss at epoch {epoch}, "
                                             f"step {steps + 1} (lower ave.train.lr?)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # per batch, as the reference
            total, steps = total + loss.item(), steps + 1
        record = {"epoch": epoch, "loss": total / steps, "lr": optimizer.param_groups[0]["lr"]}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            record["val_accuracy"] = evaluate(model, val, cfg.device)
            if record["val_accuracy"] >= best_accuracy:
                best_state = copy.deepcopy(model.state_dict())
                best_epoch, best_accuracy = epoch, record["val_accuracy"]
        history.append(record)
    model.load_state_dict(best_state)
    return AveTrainResult(model, best_epoch, best_accuracy, history)


def plg_segment_classes(video_label: np.ndarray, clip_scores: np.ndarray, clap_scores: np.ndarray,
                        visual_threshold: float, audio_threshold: float) -> np.ndarray:
    """PLG for AVEL: (N,) event classes, (N, T, 28) CLIP and CLAP segment scores -> (N, T) classes:
    the video's event where both teachers' thresholded labels (PLG's `threshold_segments`,
    restricted to the video label) carry it — the audio-visual event — else background."""
    video_label = np.asarray(video_label)
    one_hot = np.eye(NUM_AVE_CLASSES, dtype=np.uint8)[video_label]  # (N, 28)
    rows = np.arange(len(video_label))
    visual = threshold_segments(clip_scores, one_hot, visual_threshold)[rows, :, video_label]  # (N, T)
    audio = threshold_segments(clap_scores, one_hot, audio_threshold)[rows, :, video_label]
    return np.where(visual.astype(bool) & audio.astype(bool), video_label[:, None],
                    BACKGROUND).astype(np.int64)
