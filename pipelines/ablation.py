"""Table 5 as tracked, resumable MLflow runs: one parent run, one child run per row × seed.

The parent run is found again by its key (sha256 of the config, the rows, the seeds and the
dataset digest; tag `vaplan.ablation.key`), so re-running the same command resumes it: units
(row × seed) with a FINISHED child run are skipped, the others are trained, each in a new child
run. After every finished unit the table is rebuilt from the parent's FINISHED child runs and
written to `--output` (Markdown + CSV, atomically) and to the parent's artifacts, so a crash or
a kill loses at most the unit in progress (SIGTERM/Ctrl-C end the open runs KILLED). Once every
unit is finished, `mlflow.log_table` records one line per unit as `ablation/runs.json`.

Row 5 needs row 4's model of the same seed: a FINISHED run with row 4's unit key (in this
experiment, any parent) lends its `checkpoint/han.pt`; otherwise row 5's run trains it first
(curves under `stage_one/`, checkpoint `stage_one/han.pt`, reusable by later row-5 runs). The
tag `vaplan.ablation.stage_one` says which.
"""

from __future__ import annotations

import hashlib
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
from vaplan import ablation as table5
from vaplan.config import ExperimentConfig, flatten
from vaplan.data.dataset import load_dataset
from vaplan.data.types import Dataset
from vaplan.errors import ConfigError
from vaplan.io import atomic_write
from vaplan.metrics import SCORE_KEYS
from vaplan.train import load_checkpoint, save_checkpoint

EXPERIMENT = "vaplan-ablations"
FORMAT = 1  # bump when a unit's numbers change meaning, to start new parents
KEY_TAG, UNIT_TAG = "vaplan.ablation.key", "vaplan.ablation.unit"
ROW_TAG, SEED_TAG = "vaplan.ablation.row", "vaplan.ablation.seed"
STAGE_ONE_TAG, STAGE_ONE_KEY_TAG = "vaplan.ablation.stage_one", "vaplan.ablation.stage_one_unit"
STAGE_ONE_CHECKPOINT = "stage_one/han.pt"
NOT_IN_KEY = ("train.seed", "train.num_threads")  # --seeds sets the one; the other is speed only
Log = Callable[[str], None]


@dataclass
class AblationRun:
    """A finished (or resumed-to-the-end) ablation: where it lives and what it printed."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    table: table5.AblationTable
    markdown: str
    trained: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _identity(cfg: ExperimentConfig) -> dict:
    return {k: v for k, v in flatten(cfg).items() if k not in NOT_IN_KEY}


def ablation_key(cfg: ExperimentConfig, rows, seeds, dataset_digest: str) -> str:
    """The parent run's key: same config, rows, seeds and dataset -> the same parent."""
    return _digest({"format": FORMAT, "vaplan": vaplan.__version__, "config": _identity(cfg),
                    "rows": list(rows), "seeds": list(seeds), "dataset": dataset_digest})


def unit_key(cfg: ExperimentConfig, row: str, seed: int, dataset_digest: str) -> str:
    """A unit's key: its row config (with the seed) and the dataset."""
    row_cfg = table5.row_config(cfg, row, seed)
    return _digest({"format": FORMAT, "vaplan": vaplan.__version__, "row": row, "seed": seed,
                    "config": _identity(row_cfg), "dataset": dataset_digest})


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """--output names the Markdown file; the CSV goes next to it (same name, .csv)."""
    path = Path(output)
    if path.suffix.lower() == ".csv":
        raise ConfigError(f"--output {output}: name the Markdown file (e.g. table.md); "
                          "the CSV is written next to it")
    return path, path.with_suffix(".csv")


