"""The one `vaplan` CLI: every command listed, examples in each --help that parse, user errors as
one line with exit 2 (before any store is created), `python -m pipelines` as an alias of
`vaplan run`, `vaplan sweep <kind>` forwarding to the `ray_jobs` entry points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pipelines import tracking
from vaplan import cli

ROOT = Path(__file__).resolve().parents[1]


def vaplan(*args: str, cwd: Path, module: str = "vaplan.cli") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The process failed as a user error: exit 2 and exactly one line on stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- user errors first ---------------------------------------------------------------------

def test_unknown_model_in_an_existing_store_is_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    tracking.prepare_store(uri)
    proc = vaplan("evaluate", "--model", "models:/nosuch@champion", "--tracking-uri", uri,
                  cwd=tmp_path)
    assert "no registered model 'nosuch'" in one_error_line(proc)
    assert proc.stdout == ""


def test_evaluate_without_a_store_and_a_bad_model_uri_are_one_line(tmp_path):
    line = one_error_line(vaplan("evaluate", "--model", "models:/nosuch@champion", cwd=tmp_path))
    assert "no MLflow store at" in line and "--tracking-uri" in line
    line = one_error_line(vaplan("evaluate", "--model", "nosuch", cwd=tmp_path))
    assert "models:/<name>@<alias>" in line
    line = one_error_line(vaplan("evaluate", "--split", "tset", cwd=tmp_path))
    assert "--split must be train, val or test" in line
    assert tree(tmp_path) == []  # read-only commands never create a store


@pytest.mark.parametrize("args, expected", [
    (["--set", "train.lr=inf"], "train.lr must be a finite number > 0, got inf"),
    (["--preset", "sim-huge"], "unknown preset 'sim-huge'"),
    (["--set", "train.lr"], "train.lr"),
    (["--promote-metric", "test/seg_type"], "promote_metric"),
    (["--no-such-option"], "No such option"),
])
def test_run_refuses_bad_options_before_any_store_exists(tmp_path, args, expected):
    assert expected in one_error_line(vaplan("run", *args, cwd=tmp_path))
    assert tree(tmp_path) == []


def test_python_m_pipelines_is_vaplan_run(tmp_path):
    proc = vaplan("--set", "train.epochs=0", cwd=tmp_path, module="pipelines")
    assert "train.epochs" in one_error_line(proc)
    helped = vaplan("--help", cwd=tmp_path, module="pipelines")
    assert helped.returncode == 0 and "Usage: vaplan run" in helped.stdout
    assert tree(tmp_path) == []


def test_sweep_kinds(tmp_path):
    assert "unknown sweep 'tune'" in one_error_line(vaplan("sweep", "tune", cwd=tmp_path))
    bare = vaplan("sweep", cwd=tmp_path)
    assert bare.returncode == 2 and "plg|train|pld|all" in bare.stdout
    assert cli.SWEEPS == {"plg": "ray_jobs.tune_plg", "train": "ray_jobs.tune_train",
                          "pld": "ray_jobs.tune_pld", "all": "ray_jobs.pipeline"}


@pytest.mark.slow  # imports Ray
def test_sweep_forwards_its_arguments_to_the_ray_job(tmp_path):
    """`vaplan sweep plg --help` is the help of `python -m ray_jobs.tune_plg`; a bad option of
    the sweep is the sweep's own one-line error."""
    helped = vaplan("sweep", "plg", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--preset" in helped.stdout and "tune_plg" in helped.stdout
    assert "train.lr" in one_error_line(vaplan("sweep", "train", "--set", "train.lr=-1",
                                               cwd=tmp_path))


# ---- the command list and the examples -----------------------------------------------------

def test_help_lists_the_commands(tmp_path):
    proc = vaplan("--help", cwd=tmp_path)
    assert proc.returncode == 0
    listed = set(re.findall(r"^│ ([a-z-]+) ", proc.stdout, flags=re.M))
    assert {"run", "sweep", "pull", "evaluate", "report", "ablation", "build-features",
            "import-checkpoint"} <= listed, proc.stdout


def _examples(command) -> list[list[str]]:
    """The `vaplan ...` lines of a command's help (also `Example: vaplan ...`)."""
    found = (re.match(r"(?:Examples?:\s*)?vaplan (.*)$", line.strip())
             for line in (command.help or "").splitlines())
    return [match[1].split() for match in found if match]


def test_every_command_has_examples_that_parse():
    """Each example in a command's help names that command and parses with its options
    (click's own parser, nothing run)."""
    group = typer.main.get_command(cli.app)
    ctx = group.make_context("vaplan", ["run"])
    for name, command in group.commands.items():
        if name == "teach":  # documented in docs/teachers.md (needs the checkpoints)
            continue
        examples = _examples(command)
        assert examples, f"vaplan {name} --help has no example"
        for args in examples:
            assert args[0] == name, args
            if name == "sweep":
                assert args[1] in cli.SWEEPS, args
                continue
            command.make_context(name, [a.replace("DIR", "d") for a in args[1:]], parent=ctx)
