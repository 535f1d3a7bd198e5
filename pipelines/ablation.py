"""Ablation tables (`vaplan.ablation`) as tracked, resumable MLflow runs: a parent run found
again by its key, a child run per row × seed, the table rebuilt after each unit (keys and
exports: `vaplan.ablation_keys`; the layout and resume rules: docs/pipelines.md "Ablations")."""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow

import vaplan
from pipelines import tracking
from pipelines.steps.common import CHECKPOINT
from vaplan import ablation as tables
from vaplan.ablation_keys import (KEY_TAG, METHOD_TAG, ROW_TAG, SEED_TAG, TABLE_TAG, UNIT_TAG,
                                  ablation_key, output_paths, runs_records, unit_key, units_csv)
from vaplan.config import ExperimentConfig, flatten
from vaplan.data.dataset import load_dataset
from vaplan.data.types import Dataset
from vaplan.errors import UserError
from vaplan.io import atomic_write
from vaplan.runs import stop_on_signals
from vaplan.train import load_checkpoint, save_checkpoint

EXPERIMENT = "vaplan-ablations"
STAGE_ONE_TAG, STAGE_ONE_KEY_TAG = "vaplan.ablation.stage_one", "vaplan.ablation.stage_one_unit"
STAGE_ONE_CHECKPOINT = "stage_one/han.pt"
Log = Callable[[str], None]