def run_ablation(cfg: ExperimentConfig, rows: tuple[str, ...], seeds: tuple[int, ...], *,
                 preset: str = "", dataset: Dataset | None = None,
                 tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 output: str | Path | None = None, resume: bool = True,
                 progress: bool = True, log: Log = print) -> AblationRun:
    """Train the missing units of (rows × seeds) under one parent run; returns the table."""
    started = time.perf_counter()
    paths = output_paths(output) if output is not None else None
    uri = tracking.use_tracking_uri(tracking_uri)
    experiment_id = tracking.prepare_store(uri, experiment)
    if dataset is None:
        log(f"[ablation] building dataset ({cfg.data.source})")
        dataset = load_dataset(cfg.data, progress=progress)
    log(f"[ablation] {dataset.description} (digest {dataset.digest[:12]})")
    key = ablation_key(cfg, rows, seeds, dataset.digest)
    parent_id = _find_parent(experiment_id, key) if resume else None
    units = [(row, seed) for row in rows for seed in seeds]
    tags = {KEY_TAG: key, "vaplan.preset": preset, "vaplan.version": vaplan.__version__,
            "vaplan.dataset_digest": dataset.digest, "vaplan.ablation": "parent"}
    name = f"ablation {preset or 'custom'} rows={','.join(rows)} seeds={','.join(map(str, seeds))}"
    with tracking.stop_on_signals(), \
            tracking.start_run(experiment_id, run_name=name, tags=tags, run_id=parent_id) as parent:
        run = AblationRun(uri, experiment_id, parent.info.run_id, table5.summarize([], seeds), "")
        log(f"[ablation] {'resuming' if parent_id else 'new'} parent run {run.parent_run_id} "
            f"in experiment {experiment!r} (units: rows {','.join(rows)} × seeds "
            f"{','.join(map(str, seeds))} = {len(units)}); store {uri}")
        if parent_id is None:
            tracking.log_flat_params({**flatten(cfg), "ablation.rows": ",".join(rows),
                                      "ablation.seeds": ",".join(map(str, seeds)),
                                      "data.digest": dataset.digest})
        _run_units(run, cfg, dataset, units, paths, progress, log)
        _publish(run, units, cfg, dataset, paths, log, final=True)
    run.seconds = time.perf_counter() - started
    log(f"[ablation] done in {run.seconds:.0f} s: trained {len(run.trained)}, skipped "
        f"{len(run.skipped)} (parent run {run.parent_run_id})")
    return run


def _run_units(run: AblationRun, cfg: ExperimentConfig, dataset: Dataset, units,
               paths: tuple[Path, Path] | None, progress: bool, log: Log) -> None:
    """Skip the units with a FINISHED child run; train the others, publishing after each."""
    done = _finished_units(run)
    labels = None
    for index, (row, seed) in enumerate(units, start=1):
        what = f"[ablation] {index}/{len(units)} row {row} seed {seed}"
        ukey = unit_key(cfg, row, seed, dataset.digest)
        if ukey in done:
            log(f"{what}: finished earlier in run {done[ukey].info.run_id}, skipped")
            run.skipped.append((row, seed))
            continue
        labels = labels or table5.make_labels(cfg, dataset)
        log(f"{what}: training {table5.get_row(row).name}")
        child = _train_unit(run, cfg, dataset, labels, row, seed, ukey, progress, log)
        log(f"{what}: finished (run {child})")
        run.trained.append((row, seed))
        _publish(run, units, cfg, dataset, paths, log)


def _find_parent(experiment_id: str, key: str) -> str | None:
    """The newest parent run with this key (any status: a crashed or killed one resumes)."""
    found = tracking.client().search_runs([experiment_id],
                                          filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                          order_by=["attributes.start_time DESC"],
                                          max_results=1)
    return found[0].info.run_id if found else None


def _finished_units(run: AblationRun) -> dict[str, object]:
    """unit key -> the newest FINISHED child run of the parent with that key."""
    children = tracking.child_runs(run.parent_run_id, run.experiment_id)
    return {c.data.tags[UNIT_TAG]: c for c in children
            if c.info.status == "FINISHED" and UNIT_TAG in c.data.tags}


def _epoch_logger(cfg: ExperimentConfig, prefix: str):
    def on_epoch(stats) -> None:
        tracking.log_scores({"train_loss": stats.train_loss, "lr": stats.lr,
                             "val_seg_type": stats.val.get("seg_type", float("nan")),
                             f"val_{cfg.train.select_metric}":
                                 stats.val.get(cfg.train.select_metric, float("nan"))},
                            prefix=prefix, step=stats.epoch)
    return on_epoch


def _train_unit(run: AblationRun, cfg: ExperimentConfig, dataset: Dataset, labels, row: str,
                seed: int, ukey: str, progress: bool, log: Log) -> str:
    """One unit in one child run: params, curves, numbers, checkpoint; returns the run id."""
    row_cfg = table5.row_config(cfg, row, seed)
    tags = {UNIT_TAG: ukey, ROW_TAG: row, SEED_TAG: str(seed),
            "vaplan.ablation.method": table5.get_row(row).name}
    with tracking.start_child_run(run.parent_run_id, run.experiment_id,
                                  run_name=f"row{row}-seed{seed}", tags=tags) as child, \
            tempfile.TemporaryDirectory(prefix="vaplan-ablation-") as tmp:
        tracking.log_flat_params({**flatten(row_cfg), "data.digest": dataset.digest})
        stage_one = None
        if table5.get_row(row).pld:
            stage_one = _stage_one(run, cfg, dataset, labels, seed, Path(tmp), progress, log)
        result = table5.train_row(cfg, dataset, labels, row, seed, stage_one=stage_one,
                                  on_epoch=_epoch_logger(cfg, "epoch/"), progress=progress)
        tracking.log_scores(table5.unit_metrics(result))
        _log_checkpoint(cfg, result, dataset, ukey, Path(tmp) / CHECKPOINT)
        return child.info.run_id


