"""Ablation tables of the paper on any Dataset: Table 5 (baseline, PLG video-level, + L'_S,
+ L_S, + PLD) and Table 6 (the richness-aware loss: CR only, SR only, both).

A table (`Table`) is a named list of rows; a row (`Row`) is an id, a printed name, config
overrides (`--set` strings, e.g. `train.loss.variant=richness`), whether it trains on PLG or
PLD labels, and the row whose model (same seed) it needs as PLD's stage one. Rows are data:
a new table (e.g. Table 8, one row per `train.model.name`) is a new `Table` in `TABLES`. A
row id means one thing in every table (Table 6's "4" is Table 5's row ④), so one unit key
(pipelines.ablation) names one training wherever it appears.

A table is run as a grid of units, one per row x seed. `train_row` trains one unit (only the
row's overrides, the targets and `train.seed` change between units) and returns its numbers as
flat metrics (`unit_metrics`: `test/<key>`, `val/<key>`, `best_epoch`, `plg/val/...`,
`pld/val/...`); `summarize` turns the metrics of finished units into the table (mean ± std
over seeds, n per row) and `format_markdown` / `format_csv` print it. The tracked, resumable
runner (one MLflow run per unit) is `pipelines.ablation`, its Ray Tune variant
`ray_jobs.ablation`; this module never touches MLflow or Ray.

Seeds vary `train.seed` only (initialisation and batch order); the dataset (and so
`data.sim.seed`) stays fixed, so the spread is the training's, on one dataset.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable, Container, Iterable, Mapping

import numpy as np

from vaplan.config import ExperimentConfig, apply_overrides
from vaplan.data.types import Dataset, PseudoLabels
from vaplan.errors import ConfigError
from vaplan.method import denoise_with_model, fit, make_pseudo_labels
from vaplan.metrics import SCORE_KEYS
from vaplan.pseudo_labels import pseudo_label_report


@dataclass(frozen=True)
class Row:
    """One row of a table: id, printed name, config overrides and label stages."""

    id: str
    name: str
    overrides: tuple[str, ...]  # "section.option=value", applied over the base config
    plg: bool  # trains on PLG pseudo labels
    pld: bool = False  # trains on PLD-denoised labels (needs `needs`' model of the same seed)
    needs: str | None = None  # the row whose model denoises this row's labels (PLD stage one)


@dataclass(frozen=True)
class Table:
    """A named list of rows; `--table <id>` picks it, `--rows` ids within it."""

    id: str
    title: str
    rows: tuple[Row, ...]

    @property
    def row_ids(self) -> tuple[str, ...]:
        return tuple(row.id for row in self.rows)


_VARIANT = "train.loss.variant="
_CR, _SR = "train.loss.use_category_richness=", "train.loss.use_segment_richness="
ROW_1 = Row("1", "baseline (HAN, Eq. 2)", (_VARIANT + "baseline",), plg=False)
ROW_2 = Row("2", "PLG video-level (L_V)", (_VARIANT + "video",), plg=True)
ROW_3 = Row("3", "PLG + L'_S (naive)", (_VARIANT + "naive",), plg=True)
ROW_4 = Row("4", "PLG + L_S (richness)", (_VARIANT + "richness",), plg=True)
ROW_5 = Row("5", "PLG + L_S + PLD", (_VARIANT + "richness",), plg=True, pld=True, needs="4")
# Table 6 (docs/fidelity.md, Eq. 6-8): one richness term switched off; both on is row ④.
ROW_CR = Row("CR", "PLG + L_V + CR only (Eq. 6)",
             (_VARIANT + "richness", _CR + "true", _SR + "false"), plg=True)
ROW_SR = Row("SR", "PLG + L_V + SR only (Eq. 7)",
             (_VARIANT + "richness", _CR + "false", _SR + "true"), plg=True)

TABLES: dict[str, Table] = {
    "5": Table("5", "Table 5", (ROW_1, ROW_2, ROW_3, ROW_4, ROW_5)),
    "6": Table("6", "Table 6 (richness-aware loss)", (ROW_2, ROW_CR, ROW_SR, ROW_4)),
}
TABLE_5 = TABLES["5"]
QUALITY_KEYS = ("video_precision", "seg", "event", "average")
MODALITIES = ("audio", "visual")


def _all_rows() -> dict[str, Row]:
    """Every row by id; one id is one row in every table (unit keys rely on it)."""
    rows: dict[str, Row] = {}
    for table in TABLES.values():
        for row in table.rows:
            if rows.setdefault(row.id, row) != row:
                raise AssertionError(f"row id {row.id!r} means two rows; give each its own id")
            if row.needs is not None and row.needs not in table.row_ids:
                raise AssertionError(f"table {table.id}: row {row.id} needs row {row.needs}, "
                                     "which the table lacks")
    return rows


ALL_ROWS = _all_rows()


def get_table(table_id: str | int) -> Table:
    """--table 5|6 -> the Table; ConfigError naming the tables otherwise."""
    table = TABLES.get(str(table_id).strip())
    if table is None:
        raise ConfigError(f"--table {table_id!r}: unknown table; expected one of "
                          f"{', '.join(TABLES)}")
    return table


def get_row(row_id: str) -> Row:
    try:
        return ALL_ROWS[row_id]
    except KeyError:
        raise ConfigError(f"unknown ablation row {row_id!r}; expected one of "
                          f"{', '.join(ALL_ROWS)}") from None


def parse_rows(text: str, table: Table = TABLE_5) -> tuple[str, ...]:
    """"1,2,5" -> ("1", "2", "5"): unique, in table order (ids case-insensitive); refuses
    rows that are not in `table`, and empty items."""
    ids = ",".join(table.row_ids)
    items = [item.strip().upper() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ConfigError(f"--rows {text!r}: expected comma-separated row ids of table "
                          f"{table.id} from {ids}, e.g. {','.join(table.row_ids[:2])}")
    unknown = [item for item in items if item not in table.row_ids]
    if unknown:
        raise ConfigError(f"--rows {text!r}: unknown row {unknown[0]!r} in table {table.id}; "
                          f"expected row ids from {ids}")
    return tuple(row for row in table.row_ids if row in items)


def parse_seeds(text: str) -> tuple[int, ...]:
    """"2,0,1" -> (0, 1, 2): distinct non-negative integers, sorted."""
    items = [item.strip() for item in text.split(",")]
    try:
        seeds = [int(item) for item in items]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, "
                          f"e.g. 0,1,2") from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct non-negative integers")
    return tuple(sorted(seeds))


def row_config(cfg: ExperimentConfig, row_id: str, seed: int) -> ExperimentConfig:
    """`cfg` with row `row_id`'s overrides and `train.seed=seed` (everything else kept;
    checked like `--set`)."""
    return apply_overrides(cfg, [*get_row(row_id).overrides, f"train.seed={seed}"])


def waves(todo: Iterable[tuple[str, int]], ready: Container[tuple[str, int]] = ()
          ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Missing units (row, seed) in two waves for a parallel runner: first every unit that
    needs no other row's model, plus each needed (row, seed) that is neither missing nor
    `ready` (a finished run holds it), trained as a unit of its own; then the units that need
    a model (row 5 after row 4 of its seed)."""
    todo = list(todo)
    first = [unit for unit in todo if get_row(unit[0]).needs is None]
    second = [unit for unit in todo if get_row(unit[0]).needs is not None]
    for row, seed in second:
        need = (get_row(row).needs, seed)
        if need not in first and need not in ready:
            first.append(need)
    return first, second