@dataclass
class AblationRun:
    """A finished (or resumed-to-the-end) ablation: where it lives and what it printed."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    table: tables.AblationTable
    markdown: str
    trained: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Units:
    """One ablation's units and how to record them: what a runner (here, or the Ray driver
    in ray_jobs.ablation) needs to train the missing units and write their runs."""

    run: AblationRun
    cfg: ExperimentConfig
    dataset: Dataset
    table: tables.Table
    units: list[tuple[str, int]]  # every (row, seed) of the table, in table order
    paths: tuple[Path, Path] | None
    progress: bool
    log: Log
    adopt: bool = True  # also count FINISHED runs of other parents (same unit key)
    _labels: tables.AblationLabels | None = None

    def key(self, row: str, seed: int) -> str:
        return unit_key(self.cfg, row, seed, self.dataset.digest)

    def labels(self) -> tables.AblationLabels:
        """PLG labels of train and val, made once (on the first unit that trains)."""
        if self._labels is None:
            self._labels = tables.make_labels(self.cfg, self.dataset)
        return self._labels

    def finished(self) -> dict[str, object]:
        """unit key -> the newest FINISHED child run of the parent with that key, else (with
        `adopt`) the newest FINISHED run of another parent with the key of one of our units:
        the same key is the same training (config, seed, dataset, vaplan version)."""
        done = tracking.finished_children(self.run.parent_run_id, self.run.experiment_id,
                                          UNIT_TAG)
        for key in [self.key(row, seed) for row, seed in self.units] if self.adopt else ():
            found = [] if key in done else tracking.search_runs(
                self.run.experiment_id, f"tags.`{UNIT_TAG}` = '{key}' and "
                                        "attributes.status = 'FINISHED'", newest=1)
            done.update({key: found[0]} if found else {})
        return done

    def elsewhere(self, run) -> str:
        """"" for our own child run, else " (another ablation's run, parent <id>)"."""
        parent = run.data.tags.get(tracking.PARENT_TAG)
        return "" if parent == self.run.parent_run_id else \
            f" (another ablation's run, parent {parent})"

    def missing(self) -> list[tuple[str, int]]:
        """The units to train (no FINISHED run); the others are logged and noted skipped."""
        done, todo = self.finished(), []
        for index, (row, seed) in enumerate(self.units, start=1):
            found = done.get(self.key(row, seed))
            if found is None:
                todo.append((row, seed))
                continue
            self.log(f"[ablation] {index}/{len(self.units)} row {row} seed {seed}: finished "
                     f"earlier in run {found.info.run_id}{self.elsewhere(found)}, skipped")
            self.run.skipped.append((row, seed))
        return todo

    def open_unit(self, row: str, seed: int, tags: dict | None = None) -> str:
        """A child run of the parent for (row, seed) (written from this process, with the
        client: no active run needed); its params are the row's config. Returns its id."""
        run_id = tracking.create_child_run(self.run.parent_run_id, self.run.experiment_id,
                                           f"row{row}-seed{seed}",
                                           {**self.unit_tags(row, seed), **(tags or {})})
        self.log_params(row, seed, run_id)
        return run_id

    def unit_tags(self, row: str, seed: int) -> dict[str, str]:
        return {UNIT_TAG: self.key(row, seed), ROW_TAG: row, SEED_TAG: str(seed),
                TABLE_TAG: self.table.id, METHOD_TAG: tables.get_row(row).name}

    def log_params(self, row: str, seed: int, run_id: str | None = None) -> None:
        row_cfg = tables.row_config(self.cfg, row, seed)
        tracking.log_flat_params({**flatten(row_cfg), "data.digest": self.dataset.digest},
                                 run_id=run_id)

    def checkpoint(self, row: str, seed: int, model, best_epoch: int, path: Path,
                   run_id: str | None = None) -> None:
        """Save a unit's model (best epoch) and log it as `<parent folder of path>/han.pt`
        (Table 9: `<parent folder>/<model>.pt`, avel.pt, psp.pt, cmbs.pt)."""
        extra = {"row": row, "seed": seed, "unit": self.key(row, seed),
                 "dataset": self.dataset.digest, "best_epoch": best_epoch}
        row_cfg = tables.row_config(self.cfg, row, seed)
        if self.table.task == "ave":  # Table 9: the AVE checkpoint carries its experiment
            from vaplan.ave.experiment import save_checkpoint as save_ave

            path = path.with_name(f"{row_cfg.model.name}.pt")  # not HAN's name (docs/ave.md)
            save_ave(path, model, row_cfg, extra)
        else:
            save_checkpoint(path, model, row_cfg.train, extra)
        tracking.client().log_artifact(run_id or mlflow.active_run().info.run_id, str(path),
                                       path.parent.name)

    def reuse_stage_one(self, row: str, seed: int, tmp: Path):
        """(model, the unit run's tags saying where it came from) of a FINISHED run holding
        the checkpoint of `row`'s `needs` row with this seed (any parent of the experiment),
        else None."""
        key = self.key(tables.get_row(row).needs, seed)
        for tag, artifact in ((UNIT_TAG, CHECKPOINT), (STAGE_ONE_KEY_TAG, STAGE_ONE_CHECKPOINT)):
            found = tracking.search_runs(self.run.experiment_id, f"tags.`{tag}` = '{key}' and "
                                         "attributes.status = 'FINISHED'", newest=1)
            for source in (f.info.run_id for f in found):
                try:
                    local = mlflow.artifacts.download_artifacts(
                        run_id=source, artifact_path=artifact, dst_path=str(tmp / source))
                    model = load_checkpoint(local, device=self.cfg.train.device)[0]
                    self.log(f"[ablation] row {row} seed {seed}: stage one from finished run "
                             f"{source} (row {tables.get_row(row).needs})")
                    return model, {STAGE_ONE_TAG: f"reused from finished run {source}"}
                except Exception as err:  # artifacts deleted or corrupt: look further, or train
                    self.log(f"[ablation]   stage one: cannot use {artifact} of run {source} "
                             f"({err})")
        return None

    def publish(self, final: bool = False) -> None:
        """Rebuild the table from the FINISHED child runs; write --output and the parent's
        artifacts (with the client: also from a Tune callback)."""
        run, client = self.run, tracking.client()
        wanted = {self.key(row, seed): (row, seed) for row, seed in self.units}
        done = self.finished()
        finished = [(row, seed, done[key].data.metrics) for key, (row, seed) in wanted.items()
                    if key in done]
        seeds = tuple(dict.fromkeys(seed for _, seed in self.units))
        run.table = tables.summarize(finished, seeds, self.table)
        notes = [f"row {row} seed {seed}: stage one {done[key].data.tags[STAGE_ONE_TAG]}"
                 for key, (row, seed) in wanted.items()
                 if key in done and STAGE_ONE_TAG in done[key].data.tags]
        notes += [f"row {row} seed {seed}: run {done[key].info.run_id}"
                  f"{self.elsewhere(done[key])}" for key, (row, seed) in wanted.items()
                  if key in done and self.elsewhere(done[key])]
        run.markdown = tables.format_markdown(run.table, notes)
        csv_text = tables.format_csv(run.table)
        if self.paths is not None:
            atomic_write(self.paths[0], run.markdown + "\n")
            atomic_write(self.paths[1], csv_text)
        client.log_text(run.parent_run_id, run.markdown + "\n", "ablation/table.md")
        client.log_text(run.parent_run_id, csv_text, "ablation/table.csv")
        tracking.set_tags({"vaplan.ablation.progress": f"{len(finished)}/{len(self.units)} "
                           "finished", tracking.NOTE_TAG: run.markdown},  # the description
                          run_id=run.parent_run_id)
        if final and len(finished) == len(self.units):
            _log_runs_table(run, finished, done, wanted)
        if not final and self.paths is not None:
            self.log(f"[ablation] table ({len(finished)}/{len(self.units)} units) written to "
                     f"{self.paths[0]} and {self.paths[1]}")


