"""The tracked pipeline against a real MLflow SQLite store in a temp dir (no mocks).

One sim-tiny pipeline is crashed after `train`, then re-run: the re-run must reuse the
finished steps. The resulting store is then checked for the nested run structure, metrics,
artifacts, the registered version and its aliases; the promotion gate is exercised in both
directions, and the champion is pulled and re-evaluated by alias and by version.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines import commands, registry, tracking
from vaplan.label_table import labels_table, read_labels, write_labels
from pipelines.config import STEP_NAMES, pipeline_config_from_preset
from pipelines.pipeline import run
from pipelines.steps import CHECKPOINT
from pipelines.steps.labels import CHOICE_FILE
from pipelines.steps.training import kept_plg_labels
from vaplan.io import read_json
from vaplan import runs, store_uri
from vaplan.data.types import PseudoLabels
from vaplan.metrics import SCORE_KEYS

pytestmark = pytest.mark.slow
MODEL = "vaplan-han-test"
STEP_SECTIONS = {"generate_labels": "plg.", "train": "train.", "denoise": "pld.",
                 "retrain": "train.", "evaluate": "pipeline.",
                 "register": ("registry.", "pipeline.")}
VERSION_TAGS = ("vaplan.sha256.checkpoint", "vaplan.sha256.labels", "vaplan.dataset_digest",
                "vaplan.score.val/seg_type", "vaplan.promotion.decision",
                "vaplan.promotion.improvement", "vaplan.promotion.interval", "vaplan.backbone")
THREADS = ["train.num_threads=1"]  # 2 OpenMP threads on 2 shared cores mostly spin


class SimulatedCrash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def pipeline(store, dataset, tmp_path_factory):
    """Crash after `train`, then run again; returns (first parent run id, finished result)."""
    cfg = pipeline_config_from_preset("sim-tiny", THREADS, tracking_uri=store, model_name=MODEL,
                                      progress=False)
    parents = []

    def crash_after_train(name, result):
        parents.append(tracking.client().get_run(result.run_id).data.tags[tracking.PARENT_TAG])
        if name == "train":
            raise SimulatedCrash("killed after train")

    with pytest.raises(SimulatedCrash):
        run(cfg, after_step=crash_after_train, dataset=dataset)
    result = run(cfg, dataset=dataset)
    return parents[0], result


def test_tracking_uri_resolution_and_ui_links(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = store_uri.resolve_tracking_uri(cwd=tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert store_uri.default_artifact_root(default) == tmp_path.resolve() / "mlruns/artifacts"
    assert "--default-artifact-root" in store_uri.ui_command(default)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store_uri.resolve_tracking_uri(cwd=tmp_path) == "http://127.0.0.1:5000"
    assert store_uri.resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    assert store_uri.resolve_tracking_uri("sqlite:///x.db", cwd=tmp_path) == \
        f"sqlite:///{tmp_path.resolve()}/x.db"  # relative: made absolute for other processes
    assert store_uri.default_artifact_root("http://127.0.0.1:5000") is None
    links = store_uri.ui_links(default, "3", "abc").splitlines()
    assert links[0].startswith("browse the runs: mlflow ui --backend-store-uri sqlite:///")
    assert links[1] == "experiment: http://127.0.0.1:5000/#/experiments/3" \
                       "?workflowType=machine_learning"
    assert links[2].endswith("/#/experiments/3/runs/abc?workflowType=machine_learning")
    assert store_uri.ui_links("http://h:5000/", "3").splitlines() == [
        "experiment: http://h:5000/#/experiments/3?workflowType=machine_learning"]
    assert runs.short_name("sim-tiny", "", "train.lr=1e-3", run_id="3f2a9c") == \
        "sim-tiny train.lr=1e-3 3f2a"


def test_label_table_round_trip(tmp_path, dataset):
    rng = np.random.default_rng(0)
    split = dataset.val
    shape = split.gt_audio.shape
    labels = PseudoLabels(rng.integers(0, 2, shape, dtype=np.uint8),
                          rng.integers(0, 2, shape, dtype=np.uint8))
    cfg = pipeline_config_from_preset("sim-tiny").experiment.plg
    table = labels_table("plg", {"val": (split.video_ids, labels)},
                         {"val": split.video_labels}, dataset.teachers, cfg)
    assert table.num_rows == len(split) * shape[1] * 2
    ids, back = read_labels(write_labels(tmp_path / "labels.parquet", table))["val"]
    assert list(ids) == list(split.video_ids)
    np.testing.assert_array_equal(back.seg_audio, labels.seg_audio)
    np.testing.assert_array_equal(back.seg_visual, labels.seg_visual)


def test_crash_then_resume_reuses_finished_steps(pipeline):
    first_parent, result = pipeline
    client = MlflowClient()
    assert client.get_run(first_parent).info.status == "FAILED"
    crashed = tracking.child_runs(first_parent, result.experiment_id)
    assert [r.info.run_name for r in crashed] == ["generate_labels", "train"]
    assert all(r.info.status == "FINISHED" for r in crashed)
    # PLD does not beat PLG on sim-tiny's val, so retrain would repeat train: it reuses it
    assert kept_plg_labels(result.registration["labels"])
    assert result.reused_steps == ["generate_labels", "train", "retrain"]
    resumed = {r.info.run_name: r for r in tracking.child_runs(result.parent_run_id,
                                                               result.experiment_id)}
    assert resumed["train"].data.tags["vaplan.reused_from"] == crashed[1].info.run_id
    assert resumed["retrain"].data.tags["vaplan.reused_from"] == crashed[1].info.run_id
    assert result.steps["retrain"].digest(CHECKPOINT) == result.steps["train"].digest(CHECKPOINT)
    assert "vaplan.reused_from" not in resumed["denoise"].data.tags
    history = client.get_metric_history(resumed["train"].info.run_id, "epoch/train_loss")
    epochs = pipeline_config_from_preset("sim-tiny").experiment.train.epochs
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # replayed per epoch


def test_nested_runs_params_and_metrics(pipeline):
    _, result = pipeline
    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = tracking.child_runs(result.parent_run_id, result.experiment_id)
    assert [r.info.run_name for r in children] == list(STEP_NAMES)
    assert parent.info.run_name == result.run_name == \
        f"sim-tiny train.num_threads=1 {result.parent_run_id[:4]}"
    assert "**Promotion gate: promoted to `champion`**" in parent.data.tags[tracking.NOTE_TAG]
    params = parent.data.params
    assert params["plg.visual_threshold"] == "0.041" and params["pld.visual_k"] == "5"
    assert params["train.loss.variant"] == "richness" and len(params["data.digest"]) == 64
    assert params["train.lr_schedule"] == "step" and params["train.lr_step_size"] == "10"
    assert not [key for key in params if key.startswith("experiment.") or "." not in key]
    for child in children:  # a step logs its own section, under the parent's names and values
        own = child.data.params
        assert own and all(key.startswith(STEP_SECTIONS[child.info.run_name]) for key in own)
        assert {k: v for k, v in own.items() if k in params} == \
            {k: params[k] for k in own if k in params}
    train_run = next(r for r in children if r.info.run_name == "train")
    assert train_run.data.params["train.lr"] == params["train.lr"]
    lrs = sorted(client.get_metric_history(train_run.info.run_id, "epoch/lr"),
                 key=lambda m: m.step)
    epochs = pipeline_config_from_preset("sim-tiny").experiment.train.epochs
    assert [(m.step, m.value) for m in lrs] == [(e, pytest.approx(3e-4))
                                                for e in range(1, epochs + 1)]
    metrics = parent.data.metrics
    for split in ("val", "test"):
        assert {f"{split}/{key}" for key in SCORE_KEYS} <= set(metrics)
    for stage in ("plg", "pld"):
        for modality in ("audio", "visual"):
            for key in ("video_precision", "seg", "event"):
                assert f"{stage}/val/{modality}/{key}" in metrics
    assert metrics["test/seg_type"] == pytest.approx(result.test_scores["seg_type"])
    inputs = {d.dataset.name for d in parent.inputs.dataset_inputs}
    assert inputs == {"plg-labels", "pld-labels"}


def _artifacts(client, run_id, path=""):
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return set(files)


def test_step_artifacts(pipeline):
    _, result = pipeline
    client = MlflowClient()
    outputs = {name: _artifacts(client, step.outputs_run_id)
               for name, step in result.steps.items()}
    assert {"labels/plg.parquet", "plots/fig3a_plg_per_class_f.png"} <= outputs["generate_labels"]
    assert "checkpoint/han.pt" in outputs["train"] and "checkpoint/han.pt" in outputs["retrain"]
    assert {"labels/pld.parquet", "plots/fig3b_plg_vs_pld_per_class_f.png"} <= outputs["denoise"]
    assert {"plots/timelines_val.png", "tables/per_class_val.json",
            "scores.json"} <= outputs["evaluate"]
    assert "config.json" in _artifacts(client, result.parent_run_id)


def test_registered_version_and_aliases(pipeline):
    _, result = pipeline
    client = MlflowClient()
    version = result.registration["version"]
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"candidate": version, "champion": version}
    mv = client.get_model_version(MODEL, version)
    assert mv.tags["vaplan.promotion.decision"] == "promoted"
    assert sorted(mv.tags) == sorted(VERSION_TAGS)  # the rest is in registration.json
    assert commands.logged_scores(MODEL, version=version, split="val") == \
        pytest.approx(result.val_scores, abs=1e-9)
    assert commands.logged_scores(MODEL) == pytest.approx(result.test_scores, abs=1e-9)
    assert "**Scores**" in mv.description and "| val | " in mv.description


def test_promotion_gate_both_directions(pipeline):
    """Per-video scores 1 point below / above the champion's on every video: kept / promoted
    (a constant shift has a zero-width interval). tests/test_gate.py covers the noise."""
    _, result = pipeline
    client = MlflowClient()
    first = client.get_model_version(MODEL, result.registration["version"])
    first_version = str(first.version)  # the SQL store returns ints, REST strings
    score = registry.version_score(MODEL, first_version, "val/seg_type")
    champion = np.full(20, score)
    scorer = {first_version: champion}.__getitem__  # the champion's per-video val scores
    worse = client.create_model_version(MODEL, first.source, run_id=first.run_id)
    worse_version = str(worse.version)
    kept = registry.apply_promotion_gate(MODEL, worse_version, champion - 1.0,
                                         champion_scores=scorer)
    assert not kept.promoted and kept.champion_version == first_version
    assert kept.champion_score == pytest.approx(score, abs=1e-4)
    assert (kept.low, kept.high) == pytest.approx((-1.0, -1.0))
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"candidate": worse_version, "champion": first_version}
    assert client.get_model_version(MODEL, worse_version).tags[
        "vaplan.promotion.decision"] == "kept"
    better = client.create_model_version(MODEL, first.source, run_id=first.run_id)
    promoted = registry.apply_promotion_gate(MODEL, str(better.version), champion + 1.0,
                                             champion_scores=scorer)
    assert promoted.promoted and promoted.champion_version == first_version
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == str(better.version)
    assert promoted.champion_score == pytest.approx(score, abs=1e-4)
    tags = client.get_model_version(MODEL, str(better.version)).tags
    assert tags["vaplan.promotion.improvement"] == "+1.000"
    assert commands.logged_scores(MODEL, version=int(better.version)) == {}  # made by hand


def test_pull_and_evaluate_by_alias_and_version(pipeline, dataset, tmp_path):
    _, result = pipeline
    version = result.registration["version"]
    dest = commands.pull(MODEL, str(tmp_path / "pulled"), version=int(version))
    assert {"checkpoint.pt", "labels.parquet", "config.json", "version.json"} <= {
        p.name for p in dest.iterdir()}
    labels = read_labels(dest / "labels.parquet")
    assert len(labels["train"][0]) == len(dataset.train)
    assert commands.read_pulled_config(dest).train.epochs == 2
    by_version = commands.evaluate_registered(f"models:/{MODEL}/{version}", "test")
    for key in SCORE_KEYS:
        assert by_version[key] == pytest.approx(result.test_scores[key], abs=1e-4)
    champion = registry.resolve_version(MODEL, alias="champion")
    by_alias = commands.evaluate_registered(f"models:/{MODEL}@champion", "test", dataset=dataset)
    assert champion.source == registry.resolve_version(MODEL, version=version).source
    assert by_alias == pytest.approx(by_version, abs=1e-6)


def test_cli_pull_and_evaluate(pipeline, store, tmp_path):
    """`vaplan evaluate` and `vaplan pull` (typer) print/write what the registry holds."""
    from typer.testing import CliRunner

    from vaplan.cli import app

    _, result = pipeline
    version = result.registration["version"]
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", "--model", f"models:/{MODEL}/{version}", "--split",
                              "test", "--tracking-uri", store])
    assert out.exit_code == 0, out.output
    printed = {line.split()[0]: float(line.split()[1]) for line in out.output.splitlines()
               if line.startswith("test/")}
    assert set(printed) == {f"test/{key}" for key in SCORE_KEYS}
    for key in SCORE_KEYS:  # printed with two decimals
        assert printed[f"test/{key}"] == pytest.approx(result.test_scores[key], abs=0.006)
    pulled = runner.invoke(app, ["pull", "--model", MODEL, "--version", str(version),
                                 "--dest", str(tmp_path / "cli"), "--tracking-uri", store])
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "cli" / "checkpoint.pt").is_file()


def test_retrain_trains_again_on_labels_pld_changed(store, dataset):
    """pld.apply=always: retrain trains on the PLD labels (its own run, not train's outputs)."""
    seen = {}

    def stop_after_retrain(name, result):
        seen[name] = result
        if name == "denoise":  # the work dir is gone once the run ends
            seen["choice"] = read_json(result.path(CHOICE_FILE))
        if name == "retrain":
            raise SimulatedCrash("enough")

    cfg = pipeline_config_from_preset("sim-tiny", [*THREADS, "pld.apply=always",
                                                   "train.epochs=1"], tracking_uri=store,
                                      model_name=MODEL, progress=False, register=False)
    with pytest.raises(SimulatedCrash):
        run(cfg, after_step=stop_after_retrain, dataset=dataset)
    assert not kept_plg_labels(seen["choice"])
    assert not seen["retrain"].reused and seen["retrain"].key != seen["train"].key

