"""Per-class PLG thresholds: the config options, PLG with a (C,) tau, the val search
(vaplan.plg_search) and `vaplan sweep plg --per-class` end to end (sim-tiny)."""

import json

import numpy as np
import pytest

from vaplan.categories import CLASSES
from vaplan.config import ExperimentConfig, PLGConfig, apply_overrides, from_dict, get_preset, \
    to_dict
from vaplan.errors import ConfigError
from vaplan.method import make_pseudo_labels
from vaplan.plg_search import GRID, ClassSearch, PerClassStudy, coordinate_ascent, searches, \
    threshold_file
from vaplan.pseudo_labels import label_quality, threshold_segments

TINY = get_preset("sim-tiny")
OPTION = "plg.visual_threshold_per_class"


def _set(*items: str) -> ExperimentConfig:
    return apply_overrides(TINY, list(items))


@pytest.mark.parametrize("tau", [0.038, 0.041, 0.0405])
def test_equal_per_class_taus_give_the_global_labels(sim_tiny, tau):
    per_class = _set(f"plg.visual_threshold={tau}", f"plg.audio_threshold={tau}",
                     f"{OPTION}={json.dumps([tau] * 25)}",
                     f"plg.audio_threshold_per_class={json.dumps([tau] * 25)}")
    assert per_class.plg.visual_threshold_per_class == (tau,) * 25
    for split in ("val", "test"):
        a = make_pseudo_labels(sim_tiny, split, per_class.plg)
        b = make_pseudo_labels(sim_tiny, split, _set(f"plg.visual_threshold={tau}",
                                                     f"plg.audio_threshold={tau}").plg)
        assert np.array_equal(a.seg_visual, b.seg_visual)
        assert np.array_equal(a.seg_audio, b.seg_audio) and a.seg_audio.any()
    # float32 probabilities exactly at tau (rounded down from 0.041): same side either way
    probs = np.full((1, 10, 25), np.float32(0.041))
    labels = np.ones((1, 25), dtype=np.uint8)
    assert np.array_equal(threshold_segments(probs, labels, 0.041),
                          threshold_segments(probs, labels, np.full(25, 0.041)))


def test_a_per_class_tau_applies_to_its_class_only(sim_tiny):
    tau = [0.041] * 25
    tau[CLASSES.index("Speech")] = 1.0  # no Speech segment reaches 1.0
    plg = _set(f"{OPTION}={json.dumps(tau)}").plg
    labels = make_pseudo_labels(sim_tiny, "val", plg).seg_visual
    reference = make_pseudo_labels(sim_tiny, "val", TINY.plg).seg_visual
    speech = CLASSES.index("Speech")
    assert labels[:, :, speech].sum() == 0 < reference[:, :, speech].sum()
    others = np.arange(25) != speech
    assert np.array_equal(labels[:, :, others], reference[:, :, others])


@pytest.mark.parametrize("value, message", [
    ("[0.04]", rf"{OPTION} must be empty \(the global threshold\) or 25 numbers .* got 1 numbers"),
    (json.dumps([0.04] * 24 + [1.5]), rf"{OPTION}\[24\] must be a number in \[0, 1\], got 1.5"),
    (json.dumps([0.04] * 24 + [True]), rf"{OPTION}\[24\] must be a number in \[0, 1\], got True"),
    ("0.04", rf"{OPTION} must be empty .* got 0.04"),
    ("[0.04, oops", rf"{OPTION} must be empty .* got '\[0.04, oops'"),
    (json.dumps({"Speech": 0.04}), rf"{OPTION}: class 'Car' missing; expected all of \['Speech'"),
    (json.dumps({**dict.fromkeys(CLASSES, 0.04), "Zebra": 0.1}),
     rf"{OPTION}: unknown class 'Zebra'"),
    ("@/nonexistent/taus.json", rf"{OPTION}: cannot read /nonexistent/taus.json: No such file"),
])
def test_bad_per_class_values_are_refused_naming_the_option(value, message):
    with pytest.raises(ConfigError, match=message):
        _set(f"{OPTION}={value}")


