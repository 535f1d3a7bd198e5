"""`vaplan sweep plg --preset ave-sim` (ray_jobs/tune_plg.py, docs/ave.md "Threshold sweep"):
the AVE (visual, audio) thresholds searched on val in a private local Ray with a real MLflow
SQLite store; the winner is `vaplan.ave.quality.search_thresholds`'s on the same grid and its
config uses the thresholds as given (plg.search=false); AVE training sweeps and --per-class are
refused in one line before anything starts."""

from __future__ import annotations

import pytest
from test_ray_sweeps import local_ray, ray_env, runs_of, trial_runs  # noqa: F401 (fixtures)

from ray_jobs import tune_pld, tune_plg, tune_train
from vaplan.ave import experiment as ave
from vaplan.ave.config import AveExperimentConfig, ave_experiment
from vaplan.ave.quality import search_thresholds
from vaplan.sweep_options import EXIT_INVALID
from vaplan.sweeps import STATE_FILE, SweepState

DATA = ["data.sim.num_train=16", "data.sim.num_background=4", "data.sim.max_eval_videos=20"]
GRID = (0.036, 0.039)  # visual x audio: a unique best pair on this data


def args(tmp_path, *more: str) -> list[str]:
    sets = [item for option in DATA for item in ("--set", option)]
    return ["--preset", "ave-sim", *sets, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--storage-path", str(tmp_path / "ray"), "--address", "local", "--num-cpus", "2",
            *more]


@pytest.mark.parametrize("main, extra, words", [
    (tune_train.main, [], "not the tune_train sweep"),
    (tune_pld.main, [], "not the tune_pld sweep"),
    (tune_plg.main, ["--per-class"], "not --per-class"),
])
def test_ave_sweeps_other_than_thresholds_are_one_line_errors(main, extra, words, tmp_path,
                                                             capsys):
    assert main(args(tmp_path, *extra)) == EXIT_INVALID
    err = capsys.readouterr().err.strip()
    assert "--preset ave-sim is an AVE preset" in err and words in err and "\n" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_bad_ave_space_is_refused_before_anything_starts(tmp_path, capsys):
    assert tune_plg.main(args(tmp_path, "--space", "plg.visual_threshold=0.03,1.5")) == \
        EXIT_INVALID
    assert "plg.visual_threshold must be a number in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration  # a Ray head, as tests/test_ray_sweeps.py
def test_ave_threshold_sweep_winner_is_the_val_search(local_ray, tmp_path):  # noqa: F811
    values = ",".join(map(str, GRID))
    assert tune_plg.main(args(tmp_path, "--name", "ave", f"--space=plg.visual_threshold={values}",
                              f"--space=plg.audio_threshold={values}")) == 0
    cfg = ave_experiment("ave-sim", DATA)
    val = ave.load_data(cfg).val
    best = search_thresholds(val.annotations.video_label, val.annotations.truth,
                             val.teachers["VP1"], val.teachers["AP2"], grid=GRID)

    client, parent, children = runs_of(f"sqlite:///{tmp_path}/mlflow.db", "ave")
    trials = trial_runs(children)
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.params["plg.search"] for r in trials} == {"False"}
    assert parent.data.params["plg.visual_threshold"] == str(best.visual_threshold)
    assert parent.data.params["plg.audio_threshold"] == str(best.audio_threshold)
    assert parent.data.params["plg.search"] == "False"
    assert parent.data.metrics[tune_plg.AVE_OBJECTIVE] == pytest.approx(best.quality["accuracy"])
    assert {"plg/val/seg", "plg/val/event"} <= set(parent.data.metrics)

    state = SweepState.load(tmp_path / "ray" / "ave")
    assert (tmp_path / "ray" / "ave" / STATE_FILE).is_file() and state.task == "ave"
    winner = state.winner  # what `vaplan run --preset ave-sim` uses, thresholds as given
    assert isinstance(winner, AveExperimentConfig) and winner.plg.search is False
    assert (winner.plg.visual_threshold, winner.plg.audio_threshold) == \
        (best.visual_threshold, best.audio_threshold)
    assert ave.make_labels(winner, ave.load_data(winner)).quality == best.quality


def test_state_files_before_ave_are_llp_sweeps(tmp_path):
    """A vaplan_sweep.json written before `task` existed resumes as the LLP sweep it was."""
    from vaplan.config import ExperimentConfig, get_preset, to_dict
    from vaplan.io import write_json

    write_json(tmp_path / STATE_FILE, {
        "job": "tune_plg", "name": "old", "parent_run_id": "", "experiment_id": "",
        "tracking_uri": "sqlite:///x.db", "base": to_dict(get_preset("sim-tiny")), "space": {},
        "num_samples": 1, "finished": False, "best": {}})
    state = SweepState.load(tmp_path)
    assert state.task == "avvp" and isinstance(state.experiment, ExperimentConfig)
