"""The HAN trainer: targets, the training loop, prediction, official evaluation and checkpoints.

Features are held in memory as torch tensors (converted once per training, float16 stays
float16 and each batch is cast to float32), batches are picked by index from a seeded
torch.Generator, and every epoch is validated with the official protocol (`evaluate_model`).
On CPU a run is deterministic for a fixed seed: torch.manual_seed fixes the initial weights and
the dropout masks, the generator fixes the shuffling, and the CPU kernels used here are
deterministic (so torch.use_deterministic_algorithms is not needed).
Shapes: N videos, B batch, T=10 segments, C=25 classes.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from vaplan import metrics
from vaplan.config import TrainConfig, from_dict, to_dict
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.losses import BatchTargets, compute_loss
from vaplan.models import HAN, HANOutput

CHECKPOINT_FORMAT_VERSION = 1
Inputs = tuple[Tensor, Tensor, "Tensor | None"]  # audio, visual, visual_3d


@dataclass
class TrainTargets:
    """Training targets, row-aligned with the train split (uint8 {0,1})."""

    video_labels: np.ndarray  # (N, C) y
    video_audio: np.ndarray  # (N, C) y^a
    video_visual: np.ndarray  # (N, C) y^v
    seg_audio: np.ndarray | None = None  # (N, T, C) Ŷ^a
    seg_visual: np.ndarray | None = None  # (N, T, C) Ŷ^v

    def __len__(self) -> int:
        return int(self.video_labels.shape[0])


@dataclass
class Predictions:
    """Model outputs for one split (float32 numpy)."""

    prob_video: np.ndarray  # (N, C)
    prob_audio: np.ndarray  # (N, C)
    prob_visual: np.ndarray  # (N, C)
    prob_seg: np.ndarray  # (N, T, 2, C), index 0 audio, 1 visual


@dataclass
class EpochStats:
    """One epoch: 1-based number, mean train loss, validation scores (percent), wall time."""

    epoch: int
    train_loss: float
    val: dict[str, float]
    seconds: float


@dataclass
class TrainResult:
    """A finished training: the model with the best epoch's weights loaded."""

    model: HAN
    config: TrainConfig
    best_epoch: int
    best_score: float
    history: list[EpochStats] = field(default_factory=list)


def build_targets(split: SplitData, pseudo: PseudoLabels | None) -> TrainTargets:
    """Targets for `split`: the weak labels for both modalities, or PLG/PLD pseudo labels."""
    y = np.asarray(split.video_labels, dtype=np.uint8)  # (N, C)
    if pseudo is None:
        return TrainTargets(y, y, y)
    for name, seg in (("seg_audio", pseudo.seg_audio), ("seg_visual", pseudo.seg_visual)):
        if seg.ndim != 3 or seg.shape[0] != y.shape[0] or seg.shape[2] != y.shape[1]:
            raise ValueError(f"pseudo labels {name} have shape {seg.shape}; expected "
                             f"({y.shape[0]}, T, {y.shape[1]}) for split {split.name!r}")
    return TrainTargets(y, pseudo.video_audio.astype(np.uint8),
                        pseudo.video_visual.astype(np.uint8),
                        pseudo.seg_audio.astype(np.uint8), pseudo.seg_visual.astype(np.uint8))


def _as_tensor(array: np.ndarray | None, device: str) -> Tensor | None:
    """numpy (possibly a read-only memmap) -> tensor on `device`, dtype kept."""
    if array is None:
        return None
    array = np.asarray(array)
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C")  # one copy; torch needs writeable memory
    return torch.from_numpy(array).to(device)


def features_to_tensors(features: Features, device: str = "cpu") -> Inputs:
    """Features -> (audio (N,T,Da), visual (N,T,Dv), visual_3d (N,T,D3) or None) tensors."""
    return (_as_tensor(features.audio, device), _as_tensor(features.visual, device),
            _as_tensor(features.visual_3d, device))


