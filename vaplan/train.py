"""The HAN trainer: targets, the training loop, prediction, official evaluation and checkpoints.

Features are held in memory as torch tensors (converted once per training, float16 stays
float16 and each batch is cast to float32), batches are picked by index from a seeded
torch.Generator, and every epoch is validated with the official protocol (`evaluate_model`).
On CPU a run is deterministic for a fixed seed: torch.manual_seed fixes the initial weights and
the dropout masks, the generator fixes the shuffling, and the CPU kernels used here are
deterministic (so torch.use_deterministic_algorithms is not needed).

Guards: a non-finite loss or gradient (checked every step, before optimizer.step, in the one host
sync the step already had: the loss and the total gradient norm are read together) or a non-finite
weight (checked after every epoch and on the returned best state) stops training with
NonFiniteTrainingError naming the epoch, the step, what was non-finite and the likely cause.
A checkpoint records `epochs_completed`; `check_trained` refuses a model that has non-finite
weights or never completed an epoch (called before a model is registered).
Shapes: N videos, B batch, T=10 segments, C=25 classes.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import get_total_norm

from vaplan import metrics
from vaplan.config import TrainConfig, from_dict, to_dict
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.io import atomic_path
from vaplan.losses import BatchTargets, compute_loss
from vaplan.models import HAN, HANOutput, build_model

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
    """One epoch: 1-based number, mean train loss, validation scores (percent), wall time and
    the learning rate its steps used."""

    epoch: int
    train_loss: float
    val: dict[str, float]
    seconds: float
    lr: float

    def metrics(self) -> dict[str, float]:
        """The epoch's curve points under the names every run uses, pipeline step, ablation
        unit and sweep trial alike (docs/pipelines.md "Metric names"; step = epoch):
        epoch/train_loss, epoch/lr, epoch/seconds and epoch/val/<score> for every val score."""
        return {"epoch/train_loss": self.train_loss, "epoch/lr": self.lr,
                "epoch/seconds": self.seconds,
                **{f"epoch/val/{key}": value for key, value in self.val.items()}}


@dataclass
class TrainResult:
    """A finished training: the model with the best epoch's weights loaded."""

    model: HAN
    config: TrainConfig
    best_epoch: int
    best_score: float
    history: list[EpochStats] = field(default_factory=list)

    @property
    def epochs_completed(self) -> int:
        return len(self.history)


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


