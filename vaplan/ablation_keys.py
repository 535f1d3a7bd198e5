"""What finds an ablation's runs again, and its exports, without MLflow (docs/pipelines.md
"Ablations"): the parent's and each unit's key, the tag names, the `--output` paths, the
unit-runs CSV and the runs table. `pipelines.ablation` records and searches by them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import vaplan
from vaplan import ablation as tables
from vaplan.config import ExperimentConfig, flatten
from vaplan.errors import ConfigError
from vaplan.metrics import SCORE_KEYS

# Bump FORMAT when a unit's numbers change meaning (including a changed config default, since
# keys hold only the options that differ from the defaults), to start new parents and units.
FORMAT = 2
KEY_TAG, UNIT_TAG = "vaplan.ablation.key", "vaplan.ablation.unit"
ROW_TAG, SEED_TAG = "vaplan.ablation.row", "vaplan.ablation.seed"
TABLE_TAG, METHOD_TAG = "vaplan.ablation.table", "vaplan.ablation.method"
# --seeds sets train.seed; threads and device change speed (and float rounding), not the method
NOT_IN_KEY = ("train.seed", "train.num_threads", "train.device")
RUN_COLUMNS = ("run_id", "status", "start_time", "end_time")


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def identity(cfg: ExperimentConfig) -> dict:
    """The options that make a unit what it is: those that differ from ExperimentConfig()'s
    defaults, so a new option added at its default keeps every finished run findable."""
    defaults = flatten(type(cfg)())  # ExperimentConfig; Table 9: the AVE experiment's
    return {k: v for k, v in flatten(cfg).items()
            if k not in NOT_IN_KEY and (k not in defaults or defaults[k] != v)}


def ablation_key(cfg: ExperimentConfig, rows, seeds, dataset_digest: str,
                 table: str = "5") -> str:
    """The parent run's key: same config, table, rows, seeds and dataset -> the same parent
    (Table 5's payload has no "table" entry: its keys predate the other tables)."""
    payload = {"format": FORMAT, "vaplan": vaplan.__version__, "config": identity(cfg),
               "rows": list(rows), "seeds": list(seeds), "dataset": dataset_digest}
    return _digest(payload if table == "5" else {**payload, "table": table})


def unit_key(cfg: ExperimentConfig, row: str, seed: int, dataset_digest: str) -> str:
    """A unit's key: its row config (with the seed) and the dataset (not the table: a row id
    is one row in every table, so Table 6's row 4 is Table 5's)."""
    row_cfg = tables.row_config(cfg, row, seed)
    return _digest({"format": FORMAT, "vaplan": vaplan.__version__, "row": row, "seed": seed,
                    "config": identity(row_cfg), "dataset": dataset_digest})


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """--output names the Markdown file; the CSV goes next to it (same name, .csv)."""
    path = Path(output)
    if path.suffix.lower() == ".csv":
        raise ConfigError(f"--output {output}: name the Markdown file (e.g. table.md); "
                          "the CSV is written next to it")
    return path, path.with_suffix(".csv")


def runs_records(finished: list[tuple[str, int, dict]], run_ids: list[str],
                 keys: tuple[str, ...] = SCORE_KEYS) -> dict[str, list]:
    """The runs table's columns: row, seed, run id and the test numbers (`keys`: the ten AVVP
    scores; Table 9: accuracy) of each finished unit (`finished`: (row, seed, metrics);
    `run_ids` in the same order)."""
    records: dict[str, list] = {"row": [row for row, _, _ in finished],
                                "seed": [seed for _, seed, _ in finished], "run_id": run_ids}
    for key in keys:
        records[f"test/{key}"] = [metrics[f"test/{key}"] for _, _, metrics in finished]
    return records


def units_csv(frame, parent_tag: str) -> tuple[str, int]:
    """MLflow's search_runs frame of an experiment -> the CSV of its unit runs: run id,
    status, times, parent, table, row, seed, method, unit key, then every param (the row's
    config) and every metric, sorted by table, row, seed, start (parents dropped); and the
    number of unit runs."""
    unit_col = f"tags.{UNIT_TAG}"
    frame = frame[frame[unit_col].notna()] if unit_col in frame else frame.iloc[0:0]
    frame = frame.dropna(axis=1, how="all")  # the parents' own params and metrics
    tags = {f"tags.{parent_tag}": "parent_run_id", f"tags.{TABLE_TAG}": "table",
            f"tags.{ROW_TAG}": "row", f"tags.{SEED_TAG}": "seed",
            f"tags.{METHOD_TAG}": "method", unit_col: "unit_key"}
    params = sorted(c for c in frame.columns if c.startswith("params."))
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    frame = frame.reindex(columns=[*RUN_COLUMNS, *tags, *params, *metrics])
    frame = frame.rename(columns={**tags, **{c: c.split(".", 1)[1] for c in params + metrics}})
    frame = frame.sort_values(["table", "row", "seed", "start_time"], kind="stable")
    text = io.StringIO()
    frame.to_csv(text, index=False, quoting=csv.QUOTE_MINIMAL)
    return text.getvalue(), len(frame)
