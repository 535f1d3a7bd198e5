"""Tables 5 and 6 as tracked, resumable runs: a real SQLite MLflow store in tmp_path,
sim-tiny data.

Bad input first (table, rows, seeds, output, Ray resources, export), then the tables as data
(Table 5's unit keys unchanged, Table 6's rows, the Ray waves) and the table maths, then the
runner: `--rows 1,2` through the CLI; a crash injected into the first row-2 training leaves row
1's runs FINISHED and the partial table written, and the rerun trains only what is missing
(mean ± std over seeds); row 5 alone trains its stage-one model, and a later row 5 reuses that
checkpoint; Table 6's CR/SR rows and the CSV export of the unit runs; `--ray` (rows 1,2 × 2
seeds as Tune trials in a private local Ray, runs written by the driver) gives the same table
and resumes across runners. Table 8 (issue 12, at the end): label kinds, backbone recipes, MA
rows tracked and as a Ray trial, the paper's column.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import vaplan.ablation as table5
from vaplan import ablation_keys
from pipelines import ablation as runner
from pipelines import tracking
from vaplan.data.dataset import load_dataset
from vaplan.cli import app, run_app
from vaplan.config import ExperimentConfig, apply_overrides, flatten, get_preset
from vaplan.errors import ConfigError
from vaplan.metrics import SCORE_KEYS

THREADS = ["train.num_threads=1"]  # 2 OpenMP threads on 2 shared cores mostly spin


class SimulatedCrash(RuntimeError):
    pass


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A fresh SQLite store; the process's tracking URI is restored afterwards."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def cfg():
    return apply_overrides(get_preset("sim-tiny"), THREADS)


@pytest.fixture(scope="module")
def dataset(cfg):
    return load_dataset(cfg.data)


@pytest.fixture()
def fits(monkeypatch):
    """Counts trainings (vaplan.ablation.fit); `crash_at` makes that call raise."""
    calls, real = {"n": 0, "crash_at": None}, table5.fit

    def counting_fit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise SimulatedCrash(f"injected crash in training call {calls['n']}")
        return real(*args, **kwargs)

    monkeypatch.setattr(table5, "fit", counting_fit)
    return calls


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("text, needle", [("1,7", "unknown row '7'"), ("", "expected"),
                                          ("1,,2", "expected"), ("one", "unknown row")])
def test_parse_rows_refuses_bad_rows(text, needle):
    with pytest.raises(ConfigError, match="--rows") as err:
        table5.parse_rows(text)
    assert needle in str(err.value)


def test_parse_rows_and_seeds():
    assert table5.parse_rows(" 5, 2,1,2") == ("1", "2", "5")
    assert table5.parse_rows("sr, 4,cr", table5.get_table("6")) == ("CR", "SR", "4")
    with pytest.raises(ConfigError, match="unknown row '5' in table 6"):
        table5.parse_rows("4,5", table5.get_table(6))
    with pytest.raises(ConfigError, match="--table '7': unknown table; expected one of 5, 6, 8, 9"):
        table5.get_table("7")
    assert table5.parse_seeds("2, 0,1") == (0, 1, 2)
    for bad in ("0,x", "0,0", "-1", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            table5.parse_seeds(bad)


def test_cli_refuses_bad_rows_seeds_and_output(store, tmp_path, capsys):
    for args, needle in ((["--rows", "1,6"], "--rows '1,6': unknown row '6'"),
                         (["--seeds", "0,a"], "--seeds '0,a': expected comma-separated"),
                         (["--seeds", "0", "--set", "train.seed=3"], "--set train.seed"),
                         (["--output", str(tmp_path / "t.csv")], "--output"),
                         (["--table", "7"], "--table '7': unknown table"),
                         (["--table", "6", "--rows", "1"], "unknown row '1' in table 6"),
                         (["--no-train"], "--no-train does nothing without --export"),
                         (["--no-train", "--export", str(tmp_path / "r.csv"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db"],
                          "no MLflow store at"),
                         (["--ray", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0")):
        assert run_app(["ablation", "--preset", "sim-tiny", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "none").exists() and not (tmp_path / "r.csv").exists()


def test_row_five_without_stage_one_is_refused(cfg, dataset):
    labels = table5.make_labels(cfg, dataset)
    with pytest.raises(ValueError, match="row 5 .* stage-one model"):
        table5.train_row(cfg, dataset, labels, "5", 0)


# ---------------------------------------------------------------- tables as data

def test_unit_keys_hold_only_what_makes_a_unit(cfg):
    """Keys hash the options that differ from the defaults: a new option added at its default
    (or a changed seed-independent speed setting) finds the finished runs again."""
    key = runner.unit_key(cfg, "2", 3, "d")
    identity = ablation_keys.identity(table5.row_config(cfg, "2", 3))
    defaults = flatten(ExperimentConfig())
    assert identity and all(defaults.get(k) != v for k, v in identity.items())
    assert "train.seed" not in identity and "train.loss.variant" in identity  # row 2: "video"
    faster = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_threads=1,
                                                                device="cuda"))
    assert runner.unit_key(faster, "2", 3, "d") == key
    other_lr = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e-4))
    assert runner.unit_key(other_lr, "2", 3, "d") != key
    assert runner.unit_key(cfg, "2", 4, "d") != key != runner.unit_key(cfg, "2", 3, "e")
    assert runner.ablation_key(cfg, ("1",), (0,), "d") == runner.ablation_key(
        cfg, ("1",), (0,), "d", "5") != runner.ablation_key(cfg, ("1",), (0,), "d", "6")


def test_unit_and_ablation_keys_are_pinned(cfg):
    """The exact strings finished runs are found by (a full-scale ablation resumes by them):
    moving or refactoring the key code must not change them (vaplan 0.1.0, sim-tiny)."""
    digest = "d" * 64
    assert runner.unit_key(cfg, "4", 0, digest) == \
        "9abbd0c030e2c64d0398f8e182a1f994f1817d5e1671096a7bedab6306ab5bf5"
    assert runner.ablation_key(cfg, ("1", "4"), (0, 1), digest) == \
        "84267a9d4e9a2d423111fcb78d3445afac515076a4008c188579df8a17b7dd8b"
    assert runner.ablation_key(cfg, ("2", "4"), (0,), digest, table="6") == \
        "930b956986f5cd0771f156693ab5af708bc49882892317a6c86ecaf9ac550c58"


def test_table_six_rows_switch_one_richness_term_off(cfg):
    six = table5.get_table("6")
    assert six.row_ids == ("2", "CR", "SR", "4")
    loss = {row: table5.row_config(cfg, row, 0).train.loss for row in six.row_ids}
    assert (loss["CR"].variant, loss["CR"].use_category_richness,
            loss["CR"].use_segment_richness) == ("richness", True, False)
    assert (loss["SR"].variant, loss["SR"].use_category_richness,
            loss["SR"].use_segment_richness) == ("richness", False, True)
    assert loss["4"].use_category_richness and loss["4"].use_segment_richness
    # row 4 is one training in both tables; CR and SR are trainings of their own
    assert six.rows[-1] is table5.get_table("5").rows[3]
    keys = {row: runner.unit_key(cfg, row, 0, "d") for row in ("2", "CR", "SR", "4")}
    assert len(set(keys.values())) == 4


def test_waves_put_row_five_after_its_stage_one():
    first, second = table5.waves([("1", 0), ("4", 0), ("5", 0), ("5", 1), ("5", 2)],
                                 ready={("4", 2)})
    assert first == [("1", 0), ("4", 0), ("4", 1)]  # row 4 seed 1: trained for row 5 seed 1
    assert second == [("5", 0), ("5", 1), ("5", 2)]
    assert table5.waves([("2", 0), ("SR", 1)]) == ([("2", 0), ("SR", 1)], [])


# ---------------------------------------------------------------- the table

def _metrics(base: float, plg: bool = True) -> dict[str, float]:
    flat = {f"test/{key}": base for key in SCORE_KEYS}
    if plg:
        flat.update({f"plg/val/{m}/{k}": 50.0 for m in table5.MODALITIES
                     for k in table5.QUALITY_KEYS})
    return flat


def test_summary_mean_std_and_n():
    units = [("2", 0, _metrics(10.0)), ("2", 1, _metrics(14.0)), ("1", 0, _metrics(5.0, plg=False))]
    table = table5.summarize(units, seeds=(0, 1))
    assert [row.id for row, _ in table.rows] == ["1", "2"]
    cell = table.rows[1][1]["seg_type"]
    assert (cell.mean, cell.n) == (12.0, 2) and cell.std == pytest.approx(2.8284, abs=1e-4)
    text = table5.format_markdown(table, ["a note"])
    assert "| 2 | PLG video-level (L_V) | 2 | 12.0 ± 2.8 |" in text
    assert "| 1 | baseline (HAN, Eq. 2) | 1 | 5.0 |" in text
    assert "| PLG | audio | 2 | 50.00 ± 0.00 |" in text and text.endswith("a note")
    lines = table5.format_csv(table).splitlines()
    assert lines[0] == "section,row,method,modality,metric,mean,std,n"
    assert "test,2,PLG video-level (L_V),,seg_type,12.0000,2.8284,2" in lines
    assert len(lines) == 1 + 2 * len(SCORE_KEYS) + 2 * len(table5.QUALITY_KEYS)


# ---------------------------------------------------------------- tracked runs

@pytest.mark.slow
def test_cli_rows_1_2_prints_a_two_row_table(store, tmp_path, fits):
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["ablation", "--preset", "sim-tiny", "--rows", "1,2",
                                      "--no-progress", "--output", str(out), *sum(
                                          (["--set", item] for item in THREADS), [])])
    assert result.exit_code == 0, result.output
    assert fits["n"] == 2
    table = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:3]] == ["| 1", "| 2"]
    assert not any(line.startswith(("| 3", "| 4", "| 5")) for line in table)
    assert "| 1 | baseline (HAN, Eq. 2) | 1 |" in out.read_text()
    assert out.with_suffix(".csv").read_text().count("\ntest,") == 2 * len(SCORE_KEYS)
    experiment = MlflowClient().get_experiment_by_name("vaplan-ablations")
    assert experiment is not None


@pytest.mark.slow
def test_crash_keeps_finished_rows_and_rerun_trains_only_the_rest(store, tmp_path, cfg,
                                                                  dataset, fits):
    out = tmp_path / "table.md"
    kwargs = dict(preset="sim-tiny", dataset=dataset, output=out, progress=False,
                  log=lambda line: None)
    fits["crash_at"] = 3  # units: (1,0) (1,1) (2,0) (2,1): the first row-2 training
    with pytest.raises(SimulatedCrash):
        runner.run_ablation(cfg, ("1", "2"), (0, 1), **kwargs)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("vaplan-ablations").experiment_id
    parent = client.search_runs([experiment_id], "tags.`vaplan.ablation` = 'parent'")[0]
    assert parent.info.status == "FAILED"
    children = tracking.child_runs(parent.info.run_id, experiment_id)
    status = {(c.data.tags[runner.ROW_TAG], c.data.tags[runner.SEED_TAG]): c.info.status
              for c in children}
    assert status == {("1", "0"): "FINISHED", ("1", "1"): "FINISHED", ("2", "0"): "FAILED"}
    partial = out.read_text()
    assert "| 1 | baseline (HAN, Eq. 2) | 2 |" in partial and "\n| 2 | " not in partial
    assert "±" in partial
    artifact = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/ablation/table.md")
    assert artifact == partial

    fits["n"], fits["crash_at"] = 0, None
    result = runner.run_ablation(cfg, ("1", "2"), (0, 1), **kwargs)
    assert fits["n"] == 2  # only row 2's two seeds
    assert result.parent_run_id == parent.info.run_id
    assert result.skipped == [("1", 0), ("1", 1)] and result.trained == [("2", 0), ("2", 1)]
    final = out.read_text()
    assert "| 1 | baseline (HAN, Eq. 2) | 2 |" in final
    assert "| 2 | PLG video-level (L_V) | 2 |" in final
    assert final.count("±") >= 2 * len(SCORE_KEYS)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    unit = next(c for c in tracking.child_runs(result.parent_run_id, experiment_id)
                if c.info.status == "FINISHED" and c.data.tags[runner.ROW_TAG] == "2")
    assert unit.data.params["train.loss.variant"] == "video"
    assert {f"test/{k}" for k in SCORE_KEYS} | {"val/seg_type", "best_epoch"} \
        <= set(unit.data.metrics)
    assert "plg/val/visual/seg" in unit.data.metrics
    curve = client.get_metric_history(unit.info.run_id, "epoch/val/seg_type")
    assert sorted(m.step for m in curve) == list(range(1, cfg.train.epochs + 1))
    runs_table = mlflow.artifacts.load_dict(f"runs:/{result.parent_run_id}/ablation/runs.json")
    assert len(runs_table["data"]) == 4

    fits["n"] = 0  # a third run: nothing left to train
    again = runner.run_ablation(cfg, ("1", "2"), (0, 1), **kwargs)
    assert fits["n"] == 0 and len(again.skipped) == 4 and again.markdown == result.markdown


@pytest.mark.slow
def test_row_five_alone_trains_then_reuses_its_stage_one(store, cfg, dataset, fits):
    lines: list[str] = []
    kwargs = dict(preset="sim-tiny", dataset=dataset, progress=False, log=lines.append)
    first = runner.run_ablation(cfg, ("5",), (0,), **kwargs)
    assert fits["n"] == 2  # row 4's stage one, then row 5
    assert any("stage one: no finished row 4 run" in line for line in lines)
    child = tracking.child_runs(first.parent_run_id, first.experiment_id)[0]
    assert child.data.tags[runner.STAGE_ONE_TAG] == f"trained in run {child.info.run_id}"
    assert f"stage one trained in run {child.info.run_id}" in first.markdown
    assert "stage_one/epoch/train_loss" in child.data.metrics
    assert {"pld/val/visual/seg", "plg/val/visual/seg"} <= set(child.data.metrics)
    assert [row.id for row, _ in first.table.rows] == ["5"]
    assert [line.stage for line in first.table.labels] == ["PLG", "PLG", "PLD", "PLD"]

    fits["n"] = 0
    second = runner.run_ablation(cfg, ("5",), (0,), resume=False, **kwargs)
    assert fits["n"] == 1 and second.parent_run_id != first.parent_run_id
    reused = tracking.child_runs(second.parent_run_id, second.experiment_id)[0]
    assert reused.data.tags[runner.STAGE_ONE_TAG] == \
        f"reused from finished run {child.info.run_id}"

    fits["n"] = 0  # the stage-one checkpoint is gone: row 5 says so and trains it again
    artifact_dir = MlflowClient().get_run(child.info.run_id).info.artifact_uri
    (Path(artifact_dir.removeprefix("file://")) / runner.STAGE_ONE_CHECKPOINT).unlink()
    third = runner.run_ablation(cfg, ("5",), (0,), resume=False, **kwargs)
    assert fits["n"] == 2
    assert any(f"cannot use {runner.STAGE_ONE_CHECKPOINT} of run {child.info.run_id}" in line
               for line in lines)
    retrained = tracking.child_runs(third.parent_run_id, third.experiment_id)[0]
    assert retrained.data.tags[runner.STAGE_ONE_TAG].startswith("trained in run")


@pytest.mark.slow
def test_table_six_rows_and_the_csv_export_of_the_runs(store, tmp_path, cfg, dataset, fits):
    one_epoch = apply_overrides(cfg, ["train.epochs=1"])
    result = runner.run_ablation(one_epoch, ("CR", "SR"), (0,), table="6", preset="sim-tiny",
                                 dataset=dataset, progress=False, log=lambda line: None)
    assert fits["n"] == 2
    assert result.markdown.startswith("Table 6 (richness-aware loss), test split")
    assert "| CR | PLG + L_V + CR only (Eq. 6) | 1 |" in result.markdown
    assert [row.id for row, _ in result.table.rows] == ["CR", "SR"]
    out = tmp_path / "runs.csv"
    assert run_app(["ablation", "--no-train", "--export", str(out)]) == 0
    import pandas as pd

    runs = pd.read_csv(out)
    assert list(runs["row"]) == ["CR", "SR"] and set(runs["status"]) == {"FINISHED"}
    assert list(runs["train.loss.use_category_richness"]) == [True, False]
    assert list(runs["train.loss.use_segment_richness"]) == [False, True]
    assert {"run_id", "parent_run_id", "table", "seed", "test/seg_type", "best_epoch",
            "plg/val/visual/seg", "data.digest"} <= set(runs.columns)
    assert "ablation.rows" not in runs.columns  # the parent's own params stay out
    assert set(runs["parent_run_id"]) == {result.parent_run_id}

    fits["n"] = 0  # other arguments, another parent: it adopts the finished CR unit
    again = runner.run_ablation(one_epoch, ("CR",), (0,), table="6", preset="sim-tiny",
                                dataset=dataset, progress=False, log=lambda line: None)
    assert fits["n"] == 0 and again.parent_run_id != result.parent_run_id
    assert again.skipped == [("CR", 0)]
    assert f"(another ablation's run, parent {result.parent_run_id})" in again.markdown


# ---------------------------------------------------------------- --ray

from test_ray_sweeps import local_ray, ray_env  # noqa: E402,F401  (one private Ray, 2 CPUs)

TINY = ["train.model.hidden_dim=32", "train.model.ffn_dim=32", "train.epochs=1"]


@pytest.mark.slow
@pytest.mark.integration
def test_ray_rows_1_2_two_seeds_same_table_and_resume(local_ray, store, tmp_path, capsys,
                                                      fits):
    out = tmp_path / "table.md"
    args = ["ablation", "--preset", "sim-tiny", "--rows", "1,2", "--seeds", "0,1",
            "--no-progress", "--output", str(out),
            *sum((["--set", item] for item in THREADS + TINY), [])]
    assert run_app([*args, "--ray"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[ablation] row ") == 4 and "Ray Tune: 4 trial(s)" in printed
    table = out.read_text()
    assert table.startswith("Table 5, test split, percent (mean ± std over seeds)")
    assert "| 1 | baseline (HAN, Eq. 2) | 2 |" in table
    assert "| 2 | PLG video-level (L_V) | 2 |" in table and "| PLG | visual | 2 |" in table
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("vaplan-ablations").experiment_id
    parent = client.search_runs([experiment_id], "tags.`vaplan.ablation` = 'parent'")[0]
    assert parent.info.status == "FINISHED"
    children = tracking.child_runs(parent.info.run_id, experiment_id)
    assert sorted((c.data.tags[runner.ROW_TAG], c.data.tags[runner.SEED_TAG], c.info.status)
                  for c in children) == [("1", "0", "FINISHED"), ("1", "1", "FINISHED"),
                                         ("2", "0", "FINISHED"), ("2", "1", "FINISHED")]
    unit = children[0]
    assert {f"test/{k}" for k in SCORE_KEYS} | {"best_epoch", "epoch/val/seg_type"} \
        <= set(unit.data.metrics)
    assert unit.data.params["train.model.hidden_dim"] == "32"
    assert [a.path for a in client.list_artifacts(unit.info.run_id, "checkpoint")] == \
        ["checkpoint/han.pt"]
    assert mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/ablation/runs.json")

    # the one-after-the-other runner resumes the Ray runs: nothing to train, the same table
    assert run_app(args) == 0
    assert fits["n"] == 0 and out.read_text() == table
    # a unit whose run did not finish is the only one --ray trains again
    client.set_terminated(unit.info.run_id, "FAILED")
    capsys.readouterr()
    assert run_app([*args, "--ray"]) == 0
    printed = capsys.readouterr().out
    row, seed = unit.data.tags[runner.ROW_TAG], unit.data.tags[runner.SEED_TAG]
    assert "Ray Tune: 1 trial(s)" in printed and printed.count("finished earlier") == 3
    assert f"[ablation] row {row} seed {seed}: finished" in printed


# ---------------------------------------------------------------- Table 8 (issue 12)

def test_table_five_keys_are_pinned(cfg):
    """Full-scale Table 5 runs resume by these keys: generalising rows (label kinds, Table 8)
    must not change them (values computed before that change)."""
    defaults = ExperimentConfig()
    assert runner.unit_key(defaults, "4", 1, "d") == \
        "0ba5a38b6389eb81a4f52b57bf5d72109e84d19de48a98d17b5bf76ffa290fa1"
    assert runner.unit_key(defaults, "5", 1, "d") == \
        "5a842e888f7938cf30ab369413738b01b87500d59c4b19b5f0aaf75d11fb8e3f"
    assert runner.unit_key(defaults, "1", 1, "d") == \
        "078c87bd08146b32eab3124e46eb685a02540ebdf68e8882a2b1c616875249e0"
    assert runner.unit_key(cfg, "2", 0, "d") == \
        "7308e999ec9fa4edc5a927fc6517f13e2095b189f13c7b32a4a97b381c032ee3"
    assert runner.ablation_key(cfg, ("1", "2", "3", "4", "5"), (0, 1), "d") == \
        "ad0f9829d5c96bc27ad5faf31e07dea4834072e83b3e6819404c0f8221e31e02"


def test_rows_say_which_labels_they_train_on():
    with pytest.raises(ValueError, match="labels must be one of"):
        table5.Row("x", "x", (), "teacher")
    with pytest.raises(ValueError, match="`needs` names the model"):
        table5.Row("x", "x", (), "ma")  # MA labels come from a model
    with pytest.raises(ValueError, match="`needs` names the model"):
        table5.Row("x", "x", (), "plg", needs="4")
    five = {row.id: row for row in table5.get_table("5").rows}
    assert [five[r].labels for r in "12345"] == ["video", "plg", "plg", "plg", "pld"]
    assert (five["5"].plg, five["5"].pld, five["4"].pld, five["1"].plg) == (True, True, False,
                                                                          False)


def test_table_eight_rows_backbone_recipes_and_labels(cfg):
    eight = table5.get_table("8")
    assert eight.row_ids == ("mgn", "mgn+ma", "mgn+plg", "mgn+pld", "mm_pyramid",
                             "mm_pyramid+ma", "mm_pyramid+plg", "mm_pyramid+pld")
    rows = {row.id: row for row in eight.rows}
    assert [(rows[r].labels, rows[r].needs) for r in ("mgn", "mgn+ma", "mgn+plg", "mgn+pld")] \
        == [("video", None), ("ma", "mgn"), ("plg", None), ("pld", "mgn+plg")]
    assert dict(rows["mm_pyramid+pld"].paper) == {"seg_type": 62.0}
    full = get_preset("sim-full")  # train.epochs at its default: the recipe's 40 epochs
    mgn = table5.row_config(full, "mgn+ma", 0).train
    assert (mgn.model.name, mgn.model.hidden_dim, mgn.model.num_heads, mgn.batch_size,
            mgn.epochs, mgn.loss.variant) == ("mgn", 128, 8, 16, 40, "video")
    pyramid = table5.row_config(full, "mm_pyramid", 1)
    assert (pyramid.train.lr, pyramid.train.model.dropout, pyramid.train.loss.variant,
            pyramid.train.seed) == (1e-4, 0.2, "baseline", 1)
    # a value the preset or --set chose stays: sim-tiny's epochs, a --set width
    small = table5.row_config(apply_overrides(cfg, ["train.model.hidden_dim=32"]), "mgn", 0)
    assert (small.train.epochs, small.train.model.hidden_dim) == (cfg.train.epochs, 32)
    assert table5.parse_rows("MGN*", eight) == ("mgn", "mgn+ma", "mgn+plg", "mgn+pld")
    assert table5.parse_rows("mm_pyramid+pld, mgn", eight) == ("mgn", "mm_pyramid+pld")
    with pytest.raises(ConfigError, match="unknown row 'han\\*' in table 8"):
        table5.parse_rows("han*", eight)
    assert table5.waves([("mgn+ma", 0), ("mgn+pld", 0), ("mgn", 0)]) == (
        [("mgn", 0), ("mgn+plg", 0)], [("mgn+ma", 0), ("mgn+pld", 0)])
    keys = {runner.unit_key(cfg, row, 0, "d") for row in eight.row_ids}
    assert len(keys) == 8


def test_ma_row_without_its_model_is_refused(cfg, dataset):
    labels = table5.make_labels(cfg, dataset)
    with pytest.raises(ValueError, match="row mgn\\+ma \\(MA\\) needs .* row mgn's model"):
        table5.train_row(cfg, dataset, labels, "mgn+ma", 0)


def test_table_eight_summary_shows_the_paper_and_label_quality_per_row():
    ma = {f"ma/val/{m}/{k}": 40.0 for m in table5.MODALITIES for k in table5.QUALITY_KEYS}
    units = [("mgn", 0, _metrics(10.0, plg=False)), ("mgn+ma", 0, {**_metrics(12.0, False), **ma}),
             ("mm_pyramid+ma", 0, {**_metrics(11.0, False), **ma}),
             ("mgn+plg", 0, _metrics(13.0))]
    table = table5.summarize(units, (0,), table5.get_table("8"))
    text = table5.format_markdown(table)
    assert text.startswith("Table 8 (backbones: base, + MA, + PLG, + PLD), test split")
    assert "| row | method | n | seg a |" in text and text.count("| paper seg type |") == 1
    assert "| mgn+ma | MGN + MA labels (L_V) | 1 | 12.0 |" in text
    assert text.split("| mgn+ma |")[1].splitlines()[0].endswith("| 59.2 |")
    assert [line.label for line in table.labels] == ["PLG", "PLG", "MA (mgn+ma)", "MA (mgn+ma)",
                                                     "MA (mm_pyramid+ma)", "MA (mm_pyramid+ma)"]
    assert "| MA (mgn+ma) | visual | 1 | 40.00 |" in text
    lines = table5.format_csv(table).splitlines()
    assert "paper,mgn+ma,MGN + MA labels (L_V),,seg_type,59.2000,," in lines
    assert "labels/MA,mm_pyramid+ma,,audio,seg,40.0000,0.0000,1" in lines
    # Table 5 keeps its layout: no paper column, one PLD line without a row
    five = table5.format_markdown(table5.summarize([("1", 0, _metrics(5.0, False))]))
    assert "paper" not in five


@pytest.mark.slow
def test_table_eight_mgn_base_ma_pld_tracked(store, cfg, dataset, fits):
    """MGN rows at tiny widths, 1 epoch: +MA reuses the base row's model (its MA labels'
    quality logged as ma/val/...), +PLD trains its +PLG stage one; the table has the paper's
    column and each row's MA labels."""
    tiny = apply_overrides(cfg, TINY + TINY_BACKBONES)
    lines: list[str] = []
    result = runner.run_ablation(tiny, ("mgn", "mgn+ma", "mgn+pld"), (0,), table="8",
                                 preset="sim-tiny", dataset=dataset, progress=False,
                                 log=lines.append)
    assert fits["n"] == 4  # mgn, mgn+ma, and mgn+pld's stage one (mgn+plg) before it
    children = {c.data.tags[runner.ROW_TAG]: c
                for c in tracking.child_runs(result.parent_run_id, result.experiment_id)}
    assert set(children) == {"mgn", "mgn+ma", "mgn+pld"}
    ma = children["mgn+ma"]
    assert ma.data.tags[runner.STAGE_ONE_TAG] == \
        f"reused from finished run {children['mgn'].info.run_id}"
    assert (ma.data.params["train.model.name"], ma.data.params["train.loss.variant"],
            ma.data.params["train.model.hidden_dim"]) == ("mgn", "video", "32")
    assert {"ma/val/audio/seg", "ma/val/visual/video_precision"} <= set(ma.data.metrics)
    assert not any(k.startswith("plg/") for k in ma.data.metrics)
    pld = children["mgn+pld"]
    assert pld.data.tags[runner.STAGE_ONE_TAG] == f"trained in run {pld.info.run_id}"
    assert {"pld/val/visual/seg", "stage_one/test/seg_type"} <= set(pld.data.metrics)
    assert "| paper seg type |" in result.markdown and "| mgn+pld | MGN + PLG + PLD | 1 |" \
        in result.markdown
    assert "| MA (mgn+ma) | audio | 1 |" in result.markdown
    assert "| PLD (mgn+pld) | visual | 1 |" in result.markdown
    _, _, extra = load_checkpoint_of(ma)
    assert extra["row"] == "mgn+ma"


