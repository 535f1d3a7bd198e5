"""The sweep driver shared by the jobs: options, MLflow parent run, Tuner, resume, the winner.

`run_sweep(spec, opts, base, payloads)`:
1. the search space is built and validated (before Ray or any trial starts);
2. the MLflow store and experiment are prepared in the driver (SQLite schema race), one parent
   run is opened (or re-opened on --resume) and records the base config and the space;
3. the Tuner runs (`Tuner.restore(..., resume_errored=True)` on --resume), every trial a child
   run; a failing trial is ERROR in Tune and FAILED in MLflow and the sweep goes on;
4. the parent records the best trial (config, metrics, child run id) and the trial table.
A sweep's folder `<storage>/<name>/` holds Tune's experiment state and `vaplan_sweep.json`
(parent run id, space, base config), which is what --resume reads.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import mlflow

from pipelines import tracking
from ray_jobs import common, space as spaces
from vaplan.config import ExperimentConfig, apply_overrides, from_dict, get_preset, to_dict

STATE_FILE = "vaplan_sweep.json"


@dataclass(frozen=True)
class SweepSpec:
    """What distinguishes one sweep job from another."""

    job: str  # "tune_plg"
    sections: tuple[str, ...]  # config sections it may search ("plg.",)
    default_space: spaces.Space
    metric: str  # what Tune (and ASHA) watch, reported by every trial (higher is better)
    trainable: Callable  # fn(config, ctx, **payload)
    objective: str = ""  # what picks the winner from the last reports ("" = metric)
    default_num_samples: int = 1
    scheduler: Callable[["SweepOptions", ExperimentConfig], Any] | None = None
    uses_gpu: bool = False  # trials train a model (resources: --cpus/--gpus-per-trial)


@dataclass
class SweepOptions:
    """Command-line options shared by every job (see `add_sweep_args`)."""

    preset: str = "sim-small"
    overrides: list[str] = field(default_factory=list)
    space: list[str] = field(default_factory=list)
    space_file: str | None = None
    num_samples: int | None = None
    max_concurrent: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    num_cpus: int | None = None
    tracking_uri: str | None = None
    experiment: str = "vaplan"
    storage_path: str | None = None
    name: str | None = None
    resume: bool = False
    inject_failure: list[str] = field(default_factory=list)
    interrupt_after: int = 0
    seed: int = 0
    quiet: bool = False
    grace_period: int = 1  # ASHA (tune_train, retraining): epochs before the first cut
    reduction_factor: float = 2.0  # ASHA: keep 1/reduction_factor at each rung
    asha: bool = True


def add_sweep_args(parser: argparse.ArgumentParser, job: str) -> None:
    """The options every job understands."""
    add = parser.add_argument
    add("--preset", default="sim-small", help="vaplan.config preset (sim-tiny, sim-small, ...)")
    add("--set", dest="overrides", action="append", default=[], metavar="section.option=value",
        help="fixed config override, e.g. train.epochs=4 (repeatable)")
    add("--space", action="append", default=[], metavar="option=values",
        help="search dimension: plg.visual_threshold=0.040,0.041 (grid), "
             "train.lr=loguniform:1e-4,1e-3, train.loss.variant=choice:richness,naive")
    add("--space-file", default=None, help="JSON or YAML file of search dimensions")
    add("--num-samples", type=int, default=None, help="Tune num_samples (grids multiply it)")
    add("--max-concurrent", type=int, default=0, help="trials at once (0: as resources allow)")
    add("--cpus-per-trial", type=float, default=1.0)
    add("--gpus-per-trial", type=float, default=0.0,
        help="fraction of a GPU per trial, e.g. 0.25 puts four trials on one GPU")
    add("--address", default=None,
        help="Ray address; default joins a running cluster (job, RAY_ADDRESS, local head) "
             "or starts one; 'local' always starts a private one")
    add("--num-cpus", type=int, default=None, help="CPUs of a private local Ray")
    add("--tracking-uri", default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db; "
             "inside `ray job submit` ~/.vaplan/mlruns/mlflow.db)")
    add("--experiment", default="vaplan", help="MLflow experiment name")
    add("--storage-path", default=None,
        help="Tune storage (default ~/ray_results; shared storage on a multi-node cluster)")
    add("--name", default=None, help=f"sweep name (default {job}-<preset>-<time>)")
    add("--resume", action="store_true",
        help="resume the sweep --name (default: the latest of this job and preset)")
    add("--inject-failure", action="append", default=[], metavar="option=value",
        help="trials whose searched option has this value raise (tests the failure path)")
    add("--interrupt-after", type=int, default=0, metavar="N",
        help="stop the sweep like `ray job stop` after N finished trials (tests --resume)")
    add("--seed", type=int, default=0, help="seed of the random search")
    add("--quiet", action="store_true", help="less Ray/Tune output")


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    names = SweepOptions.__dataclass_fields__
    return SweepOptions(**{k: v for k, v in vars(args).items() if k in names})


# ---------------------------------------------------------------- configuration

def base_experiment(opts: SweepOptions, spec: SweepSpec | None = None) -> ExperimentConfig:
    """Preset + --set overrides (+ device/threads for training trials); ConfigError if bad."""
    base = apply_overrides(get_preset(opts.preset), list(opts.overrides))
    if spec is not None and spec.uses_gpu:
        threads = max(1, int(opts.cpus_per_trial))
        device = "cuda" if opts.gpus_per_trial > 0 else base.train.device
        base = apply_overrides(base, [f"train.device={device}", f"train.num_threads={threads}"])
    return base


def build_space(spec: SweepSpec, opts: SweepOptions, base: ExperimentConfig,
                cli_items: list[str] | None = None) -> tuple[spaces.Space, int]:
    """The validated space and num_samples (defaults < --space-file < --space)."""
    file_space, extra = (spaces.load_space_file(opts.space_file) if opts.space_file
                         else ({}, {}))
    file_space = {k: v for k, v in file_space.items() if k.startswith(spec.sections)}
    items = opts.space if cli_items is None else cli_items
    space = spaces.build_space(spec.default_space, file_space, items, base, spec.sections)
    num_samples = opts.num_samples or extra.get("num_samples") or spec.default_num_samples
    if num_samples < 1:
        raise spaces.SpaceError(f"--num-samples must be >= 1, got {num_samples}")
    _check_failure_keys(opts, space)
    return space, int(num_samples)


def _check_failure_keys(opts: SweepOptions, space: spaces.Space) -> None:
    for item in opts.inject_failure:
        key = item.split("=", 1)[0]
        if "=" not in item or key not in space:
            raise spaces.SpaceError(f"--inject-failure {item!r}: expected option=value with an "
                                    f"option of the space {sorted(space)}")


def failure_pairs(opts: SweepOptions) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(item.split("=", 1)) for item in opts.inject_failure)  # type: ignore


def job_tracking_uri(opts: SweepOptions) -> str:
    """--tracking-uri > $MLFLOW_TRACKING_URI > ~/.vaplan/mlruns inside a submitted job (its
    working dir is a temporary copy) > ./mlruns."""
    if opts.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or not common.inside_ray_job():
        return tracking.resolve_tracking_uri(opts.tracking_uri)
    return tracking.resolve_tracking_uri(cwd=Path.home() / ".vaplan")


def storage_root(opts: SweepOptions) -> Path:
    return Path(opts.storage_path or Path.home() / "ray_results").expanduser().resolve()


# ---------------------------------------------------------------- sweep state

@dataclass
class SweepState:
    """What a sweep needs to be resumed (stored as <storage>/<name>/vaplan_sweep.json)."""

    job: str
    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    base: dict
    space: dict
    num_samples: int
    finished: bool = False
    best: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        from vaplan.io import atomic_write

        atomic_write(folder / STATE_FILE,
                     json.dumps(self.__dict__, indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, folder: Path) -> "SweepState":
        path = folder / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no sweep to resume at {folder} ({STATE_FILE} missing)")
        return cls(**json.loads(path.read_text()))


def resolve_name(job: str, opts: SweepOptions, root: Path) -> str:
    """--name, else on --resume the latest `<job>-<preset>-*` sweep, else a new timestamped one."""
    if opts.name:
        return opts.name
    prefix = f"{job}-{opts.preset}-"
    if opts.resume:
        found = sorted((p for p in root.glob(prefix + "*")
                        if (p / STATE_FILE).is_file() or any(p.glob(f"*/{STATE_FILE}"))),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"--resume: no {prefix}* sweep under {root}; pass --name")
        return found[-1].name
    return prefix + time.strftime("%Y%m%d-%H%M%S")


# ---------------------------------------------------------------- the parent run

class ParentRun:
    """The sweep's parent run (pipelines.tracking.start_run): opened fresh, or re-opened on
    --resume, which records this driver as its owner (host/pid tags) so the dead-run sweep of
    other processes leaves it alone."""

    def __init__(self, experiment_id: str, name: str, tags: Mapping[str, str],
                 run_id: str | None = None) -> None:
        self.experiment_id, self.name, self.tags, self.run_id = experiment_id, name, tags, run_id
        self._ctx = None

    def __enter__(self) -> str:
        self._ctx = tracking.start_run(self.experiment_id, run_name=self.name,
                                       tags=dict(self.tags), run_id=self.run_id)
        self.run_id = self._ctx.__enter__().info.run_id
        return self.run_id

    def __exit__(self, exc_type, exc, tb) -> bool:
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def end_parent(status: str) -> None:
    """End the active parent run early with `status` (KILLED when interrupted)."""
    tracking.retry_locked(mlflow.end_run, status=status)


def log_json_artifact(data: Any, name: str, run_id: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="vaplan-sweep-") as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tracking.retry_locked(mlflow.log_artifact, str(path), run_id=run_id)


def log_table_artifact(frame, name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="vaplan-sweep-") as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        tracking.retry_locked(mlflow.log_artifact, str(path))


def experiment_of(state: SweepState) -> ExperimentConfig:
    return from_dict(ExperimentConfig, state.base)


def new_state(spec: SweepSpec, name: str, uri: str, experiment_id: str, base: ExperimentConfig,
              space: spaces.Space, num_samples: int) -> SweepState:
    return SweepState(spec.job, name, "", experiment_id, uri, to_dict(base),
                      spaces.space_to_dict(space), num_samples)