def test_per_class_values_direct_files_and_round_trip(tmp_path):
    with pytest.raises(ConfigError, match=r"plg.audio_threshold_per_class\[3\] must be a number"):
        PLGConfig(audio_threshold_per_class=[0.04] * 3 + [-0.1] + [0.04] * 21)
    with pytest.raises(ConfigError, match="plg.audio_threshold_per_class must be empty"):
        PLGConfig(audio_threshold_per_class="0.04")
    assert _set(f"{OPTION}=").plg.visual_threshold_per_class == ()
    assert _set(f"{OPTION}=none").plg == TINY.plg
    table = {name: round(0.03 + i / 1000, 3) for i, name in enumerate(CLASSES)}
    (tmp_path / "map.json").write_text(json.dumps(table))
    (tmp_path / "sweep.json").write_text(json.dumps(threshold_file(
        {"visual": np.array(list(table.values())), "audio": np.full(25, 0.05)}, chosen="coord")))
    from_map = _set(f"{OPTION}=@{tmp_path / 'map.json'}")
    both = _set(f"{OPTION}=@{tmp_path / 'sweep.json'}",
                f"plg.audio_threshold_per_class=@{tmp_path / 'sweep.json'}")
    assert from_map.plg.visual_threshold_per_class == tuple(table.values())
    assert both.plg.visual_threshold_per_class == tuple(table.values())
    assert both.plg.audio_threshold_per_class == (0.05,) * 25
    assert from_dict(ExperimentConfig, json.loads(json.dumps(to_dict(both)))) == both
    (tmp_path / "bad.json").write_text(json.dumps({**table, "Car": "high"}))
    with pytest.raises(ConfigError, match=rf"{OPTION}\[1\] must be .* got 'high' \(file "):
        _set(f"{OPTION}=@{tmp_path / 'bad.json'}")


def test_search_objective_curve_and_coordinate_ascent(sim_tiny):
    val = searches(sim_tiny.teachers["val"], sim_tiny.val, TINY.plg)
    with pytest.raises(ValueError, match=r"probabilities \(65, 10, 25\), video labels"):
        ClassSearch(sim_tiny.teachers["val"].get("VP1"), sim_tiny.val.video_labels,
                    sim_tiny.val.gt_visual[:, :5])
    for modality, search in val.items():
        start = search.best_global()
        assert search.score(start) == max(search.score(float(t)) for t in GRID)
        tau = np.full(25, start)
        labels = threshold_segments(search.probs, search.video_labels, tau)
        assert search.score(tau) == label_quality(labels, search.gt)["average"]
        curve = search.curve(search.state(tau), 3, GRID[::10])[0]
        exact = [search.score(np.where(np.arange(25) == 3, t, tau)) for t in GRID[::10]]
        np.testing.assert_allclose(curve, exact, rtol=0, atol=1e-9)
        ascent = coordinate_ascent(search, start)
        assert ascent.objective > search.score(start) + 1, modality  # improves val clearly
        assert list(ascent.rounds) == sorted(ascent.rounds)
        assert ascent.objective == pytest.approx(ascent.rounds[-1], abs=1e-9)
        assert set(np.round(ascent.tau, 6)) <= set(np.round(GRID, 6)) | {start}


@pytest.fixture(scope="module")
def per_class_run(tmp_path_factory):
    """`tune_plg --per-class` on sim-tiny with 4 TPE trials in a fresh SQLite store."""
    pytest.importorskip("optuna")
    from conftest import fresh_sqlite_store
    from ray_jobs import tune_plg

    root = tmp_path_factory.mktemp("per_class")
    with pytest.MonkeyPatch.context() as patch, fresh_sqlite_store(root) as uri:
        from conftest import RAY_TEST_TOKEN

        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", RAY_TEST_TOKEN)
        patch.delenv("RAY_ADDRESS", raising=False)
        code = tune_plg.main(["--per-class", "--preset", "sim-tiny", "--num-samples", "4",
                              "--tracking-uri", uri, "--storage-path", str(root / "ray"),
                              "--address", "local", "--num-cpus", "2", "--name", "pc"])
        yield code, uri