def load_checkpoint_of(run):
    """The unit's checkpoint (its backbone from the stored config)."""
    from vaplan.train import load_checkpoint

    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="checkpoint/han.pt")
    model, train_cfg, extra = load_checkpoint(local, device="cpu")
    assert type(model).__name__ == "MGN" and train_cfg.model.name == "mgn"
    return model, train_cfg, extra


TINY_BACKBONES = ["train.model.hidden_dim=32", "train.model.ffn_dim=32",
                  "train.model.audio_depth=1", "train.model.visual_depth=1",
                  "train.model.av_depth=1", "train.model.levels=2"]


@pytest.mark.slow
@pytest.mark.integration
def test_ray_table_eight_ma_row_gets_its_base_model_from_the_driver(local_ray, store, tmp_path,
                                                                    capsys, fits):
    """`--table 8 --ray`: the MM-Pyramid base row finished earlier (the sequential runner);
    the +MA trial gets that run's model from the driver (the second wave) and the table shows
    the paper's column and the MA labels' quality."""
    out = tmp_path / "table8.md"
    args = ["ablation", "--preset", "sim-tiny", "--table", "8", "--no-progress",
            "--output", str(out),
            *sum((["--set", item] for item in THREADS + TINY + TINY_BACKBONES), [])]
    assert run_app([*args, "--rows", "mm_pyramid"]) == 0 and fits["n"] == 1
    capsys.readouterr()
    assert run_app([*args, "--rows", "mm_pyramid*ma,mm_pyramid", "--ray"]) == 0
    printed = capsys.readouterr().out
    assert "row mm_pyramid seed 0: finished earlier" in printed
    assert "row mm_pyramid+ma seed 0: stage one from finished run" in printed
    assert printed.count("Ray Tune: 1 trial(s)") == 1
    table = out.read_text()
    assert "| mm_pyramid+ma | MM-Pyramid + MA labels (L_V) | 1 |" in table
    assert "| MA (mm_pyramid+ma) | visual | 1 |" in table and "| paper seg type |" in table
    assert "paper,mm_pyramid+ma,MM-Pyramid + MA labels (L_V),,seg_type,59.7000,," in \
        out.with_suffix(".csv").read_text()


def test_ray_gpus_per_trial_defaults_to_auto_and_refuses_bad_values(store, capsys):
    from ray_jobs.ablation import RayOptions, trial_config

    assert RayOptions().gpus_per_trial == "auto"
    assert trial_config(get_preset("sim-tiny"), RayOptions(cpus_per_trial=2)).train.device == \
        "cpu"  # auto: resolved per wave once Ray is up (common.trial_resources)
    assert run_app(["ablation", "--preset", "sim-tiny", "--ray", "--gpus-per-trial", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --gpus-per-trial must be 'auto' or a number") and "\n" not in err
