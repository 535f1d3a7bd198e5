"""What a sweep job is and its options, checked before Ray or MLflow start (docs/ray.md
"Options"): `SweepSpec`, the shared argument `parser`, `plan` (a new or resumed `SweepState`)
and the submitted job's metadata. The Ray driver is `ray_jobs.sweep`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vaplan.cli import ArgumentParser
from vaplan.config import ExperimentConfig, to_dict
from vaplan.errors import UserError
from vaplan.store_uri import resolve_tracking_uri
from vaplan.sweeps import (STATE_FILE, SpaceError, SweepState, base_experiment, build_space,
                           load_file, searched, sweep_folder)

EXIT_INVALID, EXIT_INTERRUPTED = 2, 3
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in the driver of a submitted job


@dataclass(frozen=True)
class SweepSpec:
    """What distinguishes one sweep job from another."""

    job: str  # "tune_plg"
    sections: tuple[str, ...]  # config sections it may search ("plg.",)
    default_space: dict
    metric: str  # what Tune (and ASHA) watch in every report, higher is better
    body: Callable  # body(experiment, **data) reports with tune.report
    objective: str  # what picks the winner from the last reports
    num_samples: int = 1
    scheduler: Callable | None = None  # scheduler(opts, base) -> Tune scheduler or None
    trains: bool = False  # trials train HAN (--cpus/--gpus-per-trial, torch threads)
    # points(space, base) -> [{option: value}]: trials run first, besides the space (Tune's
    # points_to_evaluate; tune_pld's "no denoising" arm, docs/ray.md)
    points: Callable | None = None
    task: str = "avvp"  # "ave": the job's AVE variant, for AVE presets (`sweeps.base_experiment`)


def job_metadata() -> dict:
    """The submitted job's metadata (`job_submission_id`, `job_name`, ...); {} outside a job."""
    return json.loads(os.environ.get(JOB_ENV) or "{}").get("metadata") or {}


def parser(spec: SweepSpec, doc: str, asha: bool = False) -> ArgumentParser:
    """The options every job understands (a job adds its own); `asha`: also ASHA's."""
    example = next(iter(searched(spec.default_space)), f"{spec.sections[0]}option")
    p = ArgumentParser(prog=f"python -m ray_jobs.{spec.job}", description=doc.split("\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=doc.split("\n\n", 1)[-1])
    add = p.add_argument
    add("--preset", default="sim-small", help="config preset (sim-tiny, sim-small, ...)")
    add("--set", dest="overrides", action="append", default=[], metavar="option=value",
        help="fixed config override, e.g. train.epochs=4 (repeatable)")
    add("--space", action="append", default=[], metavar="option=values",
        help=f"search {'/'.join(s + '*' for s in spec.sections)}: {example}=v1,v2 (grid), "
             f"{example}=choice:v1,v2, float=loguniform:lo,hi (uniform, randint too)")
    add("--space-file", help="JSON/YAML file of Tune domains (docs/ray.md)")
    add("--num-samples", type=int, help="Tune num_samples (grids multiply it)")
    add("--max-concurrent", type=int, default=0, help="trials at once (0: as resources allow)")
    add("--cpus-per-trial", type=float, default=1.0, help="also the trial's torch threads")
    add("--gpus-per-trial", default="auto", metavar="auto|N",
        help="auto (default): the cluster's GPUs shared by the trials that run at once, 0 "
             "without GPUs; or e.g. 0.25: four trials per GPU")
    add("--address", help="Ray address; default: the job's cluster, RAY_ADDRESS or a local "
                          "head, else a new one; 'local': always a new one")
    add("--num-cpus", type=int, help="CPUs of a new local Ray")
    add("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else "
                               "./mlruns/mlflow.db; in a Ray job ~/.vaplan/mlruns)")
    add("--experiment", default="vaplan-sweeps", help="MLflow experiment (default vaplan-sweeps)")
    add("--storage-path", help="Tune storage (default ~/ray_results)")
    add("--name", help=f"sweep name (default {spec.job}-<preset>-<time>)")
    add("--resume", action="store_true", help="resume --name (default: the newest of the preset)")
    add("--inject-failure", action="append", default=[], metavar="option=value",
        help="trials whose option has this value raise (tests the failure path)")
    add("--interrupt-after", type=int, default=0, metavar="N",
        help="stop like `ray job stop` after N finished trials (tests --resume)")
    add("--seed", type=int, default=0, help="seed of the random search")
    add("--verbose", action="store_true", help="Ray Tune's own progress output, worker logs")
    add("--quiet", action="store_true", help=argparse.SUPPRESS)  # the default now
    if asha:
        add_asha_args(p)
    return p


def add_asha_args(p: ArgumentParser) -> None:
    """ASHA's options (the jobs whose trials train: tune_train, tune_pld, the pipeline)."""
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a cut")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA rung factor")
    p.add_argument("--no-asha", dest="asha", action="store_false",
                   help="run every trial to the last epoch")


def plan(spec: SweepSpec, opts, folder: Path, base: ExperimentConfig | None = None,
         items: list[str] | None = None, must_exist: bool = True) -> SweepState:
    """The sweep to run: the stored one on --resume, else a new one (checked here)."""
    if opts.resume and (folder / STATE_FILE).is_file():
        return SweepState.load(folder)
    if opts.resume and must_exist or not opts.resume and folder.exists():
        raise UserError(f"sweep {folder.name!r} in {folder.parent}: " + (
            "not found" if opts.resume else "exists; pass --resume or another --name"))
    base = base or base_experiment(opts, spec)
    file_space, samples = load_file(opts.space_file) if opts.space_file else ({}, None)
    space = build_space(spec.default_space, {k: v for k, v in file_space.items()
                                             if k.startswith(spec.sections)},
                        opts.space if items is None else items, base, spec.sections)
    num_samples = opts.num_samples or samples or spec.num_samples
    if num_samples < 1:
        raise SpaceError(f"--num-samples must be >= 1, got {num_samples}")
    in_job = job_metadata() and not (opts.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    uri = resolve_tracking_uri(opts.tracking_uri, cwd=Path.home() / ".vaplan"
                               if in_job else None)  # a job's cwd is a temp copy
    return SweepState(spec.job, folder.name, "", "", uri, to_dict(base), space, int(num_samples),
                      task=spec.task)


def plan_per_class(opts) -> tuple[int, Path]:
    """`vaplan sweep plg --per-class`: its number of TPE trials (default 200) and a new sweep
    folder; UserError for the options it searches itself or a folder that exists."""
    for flag in ("space", "space_file", "resume", "inject_failure"):
        if getattr(opts, flag):
            raise UserError(f"--per-class searches the 50 thresholds itself; drop "
                            f"--{flag.replace('_', '-')}")
    samples = 200 if opts.num_samples is None else opts.num_samples
    folder = sweep_folder("tune_plg-per-class", opts)
    if samples < 1 or folder.exists():
        raise UserError(f"--num-samples must be >= 1, got {samples}" if samples < 1 else
                        f"sweep {folder.name!r} in {folder.parent}: exists; pass another --name")
    return samples, folder
