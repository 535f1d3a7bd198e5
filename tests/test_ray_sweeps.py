"""Ray Tune sweeps on LLP-sim (sim-tiny) in one private local Ray (2 CPUs) with a real MLflow
SQLite store: trial runs logged by the driver under a parent in `vaplan-sweeps` (params,
metrics with steps), the best trial tagged and linked, the trials table, a failing trial,
ASHA training trials, PLD with retraining, an interrupted sweep resumed without re-running
finished trials, and invalid spaces refused before anything starts. Ray is always shut down."""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
from servers import dead_pid

from ray_jobs import common, tune_pld, tune_plg, tune_train
from vaplan import runs, store_uri
from vaplan.sweep_options import EXIT_INTERRUPTED, EXIT_INVALID
from vaplan import sweeps as spaces
from conftest import RAY_TEST_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TINY_MODEL = ["--set", "train.model.hidden_dim=32", "--set", "train.model.ffn_dim=32",
              "--set", "train.epochs=2"]
PLG_FIXED = ["--space", "plg.visual_prompt=VP1", "--space", "plg.audio_prompt=AP2",
             "--space", "plg.audio_threshold=0.038"]


@pytest.fixture(scope="module")
def ray_env():
    """Token auth on (as Ray 2.60 defaults for local clusters), from the env: no token file."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", RAY_TEST_TOKEN)
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("RAY_ADDRESS", raising=False)
        yield


@pytest.fixture(scope="module")
def local_ray(ray_env):
    import ray

    common.init_ray("local", num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()
        import mlflow

        mlflow.set_tracking_uri(None)


@pytest.fixture
def where(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    return uri, ["--preset", "sim-tiny", "--tracking-uri", uri, "--storage-path",
                 str(tmp_path / "ray"), "--address", "local", "--num-cpus", "2"]


def runs_of(uri: str, sweep_name: str):
    """(parent run, [child runs]) of a sweep in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("vaplan-sweeps")
    parents = client.search_runs([exp.experiment_id],
                                 f"tags.`vaplan.sweep_name` = '{sweep_name}'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
        order_by=["attributes.start_time ASC"])
    return client, parents[0], children


def trial_runs(children):
    return [run for run in children if common.TRIAL_TAG in run.data.tags]


# ------------------------------------------------------------ validation (no Ray, no store)

@pytest.mark.parametrize("module, item, words", [
    (tune_plg, "plg.visual_threshold=0.04,1.5", "plg.visual_threshold must be a number in (0, 1)"),
    (tune_plg, "plg.audio_threshold=uniform:0,0.05",
     "plg.audio_threshold must be a number in (0, 1), got 0.0"),
    (tune_plg, "plg.visual_prompt=VP1,VP9", "plg.visual_prompt must be one of ['VP1'"),
    (tune_plg, "plg.audio_prompt=VP1", "(the audio prompt sets), got 'VP1'"),
    (tune_pld, "pld.visual_k=5,11", "pld.visual_k must be an integer in 1..10"),
    (tune_pld, "pld.audio_k=0", "pld.audio_k must be an integer in 1..10"),
    (tune_pld, "pld.visual_alpha=-3", "pld.visual_alpha must be a finite number > 0"),
    (tune_train, "train.nope=1", "unknown config option 'train.nope'"),
    (tune_train, "train.loss.variant=choice:richness,bogus", "train.loss.variant"),
    (tune_train, "plg.visual_threshold=0.04", "searches train.* options only"),
])
def test_invalid_space_refused_before_anything_starts(module, item, words, where, tmp_path,
                                                      capsys, ray_env):
    import ray

    uri, common_args = where
    assert module.main([*common_args, "--space", item]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert words in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "ray").exists()