def _non_finite_names(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """Names of the tensors holding NaN/inf (slow path: one check per tensor, errors only)."""
    return [name for name, t in named
            if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _name_list(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _likely_cause(model: HAN, cfg: TrainConfig, inputs: Inputs,
                  video_ids: Sequence[str] | None) -> str:
    """Why a step went non-finite: bad input features, weights already gone, or divergence."""
    streams = [(name, x) for name, x in zip(("audio", "visual", "visual_3d"), inputs)
               if x is not None and not bool(torch.isfinite(x).all())]
    if streams:
        rows = torch.zeros(streams[0][1].shape[0], dtype=torch.bool, device=streams[0][1].device)
        for _, x in streams:
            rows |= ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        bad = rows.nonzero().flatten().tolist()
        which = (f" ({_name_list([str(video_ids[i]) for i in bad])})"
                 if video_ids is not None else "")
        return (f"the input features ({', '.join(n for n, _ in streams)}) contain NaN/inf in "
                f"{len(bad)} video(s) of this batch{which}: fix or rebuild the features")
    weights = _non_finite_names(model.named_parameters())
    if weights:
        return (f"the weights {_name_list(weights)} already became NaN/inf at an earlier "
                f"step: the optimisation diverged; lower train.lr (now {cfg.lr:g})")
    return (f"the optimisation diverged (exploding loss or gradients): lower train.lr "
            f"(now {cfg.lr:g}) or check the train.loss weights")


def _step_error(model: HAN, cfg: TrainConfig, inputs: Inputs, where: str, loss: float,
                video_ids: Sequence[str] | None) -> NonFiniteTrainingError:
    if not math.isfinite(loss):
        what = f"the loss is {loss}"
    else:
        grads = _non_finite_names((n, p.grad) for n, p in model.named_parameters())
        what = (f"the gradient of {_name_list(grads) or 'a parameter'} is NaN/inf "
                f"(loss {loss:.4g})")
    return NonFiniteTrainingError(f"non-finite training at {where}: {what}; likely cause: "
                                  f"{_likely_cause(model, cfg, inputs, video_ids)}")


def _norm(tensors: list[Tensor]) -> Tensor:
    """Total L2 norm (0-d, on the first tensor's device): NaN/inf if any element is NaN/inf.

    One fused foreach reduction (~1 ms for HAN's 4.6 M weights on one CPU core; the inf-norm
    is ~13x slower on CPU). It can also overflow to inf for finite values above ~1e19, so a
    non-finite norm is confirmed element-wise (_non_finite_names) before anything is refused.
    """
    return get_total_norm(tensors, 2.0) if tensors else torch.zeros(())


def check_weights(model: nn.Module | Mapping[str, Tensor], where: str,
                  lr: float | None = None) -> None:
    """Raise NonFiniteTrainingError naming the parameters if any weight is NaN/inf.

    `model`: a module or a state dict. One fused reduction; names are found only on failure.
    """
    named = [(name, t.detach()) for name, t in
             (model.items() if isinstance(model, Mapping) else model.named_parameters())
             if t.is_floating_point()]
    if math.isfinite(float(_norm([t for _, t in named]))):
        return
    bad = _non_finite_names(named)
    if not bad:  # the norm overflowed on huge but finite weights
        return
    hint = f"lower train.lr (now {lr:g})" if lr is not None else "retrain with a lower train.lr"
    raise NonFiniteTrainingError(f"non-finite weights {where}: {_name_list(bad)} contain "
                                 f"NaN/inf; likely cause: the optimisation diverged; {hint}")


def train_step(model: HAN, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               inputs: Inputs, targets: BatchTargets, where: str = "a training step",
               video_ids: Sequence[str] | None = None) -> float:
    """One optimisation step on one batch; returns the loss value.

    Before optimizer.step the loss and the total gradient norm (one fused reduction) are read
    in one host sync; if the loss or a gradient is non-finite the weights are left untouched
    and NonFiniteTrainingError names `where`, what was non-finite and the likely cause
    (`video_ids`: the batch's rows, to name videos with bad features).
    """
    with training_autocast(cfg.precision, cfg.device):
        out = model(*inputs)
    out = HANOutput(*(t.float() for t in out))  # the loss is always computed in fp32
    loss, _ = compute_loss(cfg.loss, out, targets)
    auxiliary = model.auxiliary_loss()  # the backbone's own term (MGN), docs/backbones.md
    if auxiliary is not None:
        loss = loss + auxiliary
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = _norm([p.grad for p in model.parameters() if p.grad is not None])
    loss_value, grad_value = torch.stack([loss.detach(), grad_norm.to(loss.device)]).tolist()
    if not math.isfinite(loss_value) or (not math.isfinite(grad_value) and _non_finite_names(
            (n, p.grad) for n, p in model.named_parameters())):
        raise _step_error(model, cfg, inputs, where, loss_value, video_ids)
    optimizer.step()
    return loss_value


def train_epoch(model: HAN, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                inputs: Inputs, targets: BatchTargets, generator: torch.Generator,
                on_step: Callable[[float], None] | None = None, epoch: int = 1,
                video_ids: Sequence[str] | None = None) -> float:
    """One pass over the shuffled data in batches of cfg.batch_size; returns the mean loss.

    Raises NonFiniteTrainingError naming `epoch` and the 1-based step for a non-finite loss or
    gradient, or for non-finite weights at the end of the epoch (`video_ids`: row names).
    """
    model.train()
    n = inputs[0].shape[0]
    steps = -(-n // cfg.batch_size)
    order_cpu = torch.randperm(n, generator=generator)  # (N,)
    order = order_cpu.to(inputs[0].device)
    losses = []
    for step, start in enumerate(range(0, n, cfg.batch_size), start=1):
        index = order[start:start + cfg.batch_size]
        batch_inputs, batch_targets = select_batch(inputs, targets, index)
        batch_ids = (None if video_ids is None else
                     [video_ids[i] for i in order_cpu[start:start + cfg.batch_size].tolist()])
        losses.append(train_step(model, optimizer, cfg, batch_inputs, batch_targets,
                                 where=f"epoch {epoch}, step {step}/{steps}",
                                 video_ids=batch_ids))
        if on_step is not None:
            on_step(losses[-1])
    check_weights(model, f"after epoch {epoch}, step {steps}/{steps}", cfg.lr)
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


def build_scheduler(optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """cfg.lr_schedule: "step" -> StepLR(lr_step_size, lr_gamma), stepped once after every epoch
    as the official main_avvp.py does (epochs 1-10 at lr, 11-20 at lr*gamma, ...); "none" -> None.
    """
    if cfg.lr_schedule == "none":
        return None
    if cfg.lr_schedule != "step":
        raise ConfigError(f"train.lr_schedule must be one of ['step', 'none'], "
                          f"got {cfg.lr_schedule!r}")
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size,
                                           gamma=cfg.lr_gamma)


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
    """Train HAN(cfg.model) with Adam under cfg.lr_schedule and keep the epoch with the best
    cfg.select_metric on val.

    Without a validation split the last epoch is kept. Ties keep the later epoch (the official
    main_avvp.py saves on `F >= best_F`; docs/fidelity.md).
    Raises ConfigError for cfg.epochs or cfg.batch_size < 1 (a model that never completed an
    epoch is never returned) and NonFiniteTrainingError for a non-finite loss, gradient or weight.
    """
    for name, value in (("epochs", cfg.epochs), ("batch_size", cfg.batch_size)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"train.{name} must be an integer >= 1, got {value!r}")
    _check_training_inputs(train, targets, val)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.model).to(cfg.device)  # cfg.model.name: docs/backbones.md
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg)
    inputs = features_to_tensors(train.features, cfg.device)
    target_tensors = targets_to_tensors(targets, cfg.device)
    steps = -(-len(train) // cfg.batch_size)
    history: list[EpochStats] = []
    best_state, best_epoch, best_score = None, 0, float("-inf")
    with _progress_bar(progress) as bar:
        task = bar.add_task("train HAN", total=cfg.epochs * steps)
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])  # the lr of this epoch's steps
            loss = train_epoch(model, optimizer, cfg, inputs, target_tensors, generator,
                               on_step=lambda _: bar.advance(task), epoch=epoch,
                               video_ids=train.video_ids)
            if scheduler is not None:
                scheduler.step()  # once per epoch, after its steps (official order)
            scores, score = _validate(model, val, cfg)
            stats = EpochStats(epoch, loss, scores, time.perf_counter() - started, lr)
            history.append(stats)
            if best_state is None or score >= best_score or val is None:
                best_state = copy.deepcopy(model.state_dict())
                best_epoch, best_score = epoch, score
            line = (f"epoch {epoch}/{cfg.epochs} lr {lr:.1e} loss {loss:.4f} "
                    f"{cfg.select_metric} {score:.2f}")
            bar.update(task, description=line)
            if progress and not bar.console.is_terminal:  # logs (CI, Ray jobs): one line per epoch
                bar.console.print(f"{line} ({stats.seconds:.1f} s)")
            if on_epoch is not None:
                on_epoch(stats)
    check_weights(best_state, f"of the best epoch {best_epoch}", cfg.lr)
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, cfg, best_epoch, best_score, history)