@dataclass
class AblationLabels:
    """PLG pseudo labels of train (targets) and val (quality), shared by every unit."""

    train: PseudoLabels
    val: PseudoLabels
    quality: dict[str, float]  # pseudo_label_report of the val labels


def make_labels(cfg: ExperimentConfig, dataset: Dataset) -> AblationLabels:
    """PLG on train and val (deterministic: it does not depend on the row or the seed)."""
    val = make_pseudo_labels(dataset, "val", cfg.plg)
    return AblationLabels(make_pseudo_labels(dataset, "train", cfg.plg), val,
                          pseudo_label_report(val, dataset.val.gt_audio, dataset.val.gt_visual))


@dataclass
class RowResult:
    """One trained unit: the model, its numbers and the label quality of its targets."""

    row: str
    seed: int
    trained: object  # vaplan.train.TrainResult (model, best_epoch, history)
    test: dict[str, float]
    val: dict[str, float]  # val scores of the selected (best) epoch
    quality: dict[str, dict[str, float]]  # "plg" / "pld" -> pseudo_label_report


def train_row(cfg: ExperimentConfig, dataset: Dataset, labels: AblationLabels, row_id: str,
              seed: int, stage_one=None, on_epoch: Callable | None = None,
              progress: bool = True) -> RowResult:
    """Train row `row_id` with `train.seed=seed` and evaluate it on test.

    A PLD row (row 5) needs `stage_one`, the HAN of its `needs` row (row 4) with the same
    seed: its predictions denoise the PLG labels of train (targets) and val (quality). Row 5
    always trains on the denoised labels (the paper's recipe; `pld.apply` only steers the
    pipeline's retrain step).
    """
    from vaplan.train import evaluate_model

    row, train_cfg = get_row(row_id), row_config(cfg, row_id, seed).train
    quality = {"plg": labels.quality} if row.plg else {}
    pseudo = labels.train if row.plg else None
    if row.pld:
        if stage_one is None:
            raise ValueError(f"row {row.id} (PLD) needs the stage-one model: row "
                             f"{row.needs}'s HAN with seed {seed}")
        pseudo = denoise_with_model(stage_one, dataset.train, labels.train, cfg.pld,
                                    train_cfg.device)
        val_clean = denoise_with_model(stage_one, dataset.val, labels.val, cfg.pld,
                                       train_cfg.device)
        quality["pld"] = pseudo_label_report(val_clean, dataset.val.gt_audio,
                                             dataset.val.gt_visual)
    trained = fit(train_cfg, dataset, pseudo, on_epoch=on_epoch, progress=progress)
    best = trained.history[trained.best_epoch - 1].val if trained.history else {}
    return RowResult(row.id, seed, trained, evaluate_model(trained.model, dataset.test),
                     dict(best), quality)


