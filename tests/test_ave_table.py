"""Table 9 as one command (`vaplan ablation --table 9 --preset ave-sim`, docs/ave.md "Table 9"):
the rows as data, a table/preset mismatch refused in one line, tracked resumable units through
the ablation runner (pipelines/ablation.py), mean ± std next to the paper's numbers."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipelines import tracking
from vaplan import ablation as tables
from vaplan.ablation_keys import unit_key
from vaplan.cli import run_app

from test_ave_pipeline import cfg, data  # noqa: F401,F811  (the tiny AVE config and data)


def test_rows_are_the_papers(cfg):
    table = tables.get_table("9")
    assert table.row_ids == ("avel", "avel+plg", "psp", "psp+plg", "cmbs", "cmbs+plg")
    assert [dict(row.paper)["accuracy"] for row in table.rows] == [67.1, 69.2, 72.1, 74.3,
                                                                   72.2, 74.4]
    psp = tables.row_config(cfg, "psp", 3)  # PSP's recipe, the --set epochs, no PLG
    assert (psp.model.name, psp.train.batch_size, psp.train.video_loss) == ("psp", 128, "bce")
    assert (psp.train.epochs, psp.train.seed, psp.plg.use) == (1, 3, False)
    plg = tables.row_config(cfg, "cmbs+plg", 0)
    assert plg.plg.use and plg.effective_train().plg_weight == 1.0
    assert plg.train.clip_grad_norm == 0.5
    assert tables.parse_rows("*+plg", table) == ("avel+plg", "psp+plg", "cmbs+plg")
    keys = {unit_key(cfg, row, seed, "digest") for row in table.row_ids for seed in (0, 1)}
    assert len(keys) == 12  # every row x seed its own unit


@pytest.mark.parametrize("argv, message", [
    (["--table", "9", "--preset", "sim-tiny"], "--table 9 (Table 9 (AVE segment accuracy"),
    (["--table", "5", "--preset", "ave-sim"], "needs an LLP preset"),
    (["--table", "9", "--preset", "ave-sim", "--ray"], "--ray: Table 9's AVE units"),
    (["--table", "9", "--preset", "ave-sim", "--rows", "han"], "unknown row 'han' in table 9"),
    (["--table", "9", "--preset", "ave-sim", "--set", "model.name=x"], "model.name must be"),
])
def test_bad_arguments_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_app(["ablation", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlruns").exists()


def test_table_9_tracked_and_resumed(cfg, data, store, tmp_path):
    from pipelines.ablation import run_ablation

    options = dict(table="9", preset="ave-sim", dataset=data, tracking_uri=store,
                   output=tmp_path / "table9.md", progress=False, log=lambda line: None)
    rows = ("avel", "cmbs+plg")
    first = run_ablation(cfg, rows, (0, 1), **options)
    assert sorted(first.trained) == [("avel", 0), ("avel", 1), ("cmbs+plg", 0), ("cmbs+plg", 1)]
    markdown = (tmp_path / "table9.md").read_text()
    assert "| avel | AVEL, weak (video labels) | 2 |" in markdown and "| 67.1 |" in markdown
    assert "| 74.4 |" in markdown and "real AVE test" in markdown and " ± " in markdown
    csv = (tmp_path / "table9.csv").read_text().splitlines()
    assert any(line.startswith("test,cmbs+plg,") and ",accuracy," in line for line in csv)
    assert "paper,cmbs+plg,CMBS + PLG segment labels,,accuracy,74.4000,," in csv
    assert "| labels (val) | modality | n | segment accuracy | seg F | event F |" in markdown
    assert "| PLG | audio-visual | 2 | " in markdown  # from the cmbs+plg units
    units = {run.info.run_name: run.info.run_id
             for run in tracking.child_runs(first.parent_run_id, first.experiment_id)}
    client = MlflowClient()
    for row, model in (("avel", "avel"), ("cmbs+plg", "cmbs")):
        artifacts = [a.path for a in client.list_artifacts(units[f"row{row}-seed0"], "checkpoint")]
        assert artifacts == [f"checkpoint/{model}.pt"]  # named by the model, not HAN's han.pt
    again = run_ablation(cfg, rows, (0, 1), **options)
    assert again.trained == [] and len(again.skipped) == 4
    assert again.parent_run_id == first.parent_run_id
    cells = dict(again.table.rows)[tables.get_row("cmbs+plg")]
    assert cells["accuracy"].n == 2 and 0 <= cells["accuracy"].mean <= 100


def test_table_9_markdown_and_csv_have_the_plg_label_quality():
    """The `+plg` units' val quality of PLG's AV labels, once (it does not depend on the row or
    the seed), as the LLP tables print theirs."""
    plg = {"plg/val/accuracy": 70.0, "plg/val/seg": 60.0, "plg/val/event": 50.0}
    units = [("avel", 0, {"test/accuracy": 60.0}), ("avel+plg", 0, {"test/accuracy": 62.0, **plg}),
             ("avel+plg", 1, {"test/accuracy": 64.0, **plg}),
             ("psp+plg", 0, {"test/accuracy": 66.0, **plg})]
    summary = tables.summarize(units, (0, 1), tables.get_table("9"))
    markdown = tables.format_markdown(summary)
    assert ("| labels (val) | modality | n | segment accuracy | seg F | event F |\n"
            "|---|---|---|---|---|---|\n"
            "| PLG | audio-visual | 2 | 70.00 ± 0.00 | 60.00 ± 0.00 | 50.00 ± 0.00 |") in markdown
    csv = tables.format_csv(summary).splitlines()
    assert "labels/PLG,,,audio-visual,accuracy,70.0000,0.0000,2" in csv
    assert not any("video_precision" in line for line in csv)
    assert "labels (val)" not in tables.format_markdown(
        tables.summarize(units[:1], (0,), tables.get_table("9")))  # no +plg unit: no line
