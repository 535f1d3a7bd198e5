"""Table 5 of the paper on any Dataset: baseline, PLG video-level, + L'_S, + L_S, + PLD.

A table is a grid of units, one per row x seed. `train_row` trains one unit (only the loss
variant, the targets and `train.seed` change between units) and returns its numbers as flat
metrics (`unit_metrics`: `test/<key>`, `val/<key>`, `best_epoch`, `plg/val/...`, `pld/val/...`);
`summarize` turns the metrics of finished units into the table (mean ± std over seeds, n per
row) and `format_markdown` / `format_csv` print it. Row ⑤ denoises with the stage-one model,
which is row ④'s model of the same seed. The tracked, resumable runner (one MLflow run per
unit) is `pipelines.ablation`; this module never touches MLflow.

Seeds vary `train.seed` only (initialisation and batch order); the dataset (and so
`data.sim.seed`) stays fixed, so the spread is the training's, on one dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from vaplan.config import ExperimentConfig
from vaplan.data.types import Dataset, PseudoLabels
from vaplan.errors import ConfigError
from vaplan.method import denoise_with_model, fit, make_pseudo_labels
from vaplan.metrics import SCORE_KEYS
from vaplan.pseudo_labels import pseudo_label_report


@dataclass(frozen=True)
class Row:
    """One row of Table 5: its id, printed name, loss variant and label stages."""

    id: str
    name: str
    variant: str  # train.loss.variant
    plg: bool  # trains on PLG pseudo labels
    pld: bool  # trains on PLD-denoised labels (needs the stage-one model)


ROWS: tuple[Row, ...] = (
    Row("1", "baseline (HAN, Eq. 2)", "baseline", plg=False, pld=False),
    Row("2", "PLG video-level (L_V)", "video", plg=True, pld=False),
    Row("3", "PLG + L'_S (naive)", "naive", plg=True, pld=False),
    Row("4", "PLG + L_S (richness)", "richness", plg=True, pld=False),
    Row("5", "PLG + L_S + PLD", "richness", plg=True, pld=True),
)
ROW_IDS = tuple(row.id for row in ROWS)
STAGE_ONE_ROW = "4"  # the row whose model denoises row 5's labels
QUALITY_KEYS = ("video_precision", "seg", "event", "average")
MODALITIES = ("audio", "visual")


def get_row(row_id: str) -> Row:
    for row in ROWS:
        if row.id == row_id:
            return row
    raise ConfigError(f"unknown ablation row {row_id!r}; expected one of {', '.join(ROW_IDS)}")


def parse_rows(text: str) -> tuple[str, ...]:
    """"1,2,5" -> ("1", "2", "5"): unique, in table order; refuses unknown or empty rows."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ConfigError(f"--rows {text!r}: expected comma-separated row ids from "
                          f"{','.join(ROW_IDS)}, e.g. 1,2")
    unknown = [item for item in items if item not in ROW_IDS]
    if unknown:
        raise ConfigError(f"--rows {text!r}: unknown row {unknown[0]!r}; expected row ids "
                          f"from {','.join(ROW_IDS)}")
    return tuple(row for row in ROW_IDS if row in items)


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
    """`cfg` with row `row_id`'s loss variant and `train.seed=seed` (everything else kept)."""
    loss = dataclasses.replace(cfg.train.loss, variant=get_row(row_id).variant)
    train = dataclasses.replace(cfg.train, loss=loss, seed=seed)
    return dataclasses.replace(cfg, train=train)


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

    Row 5 needs `stage_one`, the HAN of row 4 with the same seed: its predictions denoise the
    PLG labels of train (targets) and val (quality). Row 5 always trains on the denoised labels
    (the paper's recipe; `pld.apply` only steers the pipeline's retrain step).
    """
    from vaplan.train import evaluate_model

    row, train_cfg = get_row(row_id), row_config(cfg, row_id, seed).train
    quality = {"plg": labels.quality} if row.plg else {}
    pseudo = labels.train if row.plg else None
    if row.pld:
        if stage_one is None:
            raise ValueError(f"row {row.id} (PLD) needs the stage-one model: row "
                             f"{STAGE_ONE_ROW}'s HAN with seed {seed}")
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

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1


def _cell(values: Iterable[float]) -> Cell:
    array = np.asarray(list(values), np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Cell(float(array.mean()), std, int(len(array)))


def summarize(units: Iterable[tuple[str, int, Mapping[str, float]]],
              seeds: tuple[int, ...] = ()) -> AblationTable:
    """The table from finished units (row id, seed, unit_metrics), rows in table order.

    PLG quality does not depend on the row or the seed: it is reported once, from the first row
    that has it (n = its seeds); PLD quality comes from row 5 (one stage-one model per seed).
    """
    by_row: dict[str, list[Mapping[str, float]]] = {}
    for row_id, _seed, metrics in units:
        by_row.setdefault(row_id, []).append(metrics)
    rows = []
    for row in ROWS:
        found = by_row.get(row.id, [])
        if found:
            rows.append((row, {key: _cell(m[f"test/{key}"] for m in found)
                               for key in SCORE_KEYS}))
    labels = []
    for stage in ("plg", "pld"):
        owner = next((r.id for r in ROWS
                      if any(f"{stage}/val/audio/seg" in m for m in by_row.get(r.id, []))), None)
        found = [m for m in by_row.get(owner, []) if f"{stage}/val/audio/seg" in m]
        for modality in MODALITIES if found else ():
            labels.append((stage.upper(), modality,
                           {k: _cell(m[f"{stage}/val/{modality}/{k}"] for m in found)
                            for k in QUALITY_KEYS}))
    return AblationTable(rows, labels, tuple(seeds))


def format_markdown(table: AblationTable, notes: Iterable[str] = ()) -> str:
    """Markdown: ten test numbers per row (mean ± std over seeds, n), then val label quality,
    then `notes` (one line each, e.g. where row 5's stage-one model came from)."""
    spread = " (mean ± std over seeds)" if table.multi_seed else ""
    header = ["row", "method", "n"] + [k.replace("_", " ") for k in SCORE_KEYS]
    lines = [f"Table 5, test split, percent{spread}", "",
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