def test_space_file_and_cli_precedence(tmp_path):
    from vaplan.config import get_preset

    path = tmp_path / "space.yaml"
    path.write_text("space:\n  plg.visual_threshold: {grid_search: [0.040, 0.041]}\n"
                    "  plg.visual_prompt: {choice: [VP1, VP2]}\nnum_samples: 3\n")
    file_space, samples = spaces.load_file(path)
    space = spaces.build_space(tune_plg.DEFAULT_SPACE, file_space,
                               ["plg.visual_threshold=0.039",
                                "plg.audio_threshold=uniform:0.03,0.05"],
                               get_preset("sim-tiny"), ("plg.",))
    assert samples == 3
    assert space["plg.visual_threshold"] == 0.039  # a constant: the command line wins
    assert space["plg.visual_prompt"] == {"choice": ["VP1", "VP2"]}
    assert space["plg.audio_threshold"] == {"uniform": [0.03, 0.05]}
    assert spaces.build_space({}, {}, ["pld.visual_k=randint:1,11"], get_preset("sim-tiny"),
                              ("pld.",)) == {"pld.visual_k": {"randint": [1, 11]}}  # K 1..10
    assert spaces.searched(space) == ["plg.audio_threshold", "plg.visual_prompt",
                                      "plg.audio_prompt"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"plg.visual_threshold": {"uniform": [0.03, 1.2]}}))
    with pytest.raises(spaces.SpaceError, match=r"plg.visual_threshold must be a number in \(0"):
        spaces.build_space({}, spaces.load_file(bad)[0], [], get_preset("sim-tiny"), ("plg.",))
    for key, domain, words in (
            ("pld.visual_k", {"randint": [3, 12]}, "pld.visual_k must be an integer in 1..10, "
                                                   "got 11"),  # hi is exclusive: hi - 1 checked
            ("pld.visual_k", {"uniform": [3, 5]}, "uniform needs lo < hi of a float option, got [3, 5]"),
            ("pld.visual_alpha", {"loguniform": [50, 10]}, "loguniform needs lo < hi"),
            ("pld.visual_alpha", {"grid": [3]}, "expected one domain of ['grid_search'")):
        with pytest.raises(spaces.SpaceError, match=re.escape(words)):
            spaces.build_space({}, {key: domain}, [], get_preset("sim-tiny"), ("pld.",))


# ------------------------------------------------------------ sweeps

def test_tune_plg_child_runs_and_a_failing_trial(local_ray, where):
    uri, args = where
    code = tune_plg.main([*args, *PLG_FIXED, "--name", "plg",
                          "--space", "plg.visual_threshold=0.040,0.041,0.042",
                          "--inject-failure", "plg.visual_threshold=0.042"])
    assert code == 0
    client, parent, children = runs_of(uri, "plg")
    trials = trial_runs(children)
    assert len(trials) == 3
    statuses = sorted(run.info.status for run in trials)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    failed = next(run for run in trials if run.info.status == "FAILED")
    assert failed.data.params["plg.visual_threshold"] == "0.042"
    for run in trials:
        assert run.data.params["plg.visual_prompt"] == "VP1"
        assert run.data.tags["vaplan.sweep"] == "tune_plg"
        if run.info.status == "FINISHED":
            assert 0 < run.data.metrics[tune_plg.OBJECTIVE] <= 100
            assert "plg/val/visual/seg" in run.data.metrics
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/num_errored"] == 1
    assert "injected failure" in failed.data.tags["vaplan.error"]
    assert parent.data.params["plg.visual_threshold"] in ("0.04", "0.041")  # the winner's
    best = max((r for r in trials if r.info.status == "FINISHED"),
               key=lambda r: r.data.metrics[tune_plg.OBJECTIVE])
    assert parent.data.tags["vaplan.best_run_id"] == best.info.run_id
    assert parent.data.metrics[tune_plg.OBJECTIVE] == best.data.metrics[tune_plg.OBJECTIVE]
    # every trial run was written by the driver (this process), none by a Ray worker
    assert {run.data.tags[runs.PID_TAG] for run in trials} == {str(os.getpid())}