TrainUnits = Callable[[Units, list], None]  # (the ablation, its missing units) -> trains them


def run_ablation(cfg: ExperimentConfig, rows: tuple[str, ...], seeds: tuple[int, ...], *,
                 table: str = "5", preset: str = "", dataset: Dataset | None = None,
                 tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 output: str | Path | None = None, resume: bool = True,
                 progress: bool = True, log: Log = print,
                 train_units: TrainUnits | None = None) -> AblationRun:
    """Train the missing units of (rows × seeds) of `table` under one parent run (one after
    the other, or with `train_units`, e.g. Ray Tune trials); returns the table."""
    started = time.perf_counter()
    spec = tables.get_table(table)
    tables.check_task(spec, cfg)
    paths = output_paths(output) if output is not None else None
    uri = tracking.use_tracking_uri(tracking_uri)
    experiment_id = tracking.prepare_store(uri, experiment)
    if dataset is None and spec.task == "ave":  # Table 9: AVE-sim (vaplan.ave.experiment)
        from vaplan.ave.experiment import load_data

        dataset = load_data(cfg, progress=progress)
    if dataset is None:
        log(f"[ablation] building dataset ({cfg.data.source})")
        dataset = load_dataset(cfg.data, progress=progress)
    log(f"[ablation] {dataset.description} (digest {dataset.digest[:12]})")
    key = ablation_key(cfg, rows, seeds, dataset.digest, spec.id)
    parent_id = _find_parent(experiment_id, key) if resume else None
    units = [(row, seed) for row in rows for seed in seeds]
    tags = {KEY_TAG: key, "vaplan.preset": preset, "vaplan.version": vaplan.__version__,
            "vaplan.dataset_digest": dataset.digest, "vaplan.ablation": "parent",
            TABLE_TAG: spec.id}
    name = (f"ablation {preset or 'custom'} table={spec.id} rows={','.join(rows)} "
            f"seeds={','.join(map(str, seeds))}")
    with stop_on_signals(), \
            tracking.start_run(experiment_id, run_name=name, tags=tags, run_id=parent_id) as parent:
        run = AblationRun(uri, experiment_id, parent.info.run_id,
                          tables.summarize([], seeds, spec), "")
        log(f"[ablation] {'resuming' if parent_id else 'new'} parent run {run.parent_run_id} "
            f"in experiment {experiment!r} ({spec.title}: rows {','.join(rows)} × seeds "
            f"{','.join(map(str, seeds))} = {len(units)} units); store {uri}")
        if parent_id is None:
            tracking.log_flat_params({**flatten(cfg), "ablation.table": spec.id,
                                      "ablation.rows": ",".join(rows),
                                      "ablation.seeds": ",".join(map(str, seeds)),
                                      "data.digest": dataset.digest})
        ablation = Units(run, cfg, dataset, spec, units, paths, progress, log, adopt=resume)
        todo = ablation.missing()
        if todo:
            (train_units or _train_in_turn)(ablation, todo)
        ablation.publish(final=True)
    run.seconds = time.perf_counter() - started
    log(f"[ablation] done in {run.seconds:.0f} s: trained {len(run.trained)}, skipped "
        f"{len(run.skipped)} (parent run {run.parent_run_id})")
    return run


def _train_in_turn(ablation: Units, todo: list[tuple[str, int]]) -> None:
    """The missing units one after the other in this process, publishing after each."""
    for index, (row, seed) in enumerate(todo, start=1):
        what = f"[ablation] {index}/{len(todo)} to train: row {row} seed {seed}"
        ablation.log(f"{what}: training {tables.get_row(row).name}")
        child = _train_unit(ablation, row, seed)
        ablation.log(f"{what}: finished (run {child})")
        ablation.run.trained.append((row, seed))
        ablation.publish()