def targets_to_tensors(targets: TrainTargets, device: str = "cpu") -> BatchTargets:
    """TrainTargets -> BatchTargets of uint8 tensors for all N rows (cast per batch)."""
    return BatchTargets(*(_as_tensor(getattr(targets, name), device) for name in
                          ("video_labels", "video_audio", "video_visual", "seg_audio",
                           "seg_visual")))


def select_batch(inputs: Inputs, targets: BatchTargets,
                 index: Tensor) -> tuple[Inputs, BatchTargets]:
    """Rows `index` of the inputs and targets, cast to float32."""
    pick = lambda t: None if t is None else t[index].float()  # noqa: E731
    batch_targets = BatchTargets(pick(targets.video_labels), pick(targets.video_audio),
                                 pick(targets.video_visual), pick(targets.seg_audio),
                                 pick(targets.seg_visual))
    return (pick(inputs[0]), pick(inputs[1]), pick(inputs[2])), batch_targets


def training_autocast(precision: str, device: str):
    """bf16 autocast for the forward pass of a training step, or a no-op for fp32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"train.precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def train_step(model: HAN, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               inputs: Inputs, targets: BatchTargets) -> float:
    """One optimisation step on one batch; returns the loss value."""
    with training_autocast(cfg.precision, cfg.device):
        out = model(*inputs)
    out = HANOutput(*(t.float() for t in out))  # the loss is always computed in fp32
    loss, _ = compute_loss(cfg.loss, out, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_epoch(model: HAN, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                inputs: Inputs, targets: BatchTargets, generator: torch.Generator,
                on_step: Callable[[float], None] | None = None) -> float:
    """One pass over the shuffled data in batches of cfg.batch_size; returns the mean loss."""
    model.train()
    n = inputs[0].shape[0]
    order = torch.randperm(n, generator=generator).to(inputs[0].device)  # (N,)
    losses = []
    for start in range(0, n, cfg.batch_size):
        batch_inputs, batch_targets = select_batch(inputs, targets,
                                                   order[start:start + cfg.batch_size])
        losses.append(train_step(model, optimizer, cfg, batch_inputs, batch_targets))
        if on_step is not None:
            on_step(losses[-1])
    return float(np.mean(losses))


@torch.inference_mode()
def predict(model: HAN, features: Features, device: str = "cpu",
            batch_size: int = 256) -> Predictions:
    """Run the model in eval mode over `features` in batches -> float32 numpy Predictions."""
    was_training = model.training
    model.eval().to(device)
    outputs: dict[str, list[np.ndarray]] = {"video": [], "audio": [], "visual": [], "seg": []}
    for start in range(0, len(features), batch_size):
        rows = slice(start, start + batch_size)
        batch = [None if a is None else torch.from_numpy(np.array(a[rows])).to(device).float()
                 for a in (features.audio, features.visual, features.visual_3d)]
        out = model(*batch)
        for key in outputs:
            outputs[key].append(getattr(out, key).float().cpu().numpy())
    model.train(was_training)
    joined = {key: np.concatenate(parts) if parts else np.zeros((0,), np.float32)
              for key, parts in outputs.items()}
    return Predictions(joined["video"], joined["audio"], joined["visual"], joined["seg"])


def evaluate_model(model_or_predictions: HAN | Predictions, split: SplitData) -> dict[str, float]:
    """Official protocol: filter_by_video on each modality, then avvp_scores (percent)."""
    if split.gt_audio is None or split.gt_visual is None:
        raise ValueError(f"split {split.name!r} has no segment ground truth to evaluate against")
    preds = model_or_predictions
    if isinstance(preds, nn.Module):
        if split.features is None:
            raise ValueError(f"split {split.name!r} has no features to predict from")
        device = next(preds.parameters()).device
        preds = predict(preds, split.features, device=str(device))
    pred_audio = metrics.filter_by_video(preds.prob_seg[:, :, 0], preds.prob_video)  # (N,T,C)
    pred_visual = metrics.filter_by_video(preds.prob_seg[:, :, 1], preds.prob_video)
    return metrics.avvp_scores(pred_audio, pred_visual, split.gt_audio, split.gt_visual)


def _check_training_inputs(train: SplitData, targets: TrainTargets, val: SplitData | None) -> None:
    if train.features is None:
        raise ValueError(f"train split {train.name!r} has no features")
    if len(targets) != len(train):
        raise ValueError(f"targets have {len(targets)} rows but split {train.name!r} "
                         f"has {len(train)} videos")
    if val is not None and val.features is None:
        raise ValueError(f"validation split {val.name!r} has no features")


def _progress_bar(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def _validate(model: HAN, val: SplitData | None, cfg: TrainConfig) -> tuple[dict, float]:
    """Validation scores and the selection score (-inf without a validation split)."""
    if val is None:
        return {}, float("-inf")
    scores = evaluate_model(predict(model, val.features, device=cfg.device), val)
    if cfg.select_metric not in scores:
        raise ValueError(f"select_metric {cfg.select_metric!r} is not a validation score; "
                         f"expected one of {sorted(scores)}")
    return scores, scores[cfg.select_metric]


def train_han(cfg: TrainConfig, train: SplitData, targets: TrainTargets,
              val: SplitData | None, on_epoch: Callable[[EpochStats], None] | None = None,
              progress: bool = True) -> TrainResult:
    """Train HAN(cfg.model) with Adam and keep the epoch with the best cfg.select_metric on val.

    Without a validation split the last epoch is kept. Ties keep the earlier epoch.
    """
    _check_training_inputs(train, targets, val)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = HAN(cfg.model).to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    inputs = features_to_tensors(train.features, cfg.device)
    target_tensors = targets_to_tensors(targets, cfg.device)
    steps = -(-len(train) // cfg.batch_size)
    history: list[EpochStats] = []
    best_state, best_epoch, best_score = None, 0, float("-inf")
    with _progress_bar(progress) as bar:
        task = bar.add_task("train HAN", total=cfg.epochs * steps)
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            loss = train_epoch(model, optimizer, cfg, inputs, target_tensors, generator,
                               on_step=lambda _: bar.advance(task))
            scores, score = _validate(model, val, cfg)
            stats = EpochStats(epoch, loss, scores, time.perf_counter() - started)
            history.append(stats)
            if best_state is None or score > best_score or val is None:
                best_state = copy.deepcopy(model.state_dict())
                best_epoch, best_score = epoch, score
            line = f"epoch {epoch}/{cfg.epochs} loss {loss:.4f} {cfg.select_metric} {score:.2f}"
            bar.update(task, description=line)
            if progress and not bar.console.is_terminal:  # logs (CI, Ray jobs): one line per epoch
                bar.console.print(f"{line} ({stats.seconds:.1f} s)")
            if on_epoch is not None:
                on_epoch(stats)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, cfg, best_epoch, best_score, history)


def save_checkpoint(path: str | os.PathLike, model: HAN, cfg: TrainConfig,
                    extra: dict | None = None) -> Path:
    """Atomically write {"state_dict", "config", "extra", "format_version"} to `path`.

    `extra` must be JSON-serialisable (it is loaded back with torch.load(weights_only=True)).
    """
    path = Path(path)
    extra = dict(extra or {})
    try:
        json.dumps(extra)
    except TypeError as err:
        raise ValueError(f"checkpoint extra for {path} must be JSON-serialisable: {err}") from None
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "config": to_dict(cfg), "extra": extra,
               "format_version": CHECKPOINT_FORMAT_VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[HAN, TrainConfig, dict]:
    """Rebuild (HAN in eval mode, TrainConfig, extra) from a `save_checkpoint` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, ...
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file: {err}") from err
    keys = set(payload) if isinstance(payload, dict) else set()
    missing = {"state_dict", "config", "format_version"} - keys
    if missing:
        raise ValueError(f"checkpoint {path} is not a vaplan checkpoint "
                         f"(missing {sorted(missing)})")
    if payload["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format_version {payload['format_version']}; "
                         f"expected {CHECKPOINT_FORMAT_VERSION}")
    cfg = from_dict(TrainConfig, payload["config"])
    model = HAN(cfg.model)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: weights do not fit HAN({cfg.model}): {err}") from err
    return model.to(device).eval(), cfg, payload.get("extra") or {}