def test_sweep_lands_in_its_own_experiment_with_best_trial_and_table(local_ray, where,
                                                                    tmp_path, capsys):
    """A space file in Tune's vocabulary; the sweep goes to `vaplan-sweeps` (the pipeline's
    `vaplan` experiment stays empty), runs are named by their values, the best trial is
    tagged and linked from the parent's description, the trials table is sorted by the
    objective with the config first, and the UI links are printed (quiet: one line a trial)."""
    uri, args = where
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"plg.visual_threshold": {"grid_search": [0.039, 0.041]},
                                 "plg.visual_prompt": {"choice": ["VP1", "VP2"]}}))
    assert tune_plg.main([*args, *PLG_FIXED[2:], "--space-file", str(space), "--name", "own",
                          "--num-samples", "2"]) == 0
    out = capsys.readouterr().out
    client, parent, children = runs_of(uri, "own")
    assert client.get_experiment_by_name("vaplan") is None
    assert parent.info.run_name == f"tune_plg sim-tiny {parent.info.run_id[:8]}"
    assert len(children) == 4 and all(r.info.run_name.startswith("visual_threshold=0.0")
                                      and " visual_prompt=VP" in r.info.run_name
                                      for r in children)
    best = [r for r in children if r.data.tags.get("vaplan.best_trial") == "true"]
    assert len(best) == 1 and best[0].info.run_id == parent.data.tags["vaplan.best_run_id"]
    url = store_uri.ui_url(uri, parent.info.experiment_id, best[0].info.run_id)
    assert "workflowType=machine_learning" in url
    assert f"]({url})" in parent.data.tags["mlflow.note.content"]
    path = client.download_artifacts(parent.info.run_id, "trials.json", str(tmp_path))
    with open(path) as handle:
        table = json.load(handle)
    assert table["columns"][:4] == ["plg.visual_threshold", "plg.visual_prompt", "status",
                                    tune_plg.OBJECTIVE]
    scores = [row[3] for row in table["data"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    assert all(len(str(value).replace(".", "").lstrip("0")) <= 4 for value in scores)
    lines = out.splitlines()
    assert sum(line.startswith("[") and "/4] visual_threshold=" in line for line in lines) == 4
    assert any(line.startswith("run:") and parent.info.run_id in line
               and "workflowType=machine_learning" in line for line in lines)
    assert len(lines) < 30, out


def test_tune_train_asha_reports_every_epoch(local_ray, where):
    uri, args = where
    code = tune_train.main([*args, *TINY_MODEL, "--name", "train", "--num-samples", "2",
                            "--space", "train.loss.variant=richness,naive",
                            "--space", "train.lr=1e-3", "--cpus-per-trial", "1"])
    assert code == 0
    client, parent, children = runs_of(uri, "train")
    trials = trial_runs(children)
    assert len(trials) == 4 and all(run.info.status == "FINISHED" for run in trials)
    epochs = [[m.step for m in client.get_metric_history(run.info.run_id, "epoch/val/seg_type")]
              for run in trials]
    assert all(steps[0] == 1 for steps in epochs) and max(map(len, epochs)) == 2
    assert {run.data.params["train.loss.variant"] for run in trials} == {"richness", "naive"}
    assert all(run.data.params["train.num_threads"] == "1" for run in trials)
    assert tune_train.OBJECTIVE in parent.data.metrics  # the winner's, under the same name
    assert {run.data.tags[runs.PID_TAG] for run in trials} == {str(os.getpid())}


def test_tune_train_groups_and_gpus_auto_on_a_cpu_only_ray(local_ray, where, capsys):
    """Issue 14 (tests/test_batched.py has the rest): --gpus-per-trial auto (the default) on
    a CPU-only Ray gives 0 GPUs; --group-size 2 over 3 samples = 2 Tune trials, 3 MLflow runs
    (own params, per-epoch metrics, FINISHED), the winner one of them."""
    uri, args = where
    assert tune_train.main([*args, *TINY_MODEL, "--name", "groups", "--group-size", "2",
                            "--num-samples", "3", "--space", "train.lr=loguniform:1e-4,1e-3",
                            "--no-asha"]) == 0
    out = capsys.readouterr().out
    assert "--gpus-per-trial auto: 0 GPU per trial (0 GPUs in the cluster, 2 trials)" in out
    client, parent, children = runs_of(uri, "groups")
    members = trial_runs(children)
    assert len(members) == 3 and all(r.info.status == "FINISHED" for r in members)
    assert sorted(r.data.tags[common.TRIAL_TAG].rsplit("_", 1)[1] for r in members) == [
        "00000/0", "00000/1", "00001/0"]
    assert len({r.data.params["train.lr"] for r in members}) == 3
    assert {r.data.params["train.device"] for r in members} == {"cpu"}
    assert all([m.step for m in client.get_metric_history(r.info.run_id, "epoch/val/seg_type")]
               == [1, 2] for r in members)
    best = [r for r in members if r.data.tags.get("vaplan.best_trial") == "true"]
    assert len(best) == 1 and parent.data.tags["vaplan.best_run_id"] == best[0].info.run_id
    assert parent.data.metrics[tune_train.OBJECTIVE] == max(
        r.data.metrics[tune_train.OBJECTIVE] for r in members)


def test_tune_pld_stage_one_and_retrain(local_ray, where):
    uri, args = where
    code = tune_pld.main([*args, *TINY_MODEL, "--set", "train.epochs=1", "--name", "pld",
                          "--space", "pld.visual_k=3,5", "--space", "pld.visual_alpha=30",
                          "--space", "pld.audio_k=6", "--space", "pld.audio_alpha=400",
                          "--retrain-top", "1"])
    assert code == 0
    client, parent, children = runs_of(uri, "pld")
    steps = [run.data.tags.get("vaplan.step") for run in children if "vaplan.step" in run.data.tags]
    assert steps == ["generate_labels", "train"]  # stage one: the pipeline's steps
    trials = trial_runs(children)
    # K=3, K=5 and the "no denoising" arm (pld.apply=never, test_tune_pld_can_pick_no_denoising)
    assert len(trials) == 3 and all("gain/visual/average" in r.data.metrics for r in trials)
    _, retrain_parent, retrained = runs_of(uri, "pld-retrain")
    assert retrain_parent.data.tags["vaplan.sweep_of"] == parent.info.run_id
    assert len(trial_runs(retrained)) == 1
    assert "epoch/val/seg_type" in trial_runs(retrained)[0].data.metrics


def interrupt(main, sweep: list[str], name: str, after: int):
    """Run a sweep stopped like `ray job stop` after `after` finished trials; returns the
    client and {trial id: run id} of the trial runs FINISHED by then."""
    assert main([*sweep, "--interrupt-after", str(after)]) == EXIT_INTERRUPTED
    client, parent, children = runs_of(sweep[sweep.index("--tracking-uri") + 1], name)
    assert parent.info.status == "KILLED"
    before = {run.data.tags[common.TRIAL_TAG]: run.info.run_id for run in trial_runs(children)
              if run.info.status == "FINISHED"}
    assert len(before) >= after
    return client, before


def check_resumed(uri: str, name: str, before: dict, trials: int):
    """After --resume: every trial has exactly one FINISHED run (none was run again), those
    finished before the stop kept theirs, and the winner is one of them."""
    client, parent, children = runs_of(uri, name)
    assert parent.info.status == "FINISHED"
    finished = [run for run in trial_runs(children) if run.info.status == "FINISHED"]
    by_trial = {}
    for run in finished:
        by_trial.setdefault(run.data.tags[common.TRIAL_TAG], []).append(run.info.run_id)
    assert all(len(ids) == 1 for ids in by_trial.values()), f"trials run again: {by_trial}"
    assert len(finished) == len(by_trial) == trials == parent.data.metrics["sweep/num_trials"]
    for trial_id, run_id in before.items():
        assert by_trial[trial_id] == [run_id]  # finished before the stop: not re-run
    assert parent.data.tags["vaplan.best_run_id"] in {run.info.run_id for run in finished}
    return parent


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(local_ray, where):
    uri, args = where
    sweep = [*args, *PLG_FIXED, "--name", "resumable", "--max-concurrent", "1",
             "--space", "plg.visual_threshold=0.039,0.040,0.041,0.042,0.043"]
    _, before = interrupt(tune_plg.main, sweep, "resumable", 2)
    assert tune_plg.main([*sweep, "--resume"]) == 0
    check_resumed(uri, "resumable", before, 5)
    assert tune_plg.main(sweep) == EXIT_INVALID  # the name is taken: --resume or a new --name


def test_resumed_tune_train_never_reruns_a_finished_trial(local_ray, where):
    """Tune saves its experiment state only now and then: trials that finished just before
    the stop may be restored as unfinished. On --resume they must not train again (their
    FINISHED run is found by trial id and its metrics reported to Tune instead). The resuming
    driver also marks runs of dead processes KILLED when it opens the experiment."""
    uri, args = where
    sweep = [*args, *TINY_MODEL, "--name", "train-resume", "--cpus-per-trial", "1",
             "--num-samples", "6"]
    client, before = interrupt(tune_train.main, sweep, "train-resume", 4)
    experiment_id = client.get_experiment_by_name("vaplan-sweeps").experiment_id
    dead = client.create_run(experiment_id, run_name="left by a SIGKILLed process",
                             tags={runs.HOST_TAG: socket.gethostname(),
                                   runs.PID_TAG: str(dead_pid())}).info.run_id
    assert tune_train.main([*sweep, "--resume"]) == 0
    assert client.get_run(dead).info.status == "KILLED"
    parent = check_resumed(uri, "train-resume", before, 6)
    assert parent.data.tags[runs.PID_TAG] == str(os.getpid())  # the resuming driver owns it


def test_resumed_grouped_sweep_never_reruns_a_finished_member(local_ray, where):
    """Issue 14: a sweep of trial groups (--group-size 2: 4 members in 2 Tune trials) stopped
    after one group; --resume trains only the other group, every member ends with one run."""
    uri, args = where
    sweep = [*args, *TINY_MODEL, "--name", "groups-resume", "--cpus-per-trial", "1",
             "--group-size", "2", "--num-samples", "4", "--no-asha", "--max-concurrent", "1",
             "--space", "train.lr=loguniform:1e-4,1e-3"]
    _, before = interrupt(tune_train.main, sweep, "groups-resume", 1)
    assert tune_train.main([*sweep, "--resume"]) == 0
    check_resumed(uri, "groups-resume", before, 4)


# ------------------------------------------------------------ tune_pld: the "no denoising" arm


def test_no_denoising_arm_is_one_point_unless_the_space_reaches_it():
    from vaplan.config import get_preset

    base = get_preset("sim-tiny")
    space = spaces.build_space(tune_pld.DEFAULT_SPACE, {}, ["pld.visual_k=3,4"], base, ("pld.",))
    assert space["pld.apply"] == {"grid_search": ["always"]}
    assert tune_pld.no_denoising(space, base) == [{
        "pld.apply": "never", "pld.visual_k": 5, "pld.visual_alpha": 30.0, "pld.audio_k": 6,
        "pld.audio_alpha": 400.0}]  # the base values: they do not change the PLG labels
    for item in ("pld.apply=always,never", "pld.apply=never"):
        searched = spaces.build_space(tune_pld.DEFAULT_SPACE, {}, [item], base, ("pld.",))
        assert tune_pld.no_denoising(searched, base) == []  # already a candidate
    with pytest.raises(spaces.SpaceError, match="pld.apply must be one of"):
        spaces.build_space(tune_pld.DEFAULT_SPACE, {}, ["pld.apply=off"], base, ("pld.",))


def test_tune_pld_can_pick_no_denoising(local_ray, where):
    """With a K/alpha that flips nearly every label (alpha 0.01), the PLG labels win: the
    winner is the pld.apply=never trial, scored with the same objective (= the PLG baseline)."""
    uri, args = where
    searched = ("visual_k=3,5", "visual_alpha=0.01", "audio=false", "audio_k=6", "audio_alpha=400")
    space = [word for item in searched for word in ("--space", f"pld.{item}")]
    assert tune_pld.main([*args, *TINY_MODEL, "--set", "train.epochs=1", "--name", "nodenoise",
                          *space]) == 0
    _, parent, children = runs_of(uri, "nodenoise")
    trials = trial_runs(children)
    assert sorted(r.data.params["pld.apply"] for r in trials) == ["always", "always", "never"]
    never = next(r for r in trials if r.data.params["pld.apply"] == "never")
    best = next(r for r in trials if r.info.run_id == parent.data.tags["vaplan.best_run_id"])
    assert best.info.run_id == never.info.run_id and parent.data.params["pld.apply"] == "never"
    assert never.data.metrics["pld/val/visual/flipped_percent"] == 0
    assert never.data.metrics["gain/visual/average"] == 0
    assert parent.data.metrics[tune_pld.OBJECTIVE] == pytest.approx(
        parent.data.metrics["plg/val/average"])
    denoised = [r for r in trials if r.data.params["pld.apply"] == "always"]
    assert all(r.data.metrics[tune_pld.OBJECTIVE] < parent.data.metrics["plg/val/average"]
               for r in denoised)