def _find_parent(experiment_id: str, key: str) -> str | None:
    """The newest parent run with this key (any status: a crashed or killed one resumes)."""
    found = tracking.search_runs(experiment_id, f"tags.`{KEY_TAG}` = '{key}'", newest=1)
    return found[0].info.run_id if found else None


def _epoch_logger(prefix: str = ""):
    def on_epoch(stats) -> None:  # epoch/<name>, under `prefix` (stage_one/) for row 5's model
        tracking.log_scores(stats.metrics(), prefix=prefix, step=stats.epoch)
    return on_epoch


def _train_unit(ablation: Units, row: str, seed: int) -> str:
    """One unit in one child run: params, curves, numbers, checkpoint; returns the run id."""
    run, cfg, dataset = ablation.run, ablation.cfg, ablation.dataset
    with tracking.start_child_run(run.parent_run_id, run.experiment_id,
                                  run_name=f"row{row}-seed{seed}",
                                  tags=ablation.unit_tags(row, seed)) as child, \
            tempfile.TemporaryDirectory(prefix="vaplan-ablation-") as tmp:
        ablation.log_params(row, seed)
        stage_one = None
        if tables.get_row(row).needs is not None:  # PLD's stage one, MA's video-label model
            stage_one = _stage_one(ablation, row, seed, Path(tmp))
        result = tables.train_row(cfg, dataset, ablation.labels(), row, seed,
                                  stage_one=stage_one, on_epoch=_epoch_logger(),
                                  progress=ablation.progress)
        tracking.log_scores(tables.unit_metrics(result))
        ablation.checkpoint(row, seed, result.trained.model, result.trained.best_epoch,
                            Path(tmp) / CHECKPOINT)
        return child.info.run_id


def _stage_one(ablation: Units, row: str, seed: int, tmp: Path):
    """The `needs` row's model with this seed: reuse a finished run's checkpoint, or train it
    here (in the active run)."""
    needs, log = tables.get_row(row).needs, ablation.log
    reused = ablation.reuse_stage_one(row, seed, tmp)
    if reused is not None:
        tracking.set_tags(reused[1])
        return reused[0]
    log(f"[ablation]   stage one: no finished row {needs} run with seed {seed}; "
        "training it first in this run")
    cfg = ablation.cfg
    result = tables.train_row(cfg, ablation.dataset, ablation.labels(), needs, seed,
                              on_epoch=_epoch_logger("stage_one/"),
                              progress=ablation.progress)
    tracking.log_scores(tables.unit_metrics(result), prefix="stage_one/")
    ablation.checkpoint(needs, seed, result.trained.model, result.trained.best_epoch,
                        tmp / STAGE_ONE_CHECKPOINT)
    here = mlflow.active_run().info.run_id
    tracking.set_tags({STAGE_ONE_TAG: f"trained in run {here}",
                       STAGE_ONE_KEY_TAG: ablation.key(needs, seed)})
    return result.trained.model


def _log_runs_table(run: AblationRun, finished, done, wanted) -> None:
    """mlflow.log_table of every unit (row, seed, run id, ten test numbers), once, when all
    units are finished (log_table appends to an existing file, so never twice)."""
    artifact = "ablation/runs.json"
    existing = tracking.client().list_artifacts(run.parent_run_id, "ablation")
    if any(item.path == artifact for item in existing):
        return
    key_of = {value: key for key, value in wanted.items()}
    records = runs_records(finished, [done[key_of[(row, seed)]].info.run_id
                                      for row, seed, _ in finished], run.table.table.scores)
    with warnings.catch_warnings():  # pandas' object-dtype deprecation inside MLflow
        warnings.simplefilter("ignore", DeprecationWarning)
        mlflow.log_table(records, artifact, run_id=run.parent_run_id)


def export_runs(out: str | Path, tracking_uri: str | None = None,
                experiment: str = EXPERIMENT) -> int:
    """Write every unit run of `experiment` (any parent, any status) as one CSV: run id,
    status, times, parent, table, row, seed, method, then every param (the row's config)
    and every metric (latest value); returns the number of runs. Never creates a store."""
    uri = tracking.open_existing_store(tracking_uri)
    found = tracking.client().get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"--export: no experiment {experiment!r} in {uri}; "
                        "run `vaplan ablation` first")
    frame = mlflow.search_runs([found.experiment_id], max_results=50000)
    text, count = units_csv(frame, tracking.PARENT_TAG)
    atomic_write(Path(out), text)
    return count
