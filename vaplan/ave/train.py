"""Weak training of the AVE models (AVEL, PSP, CMBS) and their one evaluation (docs/ave.md).

The weak protocol of the references: each training video gives only its event class (the
background-only videos: class 28); the model's video-level prediction (`AveOutput.video_probs`)
is fitted to it with the model's weak loss (`video_loss`: AVEL and CMBS the multi-label soft
margin, PSP BCE); every evaluation is per-segment argmax of `AveOutput.segment_scores` over 29
classes against the segment truth (`vaplan.metrics.ave_segment_accuracy`). With PLG segment
labels (`plg_weight` > 0) a segment-level cross-entropy of `AveOutput.plg_scores` towards the
pseudo label (the video's event where audio and visual teachers agree, background elsewhere) is
added, the extra objective the VAPLAN paper uses for AVEL. One loop trains all three models; each
model's recipe (its reference main's optimizer settings) is `AVE_RECIPES[name]`.

AVEL's recipe (weak_supervised_main.py) is AveTrainConfig's defaults: Adam lr 1e-3, batch 64
(last partial batch dropped), StepLR(15000 steps, 0.1) stepped per batch, 250 epochs, validation
every 5 epochs. Deviation (all three): the best *validation* epoch is kept (ties keep the later
one, as the official AVVP code does); AVEL's reference never updates its best validation
accuracy, PSP's and CMBS's keep the best *test* epoch.
Shapes: N videos, B batch, T = 10 segments, K = 29 classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vaplan.ave.avel import NUM_OUTPUTS, AveOutput
from vaplan.config import (DEVICE, NON_NEGATIVE, POSITIVE, SEED, Checked, Rule, integer,
                           option)
from vaplan.data.ave import BACKGROUND, NUM_AVE_CLASSES
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.metrics import ave_segment_accuracy
from vaplan.pseudo_labels import threshold_segments

VideoLoss = Literal["soft_margin", "bce"]
MILESTONES = Rule("str", pattern=r"(\d+(,\d+)*)?",
                  text="comma-separated epochs, e.g. '80,160' ('' for none)")


@dataclass(frozen=True)
class AveTrainConfig(Checked):
    """A weak recipe (defaults: AVEL's reference; `AVE_RECIPES` has each model's); plg_weight
    0 = the weak baseline. Checked by the project's one option validation (vaplan.config
    `option` rules). The learning rate is multiplied by lr_gamma every lr_step_size optimizer
    steps (StepLR stepped per batch, AVEL) or after each epoch listed in lr_milestones
    (MultiStepLR stepped per epoch, PSP and CMBS); one of the two, or neither."""

    SECTION: ClassVar[str] = "train"  # the AVE experiment's `train.*` (vaplan.ave.config)

    epochs: int = option(250, integer(1))
    batch_size: int = option(64, integer(1))
    drop_last: bool = True  # drop the last partial batch (AVEL, PSP: nb_batch = N // batch)
    lr: float = option(1e-3, POSITIVE)
    lr_step_size: int = option(15000, integer(0))  # optimizer steps; 0 = no per-step decay
    lr_milestones: str = option("", MILESTONES)  # epochs after which lr *= lr_gamma
    lr_gamma: float = option(0.1, POSITIVE)
    clip_grad_norm: float = option(0.0, NON_NEGATIVE)  # max gradient L2 norm; 0 = no clipping
    video_loss: VideoLoss = "soft_margin"
    eval_every: int = option(5, integer(1))
    plg_weight: float = option(0.0, NON_NEGATIVE)
    seed: int = option(0, SEED)
    device: str = option("cpu", DEVICE)
    num_threads: int = option(0, integer(0))  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr_step_size and self.lr_milestones:
            raise ConfigError(f"{self.SECTION}.lr_step_size ({self.lr_step_size}) and "
                              f"{self.SECTION}.lr_milestones ({self.lr_milestones!r}) are two "
                              f"schedules; set lr_step_size=0 or lr_milestones=''")

    def milestones(self) -> list[int]:
        """lr_milestones as a list of epochs."""
        return [int(epoch) for epoch in self.lr_milestones.split(",") if epoch]


# Each model's weak recipe from its reference main (docs/ave.md "Models"):
# AVEL  AVE-ECCV18 weak_supervised_main.py: Adam 1e-3, batch 64, StepLR(15000, 0.1) per batch,
#       250 epochs, validation every 5, MultiLabelSoftMarginLoss.
# PSP   PSP_CVPR_2021 weakly_supervised_main.py: Adam 1e-3, batch 128, lr x 0.8 after epochs 80
#       and 160 (ScheduledOptim.update_lr when (epoch+1) % 80 == 0 and epoch < 200), 300 epochs,
#       validation every 5, BCELoss on the softmax video prediction.
# CMBS  CMBS weakly_train.sh + weakly_main.py: Adam 6e-4, batch 64 (no partial batch dropped),
#       MultiStepLR([10, 20, 40], 0.5) per epoch, gradient norm clipped at 0.5, 200 epochs,
#       evaluation every epoch, MultiLabelSoftMarginLoss.
AVE_RECIPES: dict[str, AveTrainConfig] = {
    "avel": AveTrainConfig(),
    "psp": AveTrainConfig(epochs=300, batch_size=128, lr=1e-3, lr_step_size=0,
                          lr_milestones="80,160", lr_gamma=0.8, video_loss="bce", eval_every=5),
    "cmbs": AveTrainConfig(epochs=200, batch_size=64, drop_last=False, lr=6e-4, lr_step_size=0,
                           lr_milestones="10,20,40", lr_gamma=0.5, clip_grad_norm=0.5,
                           eval_every=1),
}


@dataclass(frozen=True)
class AveSplitTensors:
    """One split's model inputs and labels (features may be float16; cast per batch)."""

    audio: np.ndarray  # (N, T, 128)
    visual: np.ndarray  # (N, T, 7, 7, 512)
    video_label: np.ndarray  # (N,) int in [0, 28]; 28 = a background-only video
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


