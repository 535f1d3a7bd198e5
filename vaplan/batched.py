"""Many HAN trainings as one batched computation (a "group"): issue 14, docs/ray.md.

G members share the architecture (`train.model`), the batch size, the device and the precision;
each has its own seed (initial weights and data order), lr and lr schedule, loss variant and
weights, label set (TrainTargets), number of epochs and select metric. Per step:

    members' weights --torch.stack--> (G, ...) --vmap(functional_call(HAN))--> HANOutput (G, B, ...)
    loss = sum_g compute_loss(cfg_g.loss, out[g], targets_g[batch_g])   # one backward
    per member: the train_han guards, then its own torch.optim.Adam + StepLR step

Each member is a real `HAN` module with its own `torch.optim.Adam`: its weights are stacked
(differentiably) at every step, so backward writes each member's `.grad` and the optimizer and
scheduler code is exactly train_han's (per-member lr and StepLR need no re-implementation of
Adam). The stack costs one copy of the weights per step (G x 18 MB for the published HAN).
`torch.func.stack_module_state` is not used because it returns detached copies.

Equality with G separate `train_han` runs (tests/test_batched.py): the same initial weights
(torch.manual_seed(seed) before HAN()), the same per-epoch permutation (a torch.Generator per
member seeded like train_han's), the same Adam/StepLR, the same best-epoch rule (ties keep the
later epoch) and validation; the batched matmuls round differently from unbatched ones, so
losses, scores and weights agree within float tolerance, not bit for bit. Dropout masks come
from one batched draw (`vmap(randomness="different")`: every member its own masks) and cannot
reproduce the masks of separate runs, so equality holds with `train.model.dropout=0`; with
dropout the members are still independent trainings, just with other masks.

A member whose loss, gradient or weights turn non-finite stops (its NonFiniteTrainingError, the
same message as train_han's, is its result); the others go on. Shapes: G members, B batch,
N videos, T=10 segments, C=25 classes.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from vaplan.config import TrainConfig
from vaplan.data.types import SplitData
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.losses import BatchTargets, compute_loss
from vaplan.models import HAN, HANOutput, build_model
from vaplan.trial_groups import SHARED
from vaplan.train import (EpochStats, TrainResult, TrainTargets, _check_training_inputs, _norm,
                          _non_finite_names, _step_error, _validate, build_scheduler,
                          check_weights, features_to_tensors, select_batch, targets_to_tensors,
                          training_autocast)

Outcome = "EpochStats | NonFiniteTrainingError"  # a member's epoch: its stats, or why it stopped


@dataclass
class _Member:
    """One member's training state (what train_han keeps in locals)."""

    cfg: TrainConfig
    model: HAN
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    targets: BatchTargets
    history: list[EpochStats] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: int = 0
    best_score: float = float("-inf")
    error: NonFiniteTrainingError | None = None
    order: Tensor | None = None  # this epoch's permutation (N,) on the device
    losses: list[float] = field(default_factory=list)  # this epoch's step losses
    lr: float = 0.0  # this epoch's lr

    def active(self, epoch: int) -> bool:
        return self.error is None and epoch <= self.cfg.epochs


def check_group(cfgs: Sequence[TrainConfig]) -> None:
    """ConfigError unless the members can share one batched computation (SHARED options equal,
    epochs and batch_size >= 1)."""
    if not cfgs:
        raise ConfigError("a trial group needs at least one member (train config), got none")
    for k, cfg in enumerate(cfgs):
        for name in ("epochs", "batch_size"):
            value = getattr(cfg, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"group member {k}: train.{name} must be an integer >= 1, "
                                  f"got {value!r}")
        for name in SHARED:
            if getattr(cfg, name) != getattr(cfgs[0], name):
                raise ConfigError(f"group member {k}: train.{name}={getattr(cfg, name)!r} "
                                  f"differs from member 0 ({getattr(cfgs[0], name)!r}); a "
                                  f"trial group shares train.{', train.'.join(SHARED)}")


