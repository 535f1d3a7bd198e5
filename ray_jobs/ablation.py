"""`vaplan ablation --ray`: an ablation's missing units (row × seed) as Ray Tune trials, in two
waves (PLD rows after their stage one); `UnitRuns` writes each unit's run from the driver as
`pipelines.ablation.Units` does, so both runners resume each other (docs/pipelines.md)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ray import tune

from pipelines import tracking
from pipelines.ablation import AblationRun, Units, run_ablation
from pipelines.steps.common import CHECKPOINT
from ray_jobs import common
from ray_jobs.sweep import ray_session
from vaplan import ablation as tables
from vaplan.config import ExperimentConfig, apply_overrides
from vaplan.errors import ConfigError
from vaplan.trial_groups import parse_gpus_per_trial
from vaplan.sweeps import metrics_of

UNIT = "unit/"  # prefixes the unit's numbers in the trial's last report (with its checkpoint)


@dataclass(frozen=True)
class RayOptions:
    """Where and how the trials run."""

    address: str | None = None  # None: RAY_ADDRESS or a local head, else a new local Ray
    num_cpus: int | None = None  # of a new local Ray
    cpus_per_trial: float = 1.0  # also the trial's torch threads
    gpus_per_trial: str | float = "auto"  # per wave: common.trial_resources; > 0: cuda
    storage_path: Path | None = None  # Tune's storage (checkpoints); None: a temporary folder
    max_concurrent: int = 0  # what `auto` assumes runs at once (0: as many as CPUs allow)


def trial_config(cfg: ExperimentConfig, opts: RayOptions) -> ExperimentConfig:
    """The config every trial trains with: threads from --cpus-per-trial (the GPUs, and so
    train.device=cuda, are resolved per wave once Ray is up; a bad value is refused here)."""
    if not opts.cpus_per_trial > 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {opts.cpus_per_trial}")
    parse_gpus_per_trial(opts.gpus_per_trial)
    return apply_overrides(cfg, [f"train.num_threads={max(1, int(opts.cpus_per_trial))}"])


def run_ablation_ray(cfg: ExperimentConfig, rows, seeds, opts: RayOptions,
                     **kwargs) -> AblationRun:
    """pipelines.ablation.run_ablation with the missing units trained as Tune trials."""
    cfg = trial_config(cfg, opts)
    with ray_session(SimpleNamespace(address=opts.address, num_cpus=opts.num_cpus,
                                     verbose=False)):
        return run_ablation(cfg, rows, seeds, train_units=lambda ablation, todo:
                            train_waves(ablation, todo, opts), **kwargs)


def unit_trial(config: dict, cfg: ExperimentConfig, dataset, labels, stage_ones: dict,
               extras: dict) -> None:
    """Tune's trainable: one unit; reports each epoch, then its numbers and checkpoint."""
    from vaplan.train import save_checkpoint

    row, seed = config["unit"]["row"], int(config["unit"]["seed"])

    def on_epoch(stats) -> None:
        tune.report({**stats.metrics(), "epoch": stats.epoch})

    result = tables.train_row(cfg, dataset, labels, row, seed,
                              stage_one=stage_ones.get(f"{row}:{seed}"), on_epoch=on_epoch,
                              progress=False)
    with tempfile.TemporaryDirectory(prefix="vaplan-unit-") as tmp:
        save_checkpoint(Path(tmp) / "han.pt", result.trained.model,
                        tables.row_config(cfg, row, seed).train,
                        {**extras[f"{row}:{seed}"], "best_epoch": result.trained.best_epoch})
        tune.report({UNIT + k: v for k, v in tables.unit_metrics(result).items()},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


class UnitRuns(tune.Callback):
    """Driver side: each trial the child run of its unit (pipelines.ablation.Units), the
    table published after each finished unit, one printed line per unit."""

    def __init__(self, ablation: Units, tags: dict) -> None:
        self.ablation, self.tags = ablation, tags  # tags: "row:seed" -> extra run tags
        self.runs: dict[str, str] = {}  # open: trial id -> run id
        self.failed: list[str] = []

    def __getstate__(self) -> dict:  # Tune pickles its callbacks; we never restore them
        return {"tags": self.tags, "runs": {}, "failed": []}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        row, seed = _unit(trial)
        self.runs[trial.trial_id] = self.ablation.open_unit(row, seed,
                                                            self.tags.get(f"{row}:{seed}"))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = metrics_of(result)  # epoch/<name> per epoch, then unit/<name>
        unit = {k[len(UNIT):]: v for k, v in metrics.items() if k.startswith(UNIT)}
        tracking.log_scores(unit or metrics, step=None if unit else int(result["epoch"]),
                            run_id=self.runs[trial.trial_id])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id, (row, seed) = self.runs.pop(trial.trial_id), _unit(trial)
        with trial.checkpoint.as_directory() as folder:
            tracking.client().log_artifact(run_id, str(Path(folder) / "han.pt"),
                                           Path(CHECKPOINT).parent.name)
        tracking.end_run(run_id, "FINISHED")
        self.ablation.run.trained.append((row, seed))
        self.ablation.log(f"[ablation] row {row} seed {seed}: finished (run {run_id})")
        self.ablation.publish()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id, (row, seed) = self.runs.pop(trial.trial_id), _unit(trial)
        error = common.trial_error(trial)[:500]
        tracking.end_run(run_id, "FAILED", {"vaplan.error": error})
        self.failed.append(f"row {row} seed {seed} ({error})")
        self.ablation.log(f"[ablation] row {row} seed {seed}: FAILED: {error}")

    def on_experiment_end(self, trials, **info) -> None:
        self.close("KILLED")

    def close(self, status: str) -> None:
        """Runs still open (a stop cut their trials short) end with `status`."""
        for run_id in self.runs.values():
            tracking.end_run(run_id, status, {"vaplan.interrupted": "true"})
        self.runs.clear()


def _unit(trial) -> tuple[str, int]:
    return trial.config["unit"]["row"], int(trial.config["unit"]["seed"])


def train_waves(ablation: Units, todo: list[tuple[str, int]], opts: RayOptions) -> None:
    """The missing units as trials, in two waves (vaplan.ablation.waves); RuntimeError
    naming the failed units (their runs FAILED, the rest FINISHED) after both waves."""
    with tempfile.TemporaryDirectory(prefix="vaplan-ablation-") as tmp:
        stage_ones, tags, failed = {}, {}, []
        for row, seed in todo:  # PLD rows whose stage one a finished run already holds
            if tables.get_row(row).needs and f"{row}:{seed}" not in stage_ones:
                _lend_stage_one(ablation, row, seed, Path(tmp), stage_ones, tags)
        lent = {(tables.get_row(row).needs, seed) for row, seed in todo
                if f"{row}:{seed}" in stage_ones}
        first, second = tables.waves(todo, lent)
        for row, seed in first:
            if (row, seed) not in todo:
                users = ",".join(r for r, s in second if tables.get_row(r).needs == row
                                 and s == seed)
                ablation.log(f"[ablation] row {row} seed {seed}: trained first, as its own "
                             f"run, for the stage one of row {users}")
                tags[f"{row}:{seed}"] = {"vaplan.ablation.stage_one_for": users}
        failed += _fit(ablation, first, opts, stage_ones, tags, Path(tmp) / "tune", 1)
        for row, seed in second:
            if f"{row}:{seed}" not in stage_ones:
                _lend_stage_one(ablation, row, seed, Path(tmp), stage_ones, tags)
        ready = [unit for unit in second if f"{unit[0]}:{unit[1]}" in stage_ones]
        failed += [f"row {row} seed {seed} (its stage one, row {tables.get_row(row).needs}, "
                   "did not finish)" for row, seed in second if (row, seed) not in ready]
        failed += _fit(ablation, ready, opts, stage_ones, tags, Path(tmp) / "tune", 2)
    if failed:
        raise RuntimeError(f"{len(failed)} unit(s) did not finish: {'; '.join(failed)}; "
                           "run the same command again to retry them")


def _lend_stage_one(ablation: Units, row: str, seed: int, tmp: Path, stage_ones: dict,
                    tags: dict) -> None:
    reused = ablation.reuse_stage_one(row, seed, tmp)
    if reused is not None:
        stage_ones[f"{row}:{seed}"], tags[f"{row}:{seed}"] = reused


def _fit(ablation: Units, units: list[tuple[str, int]], opts: RayOptions, stage_ones: dict,
         tags: dict, storage: Path, wave: int) -> list[str]:
    """One wave: a trial per unit; returns the failed units."""
    if not units:
        return []
    ablation.log(f"[ablation] Ray Tune: {len(units)} trial(s): "
                 + ", ".join(f"row {row} seed {seed}" for row, seed in units))
    extras = {f"{row}:{seed}": {"row": row, "seed": seed, "unit": ablation.key(row, seed),
                                "dataset": ablation.dataset.digest} for row, seed in units}
    space = {"unit": tune.grid_search([{"row": row, "seed": seed} for row, seed in units])}
    resources, ablation.cfg = common.trial_resources(opts, True, space, 1, ablation.cfg)
    trainable = tune.with_resources(  # ablation.cfg: train.device=cuda when trials get GPUs
        tune.with_parameters(unit_trial, cfg=ablation.cfg, dataset=ablation.dataset,
                             labels=ablation.labels(), stage_ones=stage_ones, extras=extras),
        resources)
    callback = UnitRuns(ablation, tags)
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
                       run_config=tune.RunConfig(
                           name=f"ablation-{ablation.run.parent_run_id[:8]}-"
                                f"{time.strftime('%Y%m%d-%H%M%S')}-wave{wave}",
                           storage_path=str(opts.storage_path or storage),
                           callbacks=[callback], verbose=0,
                           failure_config=tune.FailureConfig(max_failures=0)))
    try:
        tuner.fit()
    finally:
        callback.close("KILLED")
    return callback.failed