def weak_loss(output: AveOutput, video_label: torch.Tensor, pseudo: torch.Tensor | None,
              plg_weight: float, video_loss: str = "soft_margin") -> torch.Tensor:
    """The model's weak loss on its video prediction (multi-label soft margin, or BCE for PSP)
    + plg_weight x the segment cross-entropy of its PLG scores towards the PLG labels."""
    targets = weak_targets(video_label)  # (B, 29)
    if video_loss == "soft_margin":
        loss = F.multilabel_soft_margin_loss(output.video_probs, targets)
    elif video_loss == "bce":
        loss = F.binary_cross_entropy(output.video_probs, targets)
    else:
        raise ConfigError(f"train.video_loss must be one of ['soft_margin', 'bce'], "
                          f"got {video_loss!r}")
    if plg_weight > 0:
        if pseudo is None:
            raise ConfigError("train.plg_weight > 0 needs PLG segment labels for the train split")
        loss = loss + plg_weight * F.cross_entropy(output.plg_scores.reshape(-1, NUM_OUTPUTS),
                                                   pseudo.reshape(-1).long())
    return loss


def weak_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: AveTrainConfig,
              audio: torch.Tensor, visual: torch.Tensor, video_label: torch.Tensor,
              pseudo: torch.Tensor | None = None) -> float:
    """One optimizer step on one batch (B, T, 128), (B, T, 7, 7, 512), (B,) [, (B, T)] -> loss."""
    loss = weak_loss(model(audio, visual), video_label, pseudo, cfg.plg_weight, cfg.video_loss)
    if not torch.isfinite(loss):
        raise NonFiniteTrainingError("AVE training: non-finite loss (lower train.lr?)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def predict_segments(model: nn.Module, split: AveSplitTensors, device: str = "cpu",
                     batch_size: int = 256) -> np.ndarray:
    """(N, T) predicted classes: per-segment argmax of the segment scores."""
    model.eval()
    out = []
    for start in range(0, len(split.video_label), batch_size):
        audio = torch.as_tensor(split.audio[start:start + batch_size]).float().to(device)
        visual = torch.as_tensor(split.visual[start:start + batch_size]).float().to(device)
        out.append(model(audio, visual).segment_scores.argmax(dim=-1).cpu().numpy())
    return np.concatenate(out)


