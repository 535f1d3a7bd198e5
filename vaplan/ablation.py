"""Ablation tables of the paper on any Dataset: Table 5 (baseline, PLG video-level, + L'_S,
+ L_S, + PLD), Table 6 (the richness-aware loss: CR only, SR only, both) and Table 8 (VAPLAN's
labels on other backbones: MGN and MM-Pyramid, each base, + MA, + PLG, + PLD).

A table (`Table`) is a named list of rows; a row (`Row`) is an id, a printed name, config
overrides (`--set` strings, e.g. `train.loss.variant=richness`), a backbone recipe (overrides
of the options still at their defaults: a preset's or a `--set` value stays), the labels it
trains on (`video`, `ma`, `plg`, `pld`), the row whose model (same seed) makes those labels
(PLD's stage one; MA's video-label model) and the paper's numbers. Rows are data: a new table
is a new `Table` in `TABLES`. A row id means one thing in every table (Table 6's "4" is Table
5's row ④), so one unit key (pipelines.ablation) names one training wherever it appears.

A table is run as a grid of units, one per row x seed. `train_row` trains one unit (only the
row's overrides, the targets and `train.seed` change between units) and returns its numbers as
flat metrics (`unit_metrics`: `test/<key>`, `val/<key>`, `best_epoch`, `plg/val/...`,
`ma/val/...`, `pld/val/...`); `summarize` turns the metrics of finished units into the table
(mean ± std over seeds, n per row) and `format_markdown` / `format_csv` print it. The
tracked, resumable runner (one MLflow run per unit) is `pipelines.ablation`, its Ray Tune
variant `ray_jobs.ablation`; this module never touches MLflow or Ray.

Seeds vary `train.seed` only (initialisation and batch order); the dataset (and so
`data.sim.seed`) stays fixed, so the spread is the training's, on one dataset.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from dataclasses import dataclass
from typing import Callable, Container, Iterable, Mapping, NamedTuple

import numpy as np

from vaplan.config import (LABEL_KINDS, ExperimentConfig, LabelKind, apply_overrides,
                           backbone_overrides, with_recipe)
from vaplan.data.types import Dataset, PseudoLabels
from vaplan.errors import ConfigError
from vaplan.method import denoise_with_model, fit, make_pseudo_labels
from vaplan.metrics import SCORE_KEYS
from vaplan.pseudo_labels import pseudo_label_report


MADE_BY_A_MODEL = ("ma", "pld")  # label kinds made from another row's trained model


@dataclass(frozen=True)
class Row:
    """One row of a table: id, printed name, config overrides and the labels it trains on.

    labels: "video" (the weak labels y), "ma" (MA's modality-aware video-level labels from
    `needs`' model, vaplan.ma_labels), "plg" (PLG pseudo labels) or "pld" (PLG labels denoised
    by `needs`' model). `needs` is set exactly for "ma" and "pld".
    """

    id: str
    name: str
    overrides: tuple[str, ...]  # "section.option=value", applied over the base config
    labels: LabelKind = "video"
    needs: str | None = None  # the row whose model (same seed) makes this row's labels
    recipe: tuple[str, ...] = ()  # applied first, to options not set and at their defaults
    paper: tuple[tuple[str, float], ...] = ()  # (SCORE_KEYS key, the paper's test number)

    def __post_init__(self) -> None:
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"row {self.id}: labels must be one of {LABEL_KINDS}, got "
                             f"{self.labels!r}")
        if (self.labels in MADE_BY_A_MODEL) != (self.needs is not None):
            raise ValueError(f"row {self.id}: `needs` names the model that makes "
                             f"{'/'.join(MADE_BY_A_MODEL)} labels, and only those")

    @property
    def plg(self) -> bool:
        """Trains on PLG pseudo labels (denoised or not)."""
        return self.labels in ("plg", "pld")

    @property
    def pld(self) -> bool:
        """Trains on PLD-denoised labels (needs `needs`' model of the same seed)."""
        return self.labels == "pld"


@dataclass(frozen=True)
class Table:
    """A named list of rows; `--table <id>` picks it, `--rows` ids within it."""

    id: str
    title: str
    rows: tuple[Row, ...]
    scores: tuple[str, ...] = SCORE_KEYS  # the test numbers of a unit (Table 9: AVE accuracy)
    source: str = "real LLP test"  # where the paper's numbers come from
    task: str = "avvp"  # "ave": units train an AVE experiment (vaplan.ave.config)

    @property
    def row_ids(self) -> tuple[str, ...]:
        return tuple(row.id for row in self.rows)


_VARIANT = "train.loss.variant="
_CR, _SR = "train.loss.use_category_richness=", "train.loss.use_segment_richness="
ROW_1 = Row("1", "baseline (HAN, Eq. 2)", (_VARIANT + "baseline",), "video")
ROW_2 = Row("2", "PLG video-level (L_V)", (_VARIANT + "video",), "plg")
ROW_3 = Row("3", "PLG + L'_S (naive)", (_VARIANT + "naive",), "plg")
ROW_4 = Row("4", "PLG + L_S (richness)", (_VARIANT + "richness",), "plg")
ROW_5 = Row("5", "PLG + L_S + PLD", (_VARIANT + "richness",), "pld", needs="4")
# Table 6 (docs/fidelity.md, Eq. 6-8): one richness term switched off; both on is row ④.
ROW_CR = Row("CR", "PLG + L_V + CR only (Eq. 6)",
             (_VARIANT + "richness", _CR + "true", _SR + "false"), "plg")
ROW_SR = Row("SR", "PLG + L_V + SR only (Eq. 7)",
             (_VARIANT + "richness", _CR + "false", _SR + "true"), "plg")

# Table 8 of the paper: seg Type@AV on real LLP test of base, + MA, + PLG, + PLD (issue 12).
PAPER_TABLE_8 = {"mgn": (55.5, 59.2, 60.0, 60.8), "mm_pyramid": (55.1, 59.7, 61.3, 62.0)}
BACKBONE_TITLES = {"mgn": "MGN", "mm_pyramid": "MM-Pyramid"}


def backbone_rows(name: str) -> tuple[Row, ...]:
    """Table 8's rows of one backbone (docs/backbones.md "Table 8 rows"): `name` (video-level
    labels, Eq. 2), `name+ma` (MA labels of `name`'s model, L_V), `name+plg` (PLG, L_V + L_S),
    `name+pld` (PLD with `name+plg`'s model, L_V + L_S). The backbone's published sizes and
    recipe (`backbone_overrides`) are the rows' `recipe` (see `row_config`)."""
    model = f"train.model.name={name}"
    recipe = tuple(item for item in backbone_overrides(name) if item != model)
    title, paper = BACKBONE_TITLES[name], PAPER_TABLE_8[name]
    rows = (("", f"{title}, video-level labels (Eq. 2)", "baseline", "video", None),
            ("+ma", f"{title} + MA labels (L_V)", "video", "ma", name),
            ("+plg", f"{title} + PLG (L_V + L_S)", "richness", "plg", None),
            ("+pld", f"{title} + PLG + PLD", "richness", "pld", f"{name}+plg"))
    return tuple(Row(name + suffix, text, (model, _VARIANT + variant), labels, needs, recipe,
                     (("seg_type", number),))
                 for (suffix, text, variant, labels, needs), number in zip(rows, paper))


# Table 9 of the paper: AVE test segment accuracy, weak baseline -> + PLG (issue 13,
# docs/ave.md); its units train on an AVE experiment (vaplan.ave.config), not on LLP.
PAPER_TABLE_9 = {"avel": (67.1, 69.2), "psp": (72.1, 74.3), "cmbs": (72.2, 74.4)}
AVE_ARMS = (("", ", weak (video labels)", "false", "video"),
            ("+plg", " + PLG segment labels", "true", "plg"))
AVE_ROWS = tuple(Row(name + suffix, name.upper() + text,
                     (f"model.name={name}", f"plg.use={use}"), labels,
                     paper=(("accuracy", number),))
                 for name, numbers in PAPER_TABLE_9.items()
                 for (suffix, text, use, labels), number in zip(AVE_ARMS, numbers))

TABLES: dict[str, Table] = {
    "5": Table("5", "Table 5", (ROW_1, ROW_2, ROW_3, ROW_4, ROW_5)),
    "6": Table("6", "Table 6 (richness-aware loss)", (ROW_2, ROW_CR, ROW_SR, ROW_4)),
    "8": Table("8", "Table 8 (backbones: base, + MA, + PLG, + PLD)",
               backbone_rows("mgn") + backbone_rows("mm_pyramid")),
    "9": Table("9", "Table 9 (AVE segment accuracy: weak baseline, + PLG)", AVE_ROWS,
               scores=("accuracy",), source="real AVE test", task="ave"),
}
TABLE_5 = TABLES["5"]
QUALITY_KEYS = ("video_precision", "seg", "event", "average")
AVE_QUALITY_KEYS = ("accuracy", "seg", "event")  # Table 9: PLG's AV labels (vaplan.ave.quality)
QUALITY_NAMES = {"video_precision": "video precision", "seg": "seg F", "event": "event F",
                 "average": "average", "accuracy": "segment accuracy"}
MODALITIES = ("audio", "visual")
STAGES = ("plg", "ma", "pld")  # label quality reported per unit: <stage>/val/<modality>/<k>


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
    """--table 5|6|8 -> the Table; ConfigError naming the tables otherwise."""
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
    """"1,2,5" -> ("1", "2", "5"): unique, in table order (ids case-insensitive; a pattern
    such as `mgn*` picks every matching row); refuses rows that are not in `table`, patterns
    that match none, and empty items."""
    ids = ",".join(table.row_ids)
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ConfigError(f"--rows {text!r}: expected comma-separated row ids of table "
                          f"{table.id} from {ids}, e.g. {','.join(table.row_ids[:2])}")
    picked: set[str] = set()
    for item in items:
        found = {row for row in table.row_ids
                 if fnmatch.fnmatchcase(row.upper(), item.upper())}
        if not found:
            raise ConfigError(f"--rows {text!r}: unknown row {item!r} in table {table.id}; "
                              f"expected row ids from {ids}")
        picked |= found
    return tuple(row for row in table.row_ids if row in picked)


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


def check_base(cfg: ExperimentConfig) -> ExperimentConfig:
    """An ablation's base config: each row names its labels (`Row.labels`), so
    `labels.source` (the tracked pipeline's option) must stay at its default."""
    if cfg.labels.source != "pld":
        raise ConfigError(f"labels.source={cfg.labels.source} is the tracked pipeline's option "
                          f"(vaplan run); an ablation row names its own labels (video, ma, plg "
                          f"or pld): drop --set labels.source")
    return cfg


def check_task(table: Table, cfg) -> None:
    """Table 9 trains AVE experiments (`--preset ave-sim`), the others LLP ones."""
    if (table.task == "ave") != (not isinstance(cfg, ExperimentConfig)):
        wanted = ("an AVE preset (--preset ave-sim)" if table.task == "ave" else
                  "an LLP preset (sim-tiny, sim-small, sim-full, llp; --table 9 is AVE's)")
        raise ConfigError(f"--table {table.id} ({table.title}) needs {wanted}")


def row_config(cfg: ExperimentConfig, row_id: str, seed: int) -> ExperimentConfig:
    """`cfg` with row `row_id`'s recipe, its overrides and `train.seed=seed` (everything else
    kept; checked like `--set`). The recipe goes through `vaplan.config.with_recipe`: an option
    the `--set` named stays whatever its value (`--set train.lr=3e-4` on MM-Pyramid), and so
    does one the preset changed (sim-tiny's 2 epochs). Rows without a recipe (Tables 5, 6)
    are their overrides."""
    row = get_row(row_id)
    if not isinstance(cfg, ExperimentConfig):  # Table 9: an AVE experiment (vaplan.ave.config)
        from vaplan.ave.config import row_experiment

        return row_experiment(cfg, row.overrides, seed)
    check_base(cfg)
    return apply_overrides(with_recipe(cfg, row.recipe),
                           [*row.overrides, f"train.seed={seed}"])


def waves(todo: Iterable[tuple[str, int]], ready: Container[tuple[str, int]] = ()
          ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Missing units (row, seed) in two waves for a parallel runner: first every unit that
    needs no other row's model, plus each needed (row, seed) that is neither missing nor
    `ready` (a finished run holds it), trained as a unit of its own; then the units that need
    a model (row 5 after row 4 of its seed; Table 8's +MA after base, +PLD after +PLG)."""
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
    """PLG on train and val (deterministic: it does not depend on the row or the seed); for
    an AVE experiment (Table 9) its AV segment labels, `vaplan.ave.experiment.make_labels`."""
    if not isinstance(cfg, ExperimentConfig):
        from vaplan.ave.experiment import make_labels as ave_labels

        return ave_labels(cfg, dataset)
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
    quality: dict[str, dict[str, float]]  # "plg" / "ma" / "pld" -> label report (val)


def train_row(cfg: ExperimentConfig, dataset: Dataset, labels: AblationLabels, row_id: str,
              seed: int, stage_one=None, on_epoch: Callable | None = None,
              progress: bool = True) -> RowResult:
    """Train row `row_id` with `train.seed=seed` and evaluate it on test.

    A PLD or MA row needs `stage_one`, the model of its `needs` row with the same seed. PLD
    (row 5, `*+pld`): its predictions denoise the PLG labels of train (targets) and val
    (quality); the row always trains on the denoised labels (the paper's recipe; `pld.apply`
    only steers the pipeline's retrain step). MA (`*+ma`): the model trained on video labels
    makes MA's modality-aware labels of train (targets, loss L_V) and val (quality), with
    partners drawn with `seed` (vaplan.ma_labels).
    """
    from vaplan.train import evaluate_model

    if not isinstance(cfg, ExperimentConfig):  # Table 9 (AVE): no stage-one rows
        return _train_ave_row(cfg, dataset, labels, row_id, seed, on_epoch)
    row, train_cfg = get_row(row_id), row_config(cfg, row_id, seed).train
    if row.needs is not None and stage_one is None:
        raise ValueError(f"row {row.id} ({row.labels.upper()}) needs the stage-one model: row "
                         f"{row.needs}'s model with seed {seed}")
    quality = {"plg": labels.quality} if row.plg else {}
    pseudo, targets = (labels.train if row.plg else None), None
    if row.pld:
        pseudo = denoise_with_model(stage_one, dataset.train, labels.train, cfg.pld,
                                    train_cfg.device)
        val_clean = denoise_with_model(stage_one, dataset.val, labels.val, cfg.pld,
                                       train_cfg.device)
        quality["pld"] = pseudo_label_report(val_clean, dataset.val.gt_audio,
                                             dataset.val.gt_visual)
    elif row.labels == "ma":
        targets, quality["ma"] = ma_training_targets(stage_one, dataset, seed, train_cfg.device)
    trained = fit(train_cfg, dataset, pseudo, on_epoch=on_epoch, progress=progress,
                  targets=targets)
    best = trained.history[trained.best_epoch - 1].val if trained.history else {}
    return RowResult(row.id, seed, trained, evaluate_model(trained.model, dataset.test),
                     dict(best), quality)


def _train_ave_row(cfg, dataset, labels, row_id: str, seed: int,
                   on_epoch: Callable | None) -> RowResult:
    """A Table 9 unit: the row's AVE model, weak loss (+ PLG's segment objective), the best
    val epoch; test and val segment accuracy; the PLG labels' val quality (+PLG rows)."""
    from vaplan.ave import experiment as ave

    row, row_cfg = get_row(row_id), row_config(cfg, row_id, seed)
    trained = ave.train_model(row_cfg, dataset, labels.train if row.plg else None, on_epoch)
    test = ave.split_scores(trained.model, dataset, row_cfg.train.device)["test"]
    return RowResult(row.id, seed, trained, test, {"accuracy": trained.best_val_accuracy},
                     {"plg": labels.quality} if row.plg else {})


def ma_training_targets(model, dataset: Dataset, seed: int, device: str = "cpu"):
    """MA labels of train (-> TrainTargets) and their quality on val (ma_label_quality)."""
    from vaplan.ma_labels import ma_label_quality, ma_targets, modality_aware_labels

    train = modality_aware_labels(model, dataset.train, seed=seed, device=device)
    val = modality_aware_labels(model, dataset.val, seed=seed, device=device)
    return ma_targets(dataset.train, train), ma_label_quality(val, dataset.val)


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


class LabelLine(NamedTuple):
    """Val label quality of one stage × modality (over seeds); `row` names the row that made
    them when the table has several rows of that stage (Table 8's MA and PLD rows)."""

    stage: str  # "PLG", "MA", "PLD"
    modality: str
    cells: dict[str, Cell]  # QUALITY_KEYS (Table 9: AVE_QUALITY_KEYS) -> Cell
    row: str = ""

    @property
    def label(self) -> str:
        return f"{self.stage} ({self.row})" if self.row else self.stage


@dataclass
class AblationTable:
    """Test scores per row and val label quality per stage × modality, over seeds."""

    rows: list[tuple[Row, dict[str, Cell]]]  # SCORE_KEYS -> Cell
    labels: list[LabelLine]
    seeds: tuple[int, ...] = ()
    table: Table = TABLE_5

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1

    @property
    def paper_keys(self) -> list[str]:
        """The SCORE_KEYS the table's rows have paper numbers for (Table 8: seg_type)."""
        return [key for key in self.table.scores
                if any(key in dict(row.paper) for row in self.table.rows)]


def _cell(values: Iterable[float]) -> Cell:
    array = np.asarray(list(values), np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Cell(float(array.mean()), std, int(len(array)))


def _makes(row: Row, stage: str) -> bool:
    """Whether `row` trains on labels of `stage` (plg: also the PLD rows, built on PLG)."""
    return row.plg if stage == "plg" else row.labels == stage


def summarize(units: Iterable[tuple[str, int, Mapping[str, float]]],
              seeds: tuple[int, ...] = (), table: Table = TABLE_5) -> AblationTable:
    """The table from finished units (row id, seed, unit_metrics), rows in `table`'s order.

    PLG quality does not depend on the row or the seed: it is reported once, from the first row
    that has it (n = its seeds). MA and PLD quality depend on the model that made them: from
    each row of that stage when the table has several (Table 8), else from its one row (row 5:
    one stage-one model per seed).
    """
    by_row: dict[str, list[Mapping[str, float]]] = {}
    for row_id, _seed, metrics in units:
        by_row.setdefault(row_id, []).append(metrics)
    rows = []
    for row in table.rows:
        found = by_row.get(row.id, [])
        if found:
            rows.append((row, {key: _cell(m[f"test/{key}"] for m in found)
                               for key in table.scores}))
    labels = []
    for stage in STAGES:
        probe = f"{stage}/val/audio/seg"
        owners = [r.id for r in table.rows if any(probe in m for m in by_row.get(r.id, []))]
        per_row = stage != "plg" and sum(_makes(r, stage) for r in table.rows) > 1
        for owner in owners if per_row else owners[:1]:
            found = [m for m in by_row[owner] if probe in m]
            labels += [LabelLine(stage.upper(), modality,
                                 {k: _cell(m[f"{stage}/val/{modality}/{k}"] for m in found)
                                  for k in QUALITY_KEYS}, owner if per_row else "")
                       for modality in MODALITIES]
    if table.task == "ave":
        labels += _ave_label_lines(table, by_row)
    return AblationTable(rows, labels, tuple(seeds), table)


def _ave_label_lines(table: Table, by_row: Mapping[str, list]) -> list[LabelLine]:
    """Table 9: the val quality of PLG's audio-visual segment labels (`plg/val/accuracy|seg|
    event` of the `+plg` units), once, from the first row that has it: the labels do not
    depend on the row or the seed (docs/ave.md "Table 9")."""
    for row in table.rows:
        found = [m for m in by_row.get(row.id, []) if "plg/val/accuracy" in m]
        if found:
            return [LabelLine("PLG", "audio-visual", {k: _cell(m[f"plg/val/{k}"] for m in found)
                                                      for k in AVE_QUALITY_KEYS})]
    return []


def format_markdown(table: AblationTable, notes: Iterable[str] = ()) -> str:
    """Markdown: ten test numbers per row (mean ± std over seeds, n), the paper's numbers
    where the table has them (Table 8), then val label quality, then `notes` (one line each,
    e.g. where row 5's stage-one model came from)."""
    spread = " (mean ± std over seeds)" if table.multi_seed else ""
    paper = table.paper_keys
    header = (["row", "method", "n"] + [k.replace("_", " ") for k in table.table.scores]
              + [f"paper {k.replace('_', ' ')}" for k in paper])
    lines = [f"{table.table.title}, test split, percent{spread}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if paper:
        lines[1:1] = ["", f"paper: the paper's number for the row ({table.table.source}); "
                          "the other columns are this run's."]
    for row, cells in table.rows:
        n = min(cell.n for cell in cells.values())
        theirs = [f"{dict(row.paper)[k]:.1f}" if k in dict(row.paper) else "–" for k in paper]
        lines.append("| " + " | ".join([row.id, row.name, str(n)]
                                        + [cells[k].text(1) for k in table.table.scores] + theirs)
                     + " |")
    if table.labels:  # QUALITY_KEYS (Table 9: AVE_QUALITY_KEYS), the same for every line
        keys = list(table.labels[0].cells)
        lines += ["", "| labels (val) | modality | n | "
                  + " | ".join(QUALITY_NAMES[k] for k in keys) + " |",
                  "|---|---|---|" + "---|" * len(keys)]
        for line in table.labels:
            n = min(cell.n for cell in line.cells.values())
            lines.append(f"| {line.label} | {line.modality} | {n} | "
                         + " | ".join(line.cells[k].text(2) for k in keys) + " |")
    notes = list(notes)
    return "\n".join(lines + ([""] + notes if notes else []))


def format_csv(table: AblationTable) -> str:
    """Long-format CSV: section,row,method,modality,metric,mean,std,n (one line per cell;
    section `paper`: the paper's number, std and n empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "row", "method", "modality", "metric", "mean", "std", "n"])
    for row, cells in table.rows:
        for key in table.table.scores:
            cell = cells[key]
            writer.writerow(["test", row.id, row.name, "", key, f"{cell.mean:.4f}",
                             f"{cell.std:.4f}", cell.n])
        for key, value in row.paper:
            writer.writerow(["paper", row.id, row.name, "", key, f"{value:.4f}", "", ""])
    for line in table.labels:
        for key, cell in line.cells.items():
            writer.writerow([f"labels/{line.stage}", line.row, "", line.modality, key,
                             f"{cell.mean:.4f}", f"{cell.std:.4f}", cell.n])
    return out.getvalue()