def _log_checkpoint(cfg: ExperimentConfig, result: table5.RowResult, dataset: Dataset,
                    ukey: str, path: Path) -> None:
    """Save the unit's model (best epoch) and log it as `<parent folder of path>/han.pt`."""
    row_cfg = table5.row_config(cfg, result.row, result.seed)
    extra = {"row": result.row, "seed": result.seed, "unit": ukey, "dataset": dataset.digest,
             "best_epoch": result.trained.best_epoch}
    save_checkpoint(path, result.trained.model, row_cfg.train, extra)
    mlflow.log_artifact(str(path), path.parent.name)


def _reuse_stage_one(run: AblationRun, cfg: ExperimentConfig, key: str, tmp: Path, log: Log):
    """(model, source run id) from a FINISHED run holding row 4's checkpoint, else None."""
    for tag, artifact in ((UNIT_TAG, CHECKPOINT), (STAGE_ONE_KEY_TAG, STAGE_ONE_CHECKPOINT)):
        found = tracking.client().search_runs(
            [run.experiment_id], filter_string=f"tags.`{tag}` = '{key}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        for source in (f.info.run_id for f in found):
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=source, artifact_path=artifact, dst_path=str(tmp / source))
                return load_checkpoint(local, device=cfg.train.device)[0], source
            except Exception as err:  # artifacts deleted or corrupt: look further, or train
                log(f"[ablation]   stage one: cannot use {artifact} of run {source} ({err})")
    return None


def _stage_one(run: AblationRun, cfg: ExperimentConfig, dataset: Dataset, labels, seed: int,
               tmp: Path, progress: bool, log: Log):
    """Row 4's model with this seed: reuse a finished run's checkpoint, or train it here."""
    key = unit_key(cfg, table5.STAGE_ONE_ROW, seed, dataset.digest)
    reused = _reuse_stage_one(run, cfg, key, tmp, log)
    if reused is not None:
        model, source = reused
        log(f"[ablation]   stage one: reused the checkpoint of finished run {source} "
            f"(row {table5.STAGE_ONE_ROW}, seed {seed})")
        tracking.set_tags({STAGE_ONE_TAG: f"reused from finished run {source}"})
        return model
    log(f"[ablation]   stage one: no finished row {table5.STAGE_ONE_ROW} run with seed {seed}; "
        "training it first in this run")
    result = table5.train_row(cfg, dataset, labels, table5.STAGE_ONE_ROW, seed,
                              on_epoch=_epoch_logger(cfg, "stage_one/epoch/"), progress=progress)
    tracking.log_scores(table5.unit_metrics(result), prefix="stage_one/")
    _log_checkpoint(cfg, result, dataset, key, tmp / STAGE_ONE_CHECKPOINT)
    here = mlflow.active_run().info.run_id
    tracking.set_tags({STAGE_ONE_TAG: f"trained in run {here}", STAGE_ONE_KEY_TAG: key})
    return result.trained.model


def _publish(run: AblationRun, units, cfg: ExperimentConfig, dataset: Dataset,
             paths: tuple[Path, Path] | None, log: Log, final: bool = False) -> None:
    """Rebuild the table from the FINISHED child runs; write --output and parent artifacts."""
    wanted = {unit_key(cfg, row, seed, dataset.digest): (row, seed) for row, seed in units}
    done = _finished_units(run)
    finished = [(row, seed, done[key].data.metrics) for key, (row, seed) in wanted.items()
                if key in done]
    seeds = tuple(dict.fromkeys(seed for _, seed in units))
    run.table = table5.summarize(finished, seeds)
    notes = [f"row {row} seed {seed}: stage one {done[key].data.tags[STAGE_ONE_TAG]}"
             for key, (row, seed) in wanted.items()
             if key in done and STAGE_ONE_TAG in done[key].data.tags]
    run.markdown = table5.format_markdown(run.table, notes)
    csv_text = table5.format_csv(run.table)
    if paths is not None:
        atomic_write(paths[0], run.markdown + "\n")
        atomic_write(paths[1], csv_text)
    mlflow.log_text(run.markdown + "\n", "ablation/table.md")
    mlflow.log_text(csv_text, "ablation/table.csv")
    tracking.set_tags({"vaplan.ablation.progress": f"{len(finished)}/{len(units)} finished",
                       tracking.NOTE_TAG: run.markdown})  # the table is the run's description
    if final and len(finished) == len(units):
        _log_runs_table(run, finished, done, wanted)
    if not final and paths is not None:
        log(f"[ablation] table ({len(finished)}/{len(units)} units) written to {paths[0]} "
            f"and {paths[1]}")


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
        mlflow.log_table(records, artifact)