def evaluate(model: nn.Module, split: AveSplitTensors, device: str = "cpu") -> float:
    """Segment accuracy (percent) of `model` on a split with truth."""
    if split.truth is None:
        raise ValueError("evaluate needs the split's segment truth")
    return ave_segment_accuracy(predict_segments(model, split, device), split.truth)


def train_weak(model: nn.Module, cfg: AveTrainConfig, train: AveSplitTensors,
               val: AveSplitTensors, on_epoch: Callable[[dict], None] | None = None
               ) -> AveTrainResult:
    """Train `model` with the weak protocol (+PLG when cfg.plg_weight > 0); keep the best val
    epoch. history[i]["lr"] is the learning rate epoch i started with; `on_epoch(record)` is
    called with each epoch's record (epoch, loss, lr[, val_accuracy])."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = model.to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    per_step = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step_size, cfg.lr_gamma) \
        if cfg.lr_step_size else None
    per_epoch = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones(), cfg.lr_gamma) \
        if cfg.lr_milestones else None
    labels = torch.as_tensor(train.video_label)
    pseudo = None if train.pseudo is None else torch.as_tensor(train.pseudo)
    size = len(labels)
    # a split smaller than one batch still trains on one (partial) batch
    stop = size - size % cfg.batch_size if cfg.drop_last and size >= cfg.batch_size else size
    best_state, best_epoch, best_accuracy, history = None, 0, -1.0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(size, generator=generator)
        lr = optimizer.param_groups[0]["lr"]
        total, steps = 0.0, 0
        for start in range(0, stop, cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            audio = torch.as_tensor(train.audio[index.numpy()]).float().to(cfg.device)
            visual = torch.as_tensor(train.visual[index.numpy()]).float().to(cfg.device)
            try:
                loss = weak_step(model, optimizer, cfg, audio, visual, labels[index].to(cfg.device),
                                 None if pseudo is None else pseudo[index].to(cfg.device))
            except NonFiniteTrainingError:
                raise NonFiniteTrainingError(f"AVE training: non-finite loss at epoch {epoch}, "
                                             f"step {steps + 1} (lower train.lr?)") from None
            if per_step is not None:
                per_step.step()  # per batch, as AVEL's reference
            total, steps = total + loss, steps + 1
        record = {"epoch": epoch, "loss": total / steps, "lr": lr}
        if per_epoch is not None:
            per_epoch.step()  # after the epoch, as PSP's and CMBS's references
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            record["val_accuracy"] = evaluate(model, val, cfg.device)
            if record["val_accuracy"] >= best_accuracy:
                best_state = copy.deepcopy(model.state_dict())
                best_epoch, best_accuracy = epoch, record["val_accuracy"]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.load_state_dict(best_state)
    return AveTrainResult(model, best_epoch, best_accuracy, history)


def plg_segment_classes(video_label: np.ndarray, clip_scores: np.ndarray, clap_scores: np.ndarray,
                        visual_threshold: float, audio_threshold: float) -> np.ndarray:
    """PLG for AVEL: (N,) event classes, (N, T, 28) CLIP and CLAP segment scores -> (N, T) classes:
    the video's event where both teachers' thresholded labels (PLG's `threshold_segments`,
    restricted to the video label) carry it — the audio-visual event — else background
    (everywhere for a background-only video, class 28)."""
    video_label = np.asarray(video_label)
    event = video_label < NUM_AVE_CLASSES  # (N,) False for background-only videos
    column = np.where(event, video_label, 0)
    one_hot = np.eye(NUM_AVE_CLASSES, dtype=np.uint8)[column] * event[:, None]  # (N, 28)
    rows = np.arange(len(video_label))
    visual = threshold_segments(clip_scores, one_hot, visual_threshold)[rows, :, column]  # (N, T)
    audio = threshold_segments(clap_scores, one_hot, audio_threshold)[rows, :, column]
    return np.where(visual.astype(bool) & audio.astype(bool), video_label[:, None],
                    BACKGROUND).astype(np.int64)
