"""Trial groups in a sweep (`--group-size`, docs/ray.md "Trial groups") and
`--gpus-per-trial auto`: the Ray-free, torch-free part of the Ray wiring (ray_jobs/common.py),
tested without a cluster. The batched training itself is vaplan.batched.

A group trial's config is {"group": [member values, ...]}; it reports, per epoch, every
member's metrics under "members" and, for Tune and ASHA, the best member's at the top level;
the driver's MLflow callback makes one run per member (`member_id`), and `MemberGrid` turns
the finished groups back into one result per member for the winner and the trials table.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

from vaplan.errors import ConfigError

SHARED = ("model", "batch_size", "device", "precision")  # train.* options a group shares


def epoch_metrics(stats: Any, select_metric: str, best: float) -> dict[str, float]:
    """What a training trial reports after an epoch: the epoch's curve points
    (`EpochStats.metrics`: epoch/train_loss, epoch/lr, epoch/seconds, epoch/val/<score>) and
    best/val/<select_metric> (the best so far)."""
    return {**stats.metrics(), f"best/val/{select_metric}": best}


class GroupReport:
    """A group trial's reports: per member (key "members": {"<g>": its epoch_metrics and
    "epoch", or "error"}) and, for Tune and ASHA, the best member's `epoch/val/<select>`
    and best `best/val/<select>` at the top level."""

    def __init__(self, cfgs: Sequence[Any]) -> None:  # the members' TrainConfigs
        self.select = [c.select_metric for c in cfgs]
        self.best = [float("-inf")] * len(cfgs)
        self.members: dict[str, dict] = {}

    def update(self, epoch: int, outcomes: Mapping[int, Any]) -> dict:
        """The report after `epoch` from `vaplan.batched.train_group`'s {g: EpochStats or the
        member's error}; members absent from `outcomes` keep their last entry."""
        current = []
        for g, outcome in outcomes.items():
            if not isinstance(outcome, Exception):
                self.best[g] = max(self.best[g], outcome.val.get(self.select[g], float("-inf")))
                self.members[str(g)] = {**epoch_metrics(outcome, self.select[g], self.best[g]),
                                        "epoch": epoch}
                current.append(outcome.val.get(self.select[g], float("-inf")))
            else:
                self.members[str(g)] = {**self.members.get(str(g), {}),
                                        "error": f"{type(outcome).__name__}: {outcome}"}
        select = self.select[0]
        return {f"epoch/val/{select}": max(current, default=float("nan")),
                f"best/val/{select}": max(self.best), "members": dict(self.members)}


def member_id(trial_id: str, g: int) -> str:
    """A group member's trial id (its MLflow run's `vaplan.trial_id` tag): "<trial>/<g>"."""
    return f"{trial_id}/{g}"


@dataclass
class MemberResult:
    """One member of a finished group trial, shaped like a Tune `Result` (config, metrics,
    error) for the sweep's winner and trials table."""

    config: dict  # the member's option values
    metrics: dict  # its last report + "trial_id" (member_id)
    error: str | None = None


class MemberGrid:
    """A Tune ResultGrid with every group trial (config {"group": [values, ...]}) replaced by
    one MemberResult per member; other trials pass through. Offers what the sweep reads:
    iteration, len, num_errors, num_terminated, get_best_result."""

    def __init__(self, grid: Iterable) -> None:
        self.results: list = []
        for result in grid:
            group = (result.config or {}).get("group")
            if group is None:
                self.results.append(result)
                continue
            metrics = result.metrics or {}
            reported = metrics.get("members") or {}
            for g, values in enumerate(group):
                mine = dict(reported.get(str(g), {}))
                error = mine.pop("error", None) or (None if result.error is None
                                                    else str(result.error))
                self.results.append(MemberResult(
                    dict(values), {**mine, "trial_id": member_id(metrics.get("trial_id", ""), g)},
                    error))

    @classmethod
    def of(cls, grid: Iterable):
        """`grid` as per-member results when it holds a group trial, else `grid` itself."""
        return cls(grid) if any("group" in (r.config or {}) for r in grid) else grid

    def __iter__(self) -> Iterator:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def num_errors(self) -> int:
        return sum(r.error is not None for r in self.results)

    @property
    def num_terminated(self) -> int:
        return len(self.results) - self.num_errors

    def get_best_result(self, metric: str, mode: str = "max"):
        """The member with the best finite `metric` (ResultGrid's rule); errors skipped."""
        sign = 1.0 if mode == "max" else -1.0
        scored = [r for r in self.results if r.error is None
                  and math.isfinite(float(r.metrics.get(metric, math.nan)))]
        if not scored:
            raise RuntimeError(f"no group member reported a finite {metric!r}")
        return max(scored, key=lambda r: sign * float(r.metrics[metric]))


def check_group_size(size: Any) -> int:
    """--group-size: an integer >= 1 (ConfigError otherwise)."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ConfigError(f"--group-size must be an integer >= 1, got {size!r}")
    return int(size)


def check_group_space(options: Iterable[str], size: int) -> None:
    """ConfigError when a group (size > 1) would search an option its members must share
    (SHARED: one batched computation has one architecture, batch size, device, precision)."""
    shared = [o for o in options if size > 1 and any(
        o == f"train.{name}" or o.startswith(f"train.{name}.") for name in SHARED)]
    if shared:
        raise ConfigError(f"--group-size {size}: the members of a group share "
                          f"train.{', train.'.join(SHARED)}; do not search {', '.join(shared)} "
                          f"(or use --group-size 1)")


def pack(configs: Sequence, size: int) -> list[list]:
    """Consecutive groups of `size` (the last may be smaller); ConfigError for size < 1."""
    size = check_group_size(size)
    return [list(configs[i:i + size]) for i in range(0, len(configs), size)]


def parse_gpus_per_trial(value: str | float) -> float | None:
    """`--gpus-per-trial`: "auto" -> None, else a number >= 0 (above 1: whole GPUs)."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        gpus = float(value)
    except (TypeError, ValueError):
        gpus = float("nan")
    if not math.isfinite(gpus) or gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise ConfigError(f"--gpus-per-trial must be 'auto' or a number >= 0 (a fraction up "
                          f"to 1, or whole GPUs), got {value!r}")
    return gpus


def auto_gpus_per_trial(cluster_gpus: float, cluster_cpus: float, trials: int,
                        cpus_per_trial: float, max_concurrent: int = 0) -> float:
    """`--gpus-per-trial auto`: 0 on a cluster without GPUs; 1 when every trial that can run at
    once (trials, capped by --max-concurrent and by CPUs / --cpus-per-trial) gets a GPU of its
    own; else 1/k, k = ceil(at_once / GPUs) trials sharing each GPU."""
    if cluster_gpus <= 0 or trials < 1:
        return 0.0
    at_once = min(trials, max_concurrent or trials,
                  max(1, int(cluster_cpus // max(cpus_per_trial, 1e-9))))
    return 1.0 if at_once <= cluster_gpus else 1.0 / math.ceil(at_once / cluster_gpus)