def check_trained(model: nn.Module, extra: Mapping, where: str = "the model") -> None:
    """Refuse a model that is not a finished training: raises NonFiniteTrainingError if any
    weight is NaN/inf, ValueError if `extra` (a checkpoint's extra) does not record at least one
    completed epoch (`epochs_completed` >= 1 and, when present, 1 <= `best_epoch` <=
    epochs_completed). Checkpoints written before `epochs_completed` existed fall back to
    `best_epoch` (only ever recorded after that epoch completed).
    """
    completed = extra.get("epochs_completed", extra.get("best_epoch"))
    if not isinstance(completed, numbers.Integral) or completed < 1:
        raise ValueError(f"{where} never completed a training epoch (epochs_completed="
                         f"{completed!r}); refusing an untrained model")
    best = extra.get("best_epoch", 1)
    if not isinstance(best, numbers.Integral) or not 1 <= best <= completed:
        raise ValueError(f"{where} records best_epoch={best!r} of {completed} completed "
                         f"epochs; expected 1..{completed}")
    check_weights(model, f"in {where}")


def save_checkpoint(path: str | os.PathLike, model: HAN, cfg: TrainConfig,
                    extra: dict | None = None, epochs_completed: int | None = None) -> Path:
    """Atomically write {"state_dict", "config", "extra", "format_version"} to `path`.

    `extra` must be JSON-serialisable (it is loaded back with torch.load(weights_only=True)).
    `extra["epochs_completed"]` is always recorded: the argument, else the value in `extra`,
    else 0 (an untrained model, which `check_trained` refuses). The file mode follows the umask.
    """
    path = Path(path)
    extra = dict(extra or {})
    if epochs_completed is not None:
        extra["epochs_completed"] = int(epochs_completed)
    extra.setdefault("epochs_completed", 0)
    try:
        json.dumps(extra)
    except TypeError as err:
        raise ValueError(f"checkpoint extra for {path} must be JSON-serialisable: {err}") from None
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "config": to_dict(cfg), "extra": extra,
               "format_version": CHECKPOINT_FORMAT_VERSION}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[HAN, TrainConfig, dict]:
    """Rebuild (the backbone `config.model.name` in eval mode, TrainConfig, extra) from a
    `save_checkpoint` file."""
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
    model = build_model(cfg.model)  # the checkpoint's config picks the backbone
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: weights do not fit "
                         f"{type(model).__name__}({cfg.model}): {err}") from err
    return model.to(device).eval(), cfg, payload.get("extra") or {}
