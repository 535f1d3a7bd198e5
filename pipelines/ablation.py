"""Ablation tables (vaplan.ablation: Table 5, Table 6) as tracked, resumable MLflow runs: one
parent run, one child run per row × seed.

The parent run is found again by its key (sha256 of the config, the table, the rows, the seeds
and the dataset digest; tag `vaplan.ablation.key`), so re-running the same command resumes it:
units (row × seed) with a FINISHED child run are skipped, the others are trained, each in a new
child run. After every finished unit the table is rebuilt from the parent's FINISHED child runs
and written to `--output` (Markdown + CSV, atomically) and to the parent's artifacts, so a crash
or a kill loses at most the unit in progress (SIGTERM/Ctrl-C end the open runs KILLED). Once
every unit is finished, `mlflow.log_table` records one line per unit as `ablation/runs.json`;
`export_runs` writes every unit run of the store (config + metrics) as one CSV.

A PLD row (row 5) needs its `needs` row's model (row 4) of the same seed: a FINISHED run with
that unit key (in this experiment, any parent) lends its `checkpoint/han.pt`; otherwise row 5's
run trains it first (curves under `stage_one/`, checkpoint `stage_one/han.pt`, reusable by later
row-5 runs). The tag `vaplan.ablation.stage_one` says which.

Units train here one after the other, or as Ray Tune trials (`ray_jobs.ablation`, which calls
`run_ablation(..., train_units=...)` and writes the runs through `Units` from the driver).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
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
from vaplan.config import ExperimentConfig, flatten
from vaplan.data.dataset import load_dataset
from vaplan.data.types import Dataset
from vaplan.errors import ConfigError, UserError
from vaplan.io import atomic_write
from vaplan.metrics import SCORE_KEYS
from vaplan.train import load_checkpoint, save_checkpoint

EXPERIMENT = "vaplan-ablations"
# Bump FORMAT when a unit's numbers change meaning (including a changed config default, since
# keys hold only the options that differ from the defaults), to start new parents and units.
FORMAT = 2
KEY_TAG, UNIT_TAG = "vaplan.ablation.key", "vaplan.ablation.unit"
ROW_TAG, SEED_TAG = "vaplan.ablation.row", "vaplan.ablation.seed"
TABLE_TAG = "vaplan.ablation.table"
STAGE_ONE_TAG, STAGE_ONE_KEY_TAG = "vaplan.ablation.stage_one", "vaplan.ablation.stage_one_unit"
STAGE_ONE_CHECKPOINT = "stage_one/han.pt"
# --seeds sets train.seed; threads and device change speed (and float rounding), not the method
NOT_IN_KEY = ("train.seed", "train.num_threads", "train.device")
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


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _identity(cfg: ExperimentConfig) -> dict:
    """The options that make a unit what it is: those that differ from ExperimentConfig()'s
    defaults, so a new option added at its default keeps every finished run findable."""
    defaults = flatten(ExperimentConfig())
    return {k: v for k, v in flatten(cfg).items()
            if k not in NOT_IN_KEY and (k not in defaults or defaults[k] != v)}


def ablation_key(cfg: ExperimentConfig, rows, seeds, dataset_digest: str,
                 table: str = "5") -> str:
    """The parent run's key: same config, table, rows, seeds and dataset -> the same parent
    (Table 5's payload has no "table" entry: its keys predate the other tables)."""
    payload = {"format": FORMAT, "vaplan": vaplan.__version__, "config": _identity(cfg),
               "rows": list(rows), "seeds": list(seeds), "dataset": dataset_digest}
    return _digest(payload if table == "5" else {**payload, "table": table})


def unit_key(cfg: ExperimentConfig, row: str, seed: int, dataset_digest: str) -> str:
    """A unit's key: its row config (with the seed) and the dataset (not the table: a row id
    is one row in every table, so Table 6's row 4 is Table 5's)."""
    row_cfg = tables.row_config(cfg, row, seed)
    return _digest({"format": FORMAT, "vaplan": vaplan.__version__, "row": row, "seed": seed,
                    "config": _identity(row_cfg), "dataset": dataset_digest})


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """--output names the Markdown file; the CSV goes next to it (same name, .csv)."""
    path = Path(output)
    if path.suffix.lower() == ".csv":
        raise ConfigError(f"--output {output}: name the Markdown file (e.g. table.md); "
                          "the CSV is written next to it")
    return path, path.with_suffix(".csv")


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
        children = tracking.child_runs(self.run.parent_run_id, self.run.experiment_id)
        done = {c.data.tags[UNIT_TAG]: c for c in children
                if c.info.status == "FINISHED" and UNIT_TAG in c.data.tags}
        for key in [self.key(row, seed) for row, seed in self.units] if self.adopt else ():
            found = [] if key in done else tracking.client().search_runs(
                [self.run.experiment_id], filter_string=f"tags.`{UNIT_TAG}` = '{key}' and "
                                                        "attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=1)
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
        name = f"row{row}-seed{seed}"
        tags = {**self.unit_tags(row, seed), tracking.PARENT_TAG: self.run.parent_run_id,
                **tracking.process_tags(), **(tags or {})}
        run = tracking.client().create_run(self.run.experiment_id, run_name=name, tags=tags)
        self.log_params(row, seed, run.info.run_id)
        return run.info.run_id

    def unit_tags(self, row: str, seed: int) -> dict[str, str]:
        return {UNIT_TAG: self.key(row, seed), ROW_TAG: row, SEED_TAG: str(seed),
                TABLE_TAG: self.table.id, "vaplan.ablation.method": tables.get_row(row).name}

    def log_params(self, row: str, seed: int, run_id: str | None = None) -> None:
        row_cfg = tables.row_config(self.cfg, row, seed)
        tracking.log_flat_params({**flatten(row_cfg), "data.digest": self.dataset.digest},
                                 run_id=run_id)

    def checkpoint(self, row: str, seed: int, model, best_epoch: int, path: Path,
                   run_id: str | None = None) -> None:
        """Save a unit's model (best epoch) and log it as `<parent folder of path>/han.pt`."""
        extra = {"row": row, "seed": seed, "unit": self.key(row, seed),
                 "dataset": self.dataset.digest, "best_epoch": best_epoch}
        save_checkpoint(path, model, tables.row_config(self.cfg, row, seed).train, extra)
        tracking.client().log_artifact(run_id or mlflow.active_run().info.run_id, str(path),
                                       path.parent.name)

    def reuse_stage_one(self, row: str, seed: int, tmp: Path):
        """(model, source run id) of a FINISHED run holding the checkpoint of `row`'s `needs`
        row with this seed (any parent of the experiment), else None."""
        key = self.key(tables.get_row(row).needs, seed)
        for tag, artifact in ((UNIT_TAG, CHECKPOINT), (STAGE_ONE_KEY_TAG, STAGE_ONE_CHECKPOINT)):
            found = tracking.client().search_runs(
                [self.run.experiment_id], filter_string=f"tags.`{tag}` = '{key}' and "
                                                        "attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=1)
            for source in (f.info.run_id for f in found):
                try:
                    local = mlflow.artifacts.download_artifacts(
                        run_id=source, artifact_path=artifact, dst_path=str(tmp / source))
                    return load_checkpoint(local, device=self.cfg.train.device)[0], source
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
    paths = output_paths(output) if output is not None else None
    uri = tracking.use_tracking_uri(tracking_uri)
    experiment_id = tracking.prepare_store(uri, experiment)
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
    with tracking.stop_on_signals(), \
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
    found = tracking.client().search_runs([experiment_id],
                                          filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                          order_by=["attributes.start_time DESC"],
                                          max_results=1)
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
        if tables.get_row(row).pld:
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
        model, source = reused
        log(f"[ablation]   stage one: reused the checkpoint of finished run {source} "
            f"(row {needs}, seed {seed})")
        tracking.set_tags({STAGE_ONE_TAG: f"reused from finished run {source}"})
        return model
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
    records = {"row": [], "seed": [], "run_id": []}
    for row, seed, metrics in finished:
        records["row"].append(row)
        records["seed"].append(seed)
        records["run_id"].append(done[key_of[(row, seed)]].info.run_id)
        for key in SCORE_KEYS:
            records.setdefault(f"test/{key}", []).append(metrics[f"test/{key}"])
    with warnings.catch_warnings():  # pandas' object-dtype deprecation inside MLflow
        warnings.simplefilter("ignore", DeprecationWarning)
        mlflow.log_table(records, artifact, run_id=run.parent_run_id)


RUN_COLUMNS = ("run_id", "status", "start_time", "end_time")


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
    unit_col = f"tags.{UNIT_TAG}"
    frame = frame[frame[unit_col].notna()] if unit_col in frame else frame.iloc[0:0]
    frame = frame.dropna(axis=1, how="all")  # the parents' own params and metrics
    tags = {f"tags.{tracking.PARENT_TAG}": "parent_run_id", f"tags.{TABLE_TAG}": "table",
            f"tags.{ROW_TAG}": "row", f"tags.{SEED_TAG}": "seed",
            "tags.vaplan.ablation.method": "method", unit_col: "unit_key"}
    params = sorted(c for c in frame.columns if c.startswith("params."))
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    frame = frame.reindex(columns=[*RUN_COLUMNS, *tags, *params, *metrics])
    frame = frame.rename(columns={**tags, **{c: c.split(".", 1)[1] for c in params + metrics}})
    frame = frame.sort_values(["table", "row", "seed", "start_time"], kind="stable")
    text = io.StringIO()
    frame.to_csv(text, index=False, quoting=csv.QUOTE_MINIMAL)
    atomic_write(Path(out), text.getvalue())
    return len(frame)