@pytest.mark.integration  # starts a local Ray (~15 s on an idle 2-core box)
@pytest.mark.slow
def test_per_class_sweep_logs_the_table_and_the_comparison(per_class_run, sim_tiny, tmp_path):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    code, uri = per_class_run
    assert code == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("vaplan-sweeps").experiment_id])
    assert len(runs) == 1  # the parent run only
    run = runs[0]
    assert run.data.tags["vaplan.per_class"] == "true" and "vaplan.interrupted" not in run.data.tags
    assert run.data.tags["mlflow.runName"].startswith("tune_plg --per-class sim-tiny")
    metrics = run.data.metrics
    assert metrics["sweep/num_trials"] == 4
    for method in ("global", "tpe", "coord"):
        for split in ("val", "test"):
            for key in ("average", "audio/average", "visual/average"):
                assert 0 < metrics[f"{method}/plg/{split}/{key}"] <= 100
    assert metrics["coord/plg/val/average"] > metrics["global/plg/val/average"]
    assert metrics["tpe/plg/val/average"] >= metrics["global/plg/val/average"]  # seeded with it
    assert "| per class, coordinate ascent |" in run.data.tags["mlflow.note.content"]
    folder = download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path), tracking_uri=uri)
    table = json.loads(open(f"{folder}/per_class_thresholds_table.json").read())
    assert table["columns"][:2] == ["class", "modality"]
    assert {"tau_global", "tau_coord", "tau_tpe"} <= set(table["columns"])
    assert len(table["data"]) == 50
    chosen = f"{folder}/per_class_thresholds.json"
    cfg = _set(f"{OPTION}=@{chosen}", f"plg.audio_threshold_per_class=@{chosen}")
    # the chosen taus reproduce the logged val quality of the chosen method through PLG
    study_val = searches(sim_tiny.teachers["val"], sim_tiny.val, cfg.plg)
    pseudo = make_pseudo_labels(sim_tiny, "val", cfg.plg)
    method = json.loads(open(chosen).read())["chosen"]
    assert study_val["visual"].score(np.array(cfg.plg.visual_threshold_per_class)) == \
        pytest.approx(metrics[f"{method}/plg/val/visual/average"], abs=1e-6)
    assert label_quality(pseudo.seg_visual, sim_tiny.val.gt_visual)["average"] == \
        pytest.approx(metrics[f"{method}/plg/val/visual/average"], abs=1e-6)
    assert run.data.params[OPTION] == str(cfg.plg.visual_threshold_per_class)


@pytest.mark.parametrize("args, message", [
    (["--space", "plg.visual_threshold=0.04"], "--per-class searches the 50 thresholds itself; "
                                               "drop --space"),
    (["--resume"], "drop --resume"),
    (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    (["--name", "taken"], "sweep 'taken' in "),
    (["--set", f"{OPTION}=[0.5]"], f"{OPTION} must be empty"),
])
def test_per_class_refuses_bad_options_in_one_line(args, message, capsys, tmp_path):
    from ray_jobs import tune_plg

    (tmp_path / "taken").mkdir()
    code = tune_plg.main(["--per-class", "--preset", "sim-tiny", "--storage-path",
                          str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_study_chooses_on_val_only(sim_tiny):
    study = PerClassStudy(sim_tiny, TINY.plg)
    study.add("tpe", {m: dict(zip(CLASSES, study.taus["global"][m])) for m in ("audio", "visual")})
    scores = study.scores()
    assert study.chosen() == "coord"
    assert scores["tpe/plg/test/average"] == scores["global/plg/test/average"]
    plg = study.chosen_plg()
    assert plg.visual_threshold_per_class == tuple(study.taus["coord"]["visual"])
    assert "| per class, coordinate ascent |" in study.description("sim-tiny", 1)
