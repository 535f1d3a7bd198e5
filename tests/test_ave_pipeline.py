"""The tracked AVE pipeline (pipelines/ave.py, docs/ave.md "Tracked pipeline"): bad options as
one line (exit 2) before any store exists; steps as child runs with reuse; a registered
vaplan-<model> version whose pyfunc predicts per-segment classes and reproduces the logged test
accuracy; the one promotion gate on per-video val accuracy; `vaplan run` / `vaplan evaluate`."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipelines import ave as pipeline
from pipelines import tracking
from vaplan.ave import experiment as ave
from vaplan.ave.config import ave_experiment
from vaplan.cli import run_app
from vaplan.data.ave import BACKGROUND
from vaplan.errors import ConfigError

TINY = ["data.sim.num_train=16", "data.sim.num_background=4", "data.sim.max_eval_videos=20",
        "train.epochs=1", "train.num_threads=1"]


@pytest.fixture(scope="module")
def cfg():
    return ave_experiment("ave-sim", TINY)


@pytest.fixture(scope="module")
def data(cfg):
    return ave.load_data(cfg)


@pytest.fixture(scope="module")
def first(cfg, data, store):
    """AVEL + PLG, run twice: the second run reuses every step."""
    options = pipeline.AveRun(cfg, "ave-sim", tuple(TINY), tracking_uri=store, progress=False)
    return pipeline.run(options, data), pipeline.run(options, data)


@pytest.mark.parametrize("overrides, message", [
    (["model.name=han"], "model.name must be one of ['avel', 'psp', 'cmbs'], got 'han'"),
    (["data.sim.num_train=4000"], "data.sim.num_train must be 0 (all 3,339) .. 3339"),
    (["train.plg_weight=0"], "plg.use=true trains with the PLG segment objective"),
    (["plg.audio_threshold=1.5"], "plg.audio_threshold must be a number in (0, 1)"),
    (["train.video_loss=ce"], "train.video_loss must be one of ['soft_margin', 'bce']"),
])
def test_bad_options_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        ave_experiment("ave-sim", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--set", "model.name=han"], "model.name must be one of"),
    (["--promote-metric", "val/seg_type"], "gated on val/accuracy"),
    (["--set", "plg.search=maybe"], "plg.search must be"),
])
def test_cli_refuses_before_creating_a_store(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `python -m pipelines ARGS` is `vaplan run ARGS` (test_cli)
    assert run_app(["run", "--preset", "ave-sim", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("argv", [["run", "--preset", "nosuch"],
                                  ["ablation", "--table", "9", "--preset", "nosuch"]])
def test_unknown_preset_lists_the_presets_of_both_tasks(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_app(argv) == 2
    err = capsys.readouterr().err.strip()
    assert ("unknown preset 'nosuch'; expected one of ['llp', 'sim-full', 'sim-small', "
            "'sim-tiny', 'ave-sim']") in err and len(err.splitlines()) == 1, err


def test_a_preset_of_the_other_task_says_which_it_is():
    from vaplan.config import get_preset

    with pytest.raises(ConfigError, match=r"preset 'sim-tiny' is an LLP preset; this takes an "
                                          r"AVE preset: \['ave-sim'\]"):
        ave_experiment("sim-tiny")
    with pytest.raises(ConfigError, match="preset 'ave-sim' is an AVE preset; this takes an "
                                          "LLP preset: .'llp', 'sim-full'"):
        get_preset("ave-sim")  # e.g. vaplan sweep, vaplan doctor


def test_model_recipe_follows_model_name_unless_set():
    psp = ave_experiment("ave-sim", ["model.name=psp", "train.epochs=2"])
    assert (psp.train.batch_size, psp.train.video_loss, psp.train.epochs) == (128, "bce", 2)
    assert psp.train.plg_weight == 1.0  # the preset's own choice stays
    cmbs = ave_experiment("ave-sim", ["train.batch_size=8", "model.name=cmbs"])
    assert (cmbs.train.batch_size, cmbs.train.clip_grad_norm, cmbs.train.lr) == (8, 0.5, 6e-4)
    base = ave_experiment("ave-sim", ["plg.use=false"])
    assert base.effective_train().plg_weight == 0.0


def test_labels_searched_on_val_only(cfg, data):
    import dataclasses

    labels = ave.make_labels(cfg, data)
    assert labels.searched and labels.train.shape == data.train.annotations.truth.shape
    assert set(labels.quality) == {"accuracy", "seg", "event"}
    event = data.train.annotations.video_label[:, None]
    assert ((labels.train == BACKGROUND) | (labels.train == event)).all()
    # test truth never enters the search: the same thresholds with a scrambled test split
    test = data.test
    blank = dataclasses.replace(test, annotations=dataclasses.replace(
        test.annotations, truth=np.full_like(test.annotations.truth, BACKGROUND)))
    other = ave.make_labels(cfg, dataclasses.replace(data, test=blank))
    assert (other.visual_threshold, other.audio_threshold) == (labels.visual_threshold,
                                                               labels.audio_threshold)
    fixed = ave.make_labels(ave_experiment("ave-sim", [*TINY, "plg.search=false"]), data)
    assert (fixed.visual_threshold, fixed.audio_threshold) == (0.036, 0.0355)
    assert not fixed.searched


def test_steps_child_runs_params_and_reuse(first, cfg):
    result, again = first
    client = MlflowClient()
    children = {r.info.run_name: r for r in tracking.child_runs(result.parent_run_id,
                                                                result.experiment_id)}
    assert set(children) == set(pipeline.STEP_NAMES)
    labels = children["generate_labels"].data
    assert {"plg/val/accuracy", "plg/val/seg", "plg/val/event",
            "plg/visual_threshold"} <= set(labels.metrics)
    assert labels.params["plg.search"] == "True"
    train = children["train"].data
    assert train.params["model.name"] == "avel" and train.params["train.plg_weight"] == "1.0"
    history = client.get_metric_history(children["train"].info.run_id, "epoch/train_loss")
    assert [m.step for m in history] == [1]
    parent = client.get_run(result.parent_run_id).data
    assert parent.params["data.sim.num_train"] == "16" and parent.params["model.name"] == "avel"
    assert {"val/accuracy", "test/accuracy"} <= set(parent.metrics)
    assert again.steps and all(step.reused for step in again.steps.values())
    assert again.registration["version"] == result.registration["version"]


def test_registered_model_reproduces_logged_accuracy(first, data, store, tmp_path):
    from pipelines.commands import pull

    result, _ = first
    record = result.registration
    assert record["model_name"] == "vaplan-avel" and record["decision"]["promoted"]
    version = MlflowClient().get_model_version("vaplan-avel", record["version"])
    assert version.tags["vaplan.backbone"] == "avel" and "vaplan.sha256.checkpoint" in version.tags
    uri = f"models:/vaplan-avel/{record['version']}"
    assert pipeline.is_ave_model(uri, store)
    again = pipeline.evaluate_registered(uri, "test", store, data=data)
    assert again["accuracy"] == pytest.approx(record["scores"]["test"]["accuracy"], abs=1e-9)
    # `vaplan pull` gives the checkpoint, which carries its config
    folder = pull("vaplan-avel", str(tmp_path / "pulled"), version=record["version"],
                  tracking_uri=store)
    net, saved, extra = ave.load_checkpoint(folder / "checkpoint.pt")
    assert saved.model.name == "avel" and saved.data.sim.num_train == 16
    assert extra["epochs_completed"] == 1


def test_pulled_folder_names_its_files_by_content(first, cfg, data, store, tmp_path):
    """`vaplan pull` of an AVE model: labels.parquet is Parquet (PLG's AV segment classes of
    train and val, as the train step read them); config.json reads back as the AVE config."""
    import pyarrow.parquet as pq

    from pipelines.commands import pull, read_pulled_config
    from vaplan.ave.config import AveExperimentConfig

    result, _ = first
    folder = pull("vaplan-avel", str(tmp_path / "pulled"), version=result.registration["version"],
                  tracking_uri=store)
    assert {p.name for p in folder.iterdir()} == {"checkpoint.pt", "labels.parquet",
                                                  "config.json", "version.json"}
    table = pq.read_table(folder / "labels.parquet")
    assert table.column_names == ["split", "index", "video_id", "segment", "event", "event_name"]
    assert table.num_rows == 10 * (len(data.train) + len(data.val))
    made = ave.make_labels(cfg, data)
    for split in ("train", "val"):
        annotations = getattr(data, split).annotations
        assert (ave.read_labels(folder / "labels.parquet", split, annotations)
                == getattr(made, split)).all()
    with pytest.raises(ValueError, match="labels.parquet: its val rows .* not the 16 videos"):
        ave.read_labels(folder / "labels.parquet", "val", data.train.annotations)
    saved = read_pulled_config(folder)
    assert isinstance(saved, AveExperimentConfig) and saved == cfg


def test_pyfunc_predicts_segment_classes_and_refuses_bad_input(first, store):
    import mlflow

    result, _ = first
    tracking.use_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/vaplan-avel/{result.registration['version']}")
    audio = np.zeros((2, 10, 128), np.float32)
    visual = np.zeros((2, 10, 7, 7, 512), np.float32)
    frame = model.predict(ave.model_input(np.array(["a", "b"]), audio, visual))
    assert list(frame.columns) == ["video_id", "segment", "event", "event_name"]
    assert len(frame) == 20 and frame["event"].between(0, 28).all()
    with pytest.raises(ValueError, match="lacks \\['visual'\\]"):
        model.predict({"audio": audio})
    with pytest.raises(ValueError, match="visual input must be \\(N, 10, 7, 7, 512\\)"):
        model.predict({"audio": audio, "visual": np.zeros((2, 10, 49, 512), np.float32)})


def test_baseline_crash_resume_and_gate(first, cfg, data, store):
    """plg.use=false (the weak baseline), killed after train then run again (finished steps
    reused): a new version, compared with v1 on the same val videos by the one gate (paired
    bootstrap), whatever it decides."""
    result, _ = first
    base = ave_experiment("ave-sim", [*TINY, "plg.use=false"])
    options = pipeline.AveRun(base, "ave-sim", tracking_uri=store, progress=False)

    def crash(name, step):
        if name == "train":
            raise RuntimeError("killed after train")

    with pytest.raises(RuntimeError, match="killed after train"):
        pipeline.run(options, data, after_step=crash)
    failed = tracking.search_runs(result.experiment_id, "attributes.status = 'FAILED' and "
                                  "tags.`vaplan.pipeline` = 'parent'")
    assert len(failed) == 1  # the crashed run; its finished steps are reused below
    run = pipeline.run(options, data)
    assert [name for name, step in run.steps.items() if step.reused] == ["generate_labels",
                                                                          "train"]
    decision = run.registration["decision"]
    assert run.registration["version"] != result.registration["version"]
    assert decision["champion_version"] == result.registration["version"]
    assert f"vs champion v{result.registration['version']}" in decision["reason"]
    params = MlflowClient().get_run(run.steps["train"].run_id).data.params
    assert params["plg.use"] == "False" and params["train.plg_weight"] == "0.0"


def test_cli_run_psp_and_evaluate(tmp_path):
    """`vaplan run --preset ave-sim --set model.name=psp` -> vaplan-psp; `vaplan evaluate`."""
    from typer.testing import CliRunner

    from vaplan.cli import app

    uri, runner = f"sqlite:///{tmp_path}/mlflow.db", CliRunner()
    sets = [arg for item in [*TINY, "model.name=psp"] for arg in ("--set", item)]
    ran = runner.invoke(app, ["run", "--preset", "ave-sim", *sets, "--tracking-uri", uri,
                              "--quiet"])
    assert ran.exit_code == 0, ran.output[-3000:]
    assert "registered vaplan-psp v1: promoted to champion" in ran.output
    logged = float(ran.output.split("logged ")[1].split()[0])
    out = runner.invoke(app, ["evaluate", "--model", "models:/vaplan-psp@champion",
                              "--tracking-uri", uri])
    assert out.exit_code == 0, out.output[-3000:]
    assert float(out.output.split("test/accuracy")[1].split()[0]) == pytest.approx(logged,
                                                                                   abs=0.006)