def unit_metrics(result: RowResult) -> dict[str, float]:
    """Flat numbers of a unit: test/<key>, val/<key>, best_epoch, <stage>/val/<modality>/<k>."""
    flat = {f"test/{key}": value for key, value in result.test.items()}
    flat.update({f"val/{key}": value for key, value in result.val.items()})
    flat["best_epoch"] = float(result.trained.best_epoch)
    for stage, report in result.quality.items():
        flat.update({f"{stage}/val/{key}": value for key, value in report.items()})
    return flat


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Cell:
    """Mean, sample standard deviation (ddof=1; 0 when n == 1) and count over seeds."""

    mean: float
    std: float
    n: int

    def text(self, digits: int) -> str:
        if self.n > 1:
            return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}"


@dataclass
class AblationTable:
    """Test scores per row and val label quality per stage × modality, over seeds."""

    rows: list[tuple[Row, dict[str, Cell]]]  # SCORE_KEYS -> Cell
    labels: list[tuple[str, str, dict[str, Cell]]]  # (stage, modality, QUALITY_KEYS -> Cell)
    seeds: tuple[int, ...] = ()
    table: Table = TABLE_5

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1


def _cell(values: Iterable[float]) -> Cell:
    array = np.asarray(list(values), np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Cell(float(array.mean()), std, int(len(array)))


def summarize(units: Iterable[tuple[str, int, Mapping[str, float]]],
              seeds: tuple[int, ...] = (), table: Table = TABLE_5) -> AblationTable:
    """The table from finished units (row id, seed, unit_metrics), rows in `table`'s order.

    PLG quality does not depend on the row or the seed: it is reported once, from the first row
    that has it (n = its seeds); PLD quality likewise from the first PLD row (row 5: one
    stage-one model per seed).
    """
    by_row: dict[str, list[Mapping[str, float]]] = {}
    for row_id, _seed, metrics in units:
        by_row.setdefault(row_id, []).append(metrics)
    rows = []
    for row in table.rows:
        found = by_row.get(row.id, [])
        if found:
            rows.append((row, {key: _cell(m[f"test/{key}"] for m in found)
                               for key in SCORE_KEYS}))
    labels = []
    for stage in ("plg", "pld"):
        owner = next((r.id for r in table.rows
                      if any(f"{stage}/val/audio/seg" in m for m in by_row.get(r.id, []))), None)
        found = [m for m in by_row.get(owner, []) if f"{stage}/val/audio/seg" in m]
        for modality in MODALITIES if found else ():
            labels.append((stage.upper(), modality,
                           {k: _cell(m[f"{stage}/val/{modality}/{k}"] for m in found)
                            for k in QUALITY_KEYS}))
    return AblationTable(rows, labels, tuple(seeds), table)


def format_markdown(table: AblationTable, notes: Iterable[str] = ()) -> str:
    """Markdown: ten test numbers per row (mean ± std over seeds, n), then val label quality,
    then `notes` (one line each, e.g. where row 5's stage-one model came from)."""
    spread = " (mean ± std over seeds)" if table.multi_seed else ""
    header = ["row", "method", "n"] + [k.replace("_", " ") for k in SCORE_KEYS]
    lines = [f"{table.table.title}, test split, percent{spread}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, cells in table.rows:
        n = min(cell.n for cell in cells.values())
        lines.append("| " + " | ".join([row.id, row.name, str(n)]
                                        + [cells[k].text(1) for k in SCORE_KEYS]) + " |")
    if table.labels:
        lines += ["", "| labels (val) | modality | n | video precision | seg F | event F | "
                  "average |", "|---|---|---|---|---|---|---|"]
        for stage, modality, cells in table.labels:
            n = min(cell.n for cell in cells.values())
            lines.append(f"| {stage} | {modality} | {n} | "
                         + " | ".join(cells[k].text(2) for k in QUALITY_KEYS) + " |")
    notes = list(notes)
    return "\n".join(lines + ([""] + notes if notes else []))


def format_csv(table: AblationTable) -> str:
    """Long-format CSV: section,row,method,modality,metric,mean,std,n (one line per cell)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "row", "method", "modality", "metric", "mean", "std", "n"])
    for row, cells in table.rows:
        for key in SCORE_KEYS:
            cell = cells[key]
            writer.writerow(["test", row.id, row.name, "", key, f"{cell.mean:.4f}",
                             f"{cell.std:.4f}", cell.n])
    for stage, modality, cells in table.labels:
        for key in QUALITY_KEYS:
            cell = cells[key]
            writer.writerow([f"labels/{stage}", "", "", modality, key, f"{cell.mean:.4f}",
                             f"{cell.std:.4f}", cell.n])
    return out.getvalue()