def _new_member(cfg: TrainConfig, targets: BatchTargets) -> _Member:
    """Initial weights, optimizer, scheduler and data-order generator exactly as train_han."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(cfg.device)  # cfg.model.name: docs/backbones.md
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return _Member(cfg, model, optimizer, build_scheduler(optimizer, cfg),
                   torch.Generator().manual_seed(cfg.seed), targets)


def _vmap_attention(self: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                    key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                    average_attn_weights: bool = True, is_causal: bool = False):
    """nn.MultiheadAttention.forward (batch_first, packed in-projection, no masks) for vmap:
    the projections run on the contiguous (B, T, E) inputs. Torch's own forward projects the
    transposed (T, B, E) view, which vmap turns into a broadcast matmul that copies each
    member's in-projection weight T times (2.5x slower on CPU). Same maths; rounding may differ
    in the last bits. Masks or weights asked for: torch's forward."""
    if key_padding_mask is not None or attn_mask is not None or is_causal or need_weights:
        return nn.MultiheadAttention.forward(self, query, key, value, key_padding_mask,
                                             need_weights, attn_mask, average_attn_weights,
                                             is_causal)
    heads, (batch, steps, dim) = self.num_heads, query.shape
    w_q, w_k, w_v = self.in_proj_weight.chunk(3)
    b_q, b_k, b_v = self.in_proj_bias.chunk(3)

    def split(x: Tensor) -> Tensor:  # (B, T, E) -> (B, heads, T, E / heads)
        return x.unflatten(-1, (heads, dim // heads)).transpose(1, 2)

    q, k, v = (split(F.linear(x, w, b)) for x, w, b in
               ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training
                                         else 0.0)  # (B, heads, T, E / heads)
    out = out.transpose(1, 2).reshape(batch, steps, dim)  # (B, T, E)
    return F.linear(out, self.out_proj.weight, self.out_proj.bias), None


def _architecture(model: nn.Module) -> nn.Module:
    """The weightless (meta) copy that functional_call runs, its attention made vmap-friendly
    (`_vmap_attention`) where it is the supported kind."""
    base = copy.deepcopy(model).to("meta").train()
    for module in base.modules():
        if (isinstance(module, nn.MultiheadAttention) and module.batch_first
                and module._qkv_same_embed_dim and module.in_proj_bias is not None
                and module.bias_k is None and not module.add_zero_attn):
            module.forward = types.MethodType(_vmap_attention, module)
    return base


def _batched_forward(base: HAN, members: list[_Member], inputs) -> HANOutput:
    """vmap(functional_call) over the members' stacked weights; inputs (G, B, ...) each."""
    names = [name for name, _ in base.named_parameters()]
    per_member = zip(*[list(m.model.parameters()) for m in members])
    params = {name: torch.stack(ts) for name, ts in zip(names, per_member)}  # (G, ...) each,
    # differentiable to every member's own weights
    buffer_names = [name for name, _ in base.named_buffers()]
    per_member = zip(*[list(m.model.buffers()) for m in members])
    buffers = {name: torch.stack(ts) for name, ts in zip(buffer_names, per_member)}

    def one(p, b, audio, visual, visual_3d):
        return tuple(functional_call(base, (p, b), (audio, visual, visual_3d)))

    dims = (0, 0, 0, 0, None if inputs[2] is None else 0)
    with sdpa_kernel(SDPBackend.MATH):  # composite: vmap batches it (the fused CPU kernel has
        # no batching rule and would run once per member)
        out = vmap(one, in_dims=dims, randomness="different")(params, buffers, *inputs)
    return HANOutput(*out)


def _member_loss(m: _Member, out: HANOutput, targets: BatchTargets) -> Tensor:
    """train_step's loss: compute_loss (fp32) + the backbone's auxiliary term (a function of
    its weights only, so it is taken from the member's own module, outside vmap)."""
    loss, _ = compute_loss(m.cfg.loss, out, targets)
    auxiliary = m.model.auxiliary_loss()
    return loss if auxiliary is None else loss + auxiliary


def _group_step(base: HAN, members: list[_Member], inputs, index: Tensor, where: str,
                video_ids: Sequence[str] | None) -> None:
    """One step of every member in `members` on its rows `index[g]` (G, B); a member whose loss
    or gradient is non-finite gets its NonFiniteTrainingError and no optimizer step."""
    batch = [select_batch(inputs, m.targets, index[g]) for g, m in enumerate(members)]
    stacked = tuple(None if x is None else torch.stack([b[0][i] for b in batch])
                    for i, x in enumerate(batch[0][0]))  # (G, B, T, D) each
    cfg = members[0].cfg
    with training_autocast(cfg.precision, cfg.device):
        out = _batched_forward(base, members, stacked)
    losses = [_member_loss(m, HANOutput(*(t[g].float() for t in out)), batch[g][1])
              for g, m in enumerate(members)]
    for m in members:
        m.optimizer.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()  # members share no weights: each gets its own grads
    norms = [_norm([p.grad for p in m.model.parameters() if p.grad is not None]).to(
        losses[0].device) for m in members]
    values = torch.stack([torch.stack(losses).detach(), torch.stack(norms)]).tolist()
    for g, m in enumerate(members):  # one host sync for the whole group, as train_step
        loss, grad = values[0][g], values[1][g]
        if not math.isfinite(loss) or (not math.isfinite(grad) and _non_finite_names(
                (n, p.grad) for n, p in m.model.named_parameters())):
            ids = None if video_ids is None else [video_ids[i] for i in index[g].tolist()]
            m.error = _step_error(m.model, m.cfg, batch[g][0], where, loss, ids)
            continue
        m.optimizer.step()
        m.losses.append(loss)


def train_group(cfgs: Sequence[TrainConfig], train: SplitData, targets: Sequence[TrainTargets],
                val: SplitData | None,
                on_epoch: Callable[[int, EpochStats], None] | None = None,
                progress: bool = False,
                on_group_epoch: Callable[[int, dict[int, Outcome]], None] | None = None,
                ) -> list[TrainResult | NonFiniteTrainingError]:
    """Train len(cfgs) HANs on `train` as one batched computation; member g uses cfgs[g] and
    targets[g] (one TrainTargets shared by several members is converted once).

    Returns per member what train_han would: its TrainResult (best epoch's weights loaded, eval
    mode), or the NonFiniteTrainingError train_han would have raised (the other members go on).
    `on_epoch(g, stats)` after each member's epoch; `on_group_epoch(epoch, {g: stats or
    error})` once per epoch for the members that trained in it. ConfigError when the members
    cannot share a computation (`check_group`); ValueError for misaligned targets, as train_han.
    """
    check_group(cfgs)
    if len(targets) != len(cfgs):
        raise ValueError(f"{len(cfgs)} group members but {len(targets)} target sets; "
                         f"pass one TrainTargets per member")
    for t in targets:
        _check_training_inputs(train, t, val)
    cfg0 = cfgs[0]
    if cfg0.num_threads > 0:
        torch.set_num_threads(max(c.num_threads for c in cfgs))
    converted: dict[int, BatchTargets] = {}
    for t in targets:
        converted.setdefault(id(t), targets_to_tensors(t, cfg0.device))
    members = [_new_member(c, converted[id(t)]) for c, t in zip(cfgs, targets)]
    base = _architecture(members[0].model)  # the architecture, no weights
    inputs = features_to_tensors(train.features, cfg0.device)
    n, size = len(train), cfg0.batch_size
    steps = -(-n // size)
    for epoch in range(1, max(c.epochs for c in cfgs) + 1):
        started = time.perf_counter()
        live = [m for m in members if m.active(epoch)]
        if not live:
            break
        for m in live:
            m.model.train()
            m.losses = []
            m.lr = float(m.optimizer.param_groups[0]["lr"])  # the lr of this epoch's steps
            m.order = torch.randperm(n, generator=m.generator).to(inputs[0].device)  # (N,)
        for step, start in enumerate(range(0, n, size), start=1):
            stepping = [m for m in live if m.error is None]
            if not stepping:
                break
            index = torch.stack([m.order[start:start + size] for m in stepping])  # (G, B)
            _group_step(base, stepping, inputs, index, f"epoch {epoch}, step {step}/{steps}",
                        train.video_ids)
        seconds = time.perf_counter() - started
        outcomes: dict[int, Outcome] = {}
        for g, m in enumerate(members):
            if m in live and m.error is None:
                _end_epoch(g, m, epoch, steps, val, seconds, on_epoch, progress)
            if m in live:
                outcomes[g] = m.error if m.error is not None else m.history[-1]
        if on_group_epoch is not None:
            on_group_epoch(epoch, outcomes)
    return [m.error if m.error is not None else _result(m) for m in members]


def _end_epoch(g: int, m: _Member, epoch: int, steps: int, val: SplitData | None,
               seconds: float, on_epoch, progress: bool) -> None:
    """A member's end of epoch as in train_han: weights check, scheduler, validation, best."""
    cfg = m.cfg
    try:
        check_weights(m.model, f"after epoch {epoch}, step {steps}/{steps}", cfg.lr)
    except NonFiniteTrainingError as err:
        m.error = err
        return
    if m.scheduler is not None:
        m.scheduler.step()
    started = time.perf_counter()
    scores, score = _validate(m.model, val, cfg)
    stats = EpochStats(epoch, float(sum(m.losses) / len(m.losses)), scores,
                       seconds + time.perf_counter() - started, m.lr)
    m.history.append(stats)
    if m.best_state is None or score >= m.best_score or val is None:
        m.best_state = copy.deepcopy(m.model.state_dict())
        m.best_epoch, m.best_score = epoch, score
    if progress:
        print(f"member {g} epoch {epoch}/{cfg.epochs} lr {m.lr:.1e} loss {stats.train_loss:.4f} "
              f"{cfg.select_metric} {score:.2f} ({stats.seconds:.1f} s)", flush=True)
    if on_epoch is not None:
        on_epoch(g, stats)


def _result(m: _Member) -> TrainResult | NonFiniteTrainingError:
    """The member's TrainResult with its best epoch's weights loaded (train_han's ending)."""
    try:
        check_weights(m.best_state, f"of the best epoch {m.best_epoch}", m.cfg.lr)
    except NonFiniteTrainingError as err:
        return err
    m.model.load_state_dict(m.best_state)
    m.model.eval()
    return TrainResult(m.model, m.cfg, m.best_epoch, m.best_score, m.history)

