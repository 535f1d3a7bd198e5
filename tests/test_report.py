"""The report per registered version (pipelines/report.py, `vaplan report`).

Unit: the page from hand-made records (escaping, the config diff, a first version, a missing
figure) and the command's one-line errors. Integration: two sim-tiny pipelines on a temp SQLite
store (v1, then v2 with another `train.lr`); `vaplan report` writes the champion's report with
the logged numbers, v2's config diff to v1, rebuilds a report that is not stored; headless
Chromium screenshots the report and the MLflow UI of a real `mlflow server` on loopback
(PNGs kept under the test's tmp folder; `--basetemp` to keep them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest

from pipelines import report
from servers import mlflow_server
from vaplan import report as html_report
from vaplan.cli import run_app
from vaplan.metrics import SCORE_KEYS
from conftest import fresh_sqlite_store

MODEL = "vaplan-han"
THREADS = ["train.num_threads=1"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _registration(promoted=True, champion=None, reason="no champion yet") -> dict:
    decision = {"model_name": "m", "version": "2", "metric": "val/seg_type",
                "candidate_score": 41.5, "champion_version": champion, "champion_score": 40.0,
                "promoted": promoted, "reason": reason, "improvement": 1.5, "low": -0.25,
                "high": 3.0, "confidence": 0.95, "min_improvement": 0.0, "samples": 2000,
                "videos": 65}
    labels = {"apply": "auto", "modalities": {
        "visual": {"source": "pld", "reason": "PLD better & significant"}}}
    return {"model_name": "m", "version": "2", "decision": decision, "labels": labels}


def _config(lr: float) -> dict:
    return {"experiment": {"train": {"lr": lr, "epochs": 3}, "plg": {"visual_threshold": 0.04}},
            "dataset": {"digest": "abc123", "description": "LLP-sim <tiny>"}}


def test_render_escapes_values_and_diffs_only_changed_options():
    reg = _registration(promoted=False, champion="1", reason="<script>alert(1)</script>")
    metrics = {"plg/val/visual/average": 60.0, "pld/val/visual/average": 62.5}
    scores = {"test": {key: 10.0 + i for i, key in enumerate(SCORE_KEYS)}, "val": {}}
    text = html_report.render(reg, _config(1e-3), _config(3e-4), metrics, scores,
                         {"Fig. 3a": "QUJD", "Fig. 3b": None}, "origin")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "LLP-sim &lt;tiny&gt;" in text and "PLD better &amp; significant" in text
    assert "kept as candidate" in text and "+1.500 [-0.250, +3.000] at 95%" in text
    diff = text[text.index("Config diff"):]
    assert "<code>train.lr</code>" in diff and "0.0003" in diff and "0.001" in diff
    assert "train.epochs" not in diff and "visual_threshold" not in diff
    assert "data:image/png;base64,QUJD" in text and "not produced by this run" in text
    test_row = re.search(r"<tr><td class=l>test</td>(.*?)</tr>", text)[1]
    assert re.findall(r">([\d.]+)</span>", test_row) == [f"{10.0 + i:.2f}" for i in range(10)]
    assert ">62.50<" in text and "n/a" in text  # audio quality not recorded


def test_render_first_version_and_same_config():
    first = html_report.render(_registration(), _config(3e-4), None, {}, {}, {}, "")
    assert "promoted to champion" in first and "first version: no champion" in first
    assert "no scores recorded" in first
    same = html_report.render(_registration(champion="1"), _config(3e-4), _config(3e-4), {}, {}, {},
                         "")
    assert "same config as the champion" in same


def test_report_command_user_errors_are_one_line(tmp_path, capsys):
    assert run_app(["report", "vaplan-han@champion"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model URI 'vaplan-han@champion' must look like models:/")
    assert len(err.splitlines()) == 1
    missing = tmp_path / "none.db"
    assert run_app(["report", "models:/vaplan-han@champion", "--tracking-uri",
                    f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow store at") and len(err.splitlines()) == 1
    assert not missing.exists()


# ---------------------------------------------------------------- after real pipelines


@pytest.fixture(scope="module")
def pipelines_done(tmp_path_factory, sim_tiny):
    """v1 (sim-tiny) and v2 (train.lr=0.002) of MODEL in a fresh SQLite store."""
    from pipelines.config import pipeline_config_from_preset
    from pipelines.pipeline import run

    root = tmp_path_factory.mktemp("report-store")
    with fresh_sqlite_store(root) as uri:
        results = []
        for extra in ([], ["train.lr=0.002"]):
            cfg = pipeline_config_from_preset("sim-tiny", THREADS + extra, tracking_uri=uri,
                                              model_name=MODEL, progress=False)
            results.append(run(cfg, dataset=sim_tiny))
        yield uri, root, results


def _write_report(capsys, uri: str, model_uri: str, *extra: str) -> tuple[str, str]:
    assert run_app(["report", model_uri, "--tracking-uri", uri, *extra]) == 0
    captured = capsys.readouterr()
    return captured.out.strip().splitlines()[-1], captured.err


@pytest.mark.integration
@pytest.mark.slow
def test_report_of_champion_holds_the_logged_numbers(pipelines_done, tmp_path, capsys):
    uri, _, results = pipelines_done
    out = tmp_path / "x.html"
    printed, how = _write_report(capsys, uri, f"models:/{MODEL}@champion", "--out", str(out))
    assert printed == str(out) and "report stored" in how
    text = out.read_text()
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    result = next(r for r in results if r.registration["version"] == str(champion))
    logged = client.get_run(result.steps["evaluate"].run_id).data.metrics
    row = re.search(r"<tr><td class=l>test</td>(.*?)</tr>", text)[1]
    shown = re.findall(r"<span title='([^']+)'>([^<]+)</span>", row)
    assert len(shown) == len(SCORE_KEYS) == 10
    for key, (exact, rounded) in zip(SCORE_KEYS, shown):
        assert float(exact) == pytest.approx(logged[f"test/{key}"], abs=1e-9), key
        assert rounded == f"{logged[f'test/{key}']:.2f}", key
    decision = result.registration["decision"]
    verdict = "promoted to champion" if decision["promoted"] else "kept as candidate"
    assert f"Promotion gate: <b class=" in text and verdict in text
    assert html_report._e(decision["reason"]) in text
    assert "Config diff to the champion it was compared with" in text
    assert text.count("data:image/png;base64,") == 2  # Figs. 3a and 3b


@pytest.mark.integration
@pytest.mark.slow
def test_report_of_v2_diff_link_and_rebuild(pipelines_done, tmp_path, capsys, monkeypatch):
    uri, _, results = pipelines_done
    version = results[1].registration["version"]
    monkeypatch.chdir(tmp_path)
    printed, _ = _write_report(capsys, uri, f"models:/{MODEL}/{version}")  # default --out
    assert Path(printed).resolve() == tmp_path / f"vaplan-report-{MODEL}-v{version}.html"
    stored = Path(printed).read_text()
    diff = stored[stored.index("Config diff"):]
    assert f"champion v{results[0].registration['version']}" in diff
    assert re.search(r"<code>train\.lr</code></td><td>0\.0003</td><td>0\.002</td>", diff)
    assert "train.epochs" not in diff
    mv = mlflow.MlflowClient().get_model_version(MODEL, version)
    assert report.ui_link(results[1].experiment_id, mv.run_id) in mv.description
    # a version registered before reports existed: rebuilt from the stored step artifacts
    artifacts = Path(unquote(urlparse(mlflow.get_run(mv.run_id).info.artifact_uri).path))
    (artifacts / report.REPORT_FILE).unlink()
    printed, how = _write_report(capsys, uri, f"models:/{MODEL}/{version}", "--out", "re.html")
    assert "report rebuilt" in how
    rebuilt = Path(printed).read_text()
    assert rebuilt.replace(report.ORIGIN_REBUILT, report.ORIGIN_STEP) == stored
    (artifacts / report.REPORT_FILE).write_text(stored)  # back, for the UI screenshot


# ---------------------------------------------------------------- screenshots


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:  # `make test` installs it (Debian package `chromium`) when run as root
        pytest.skip("chromium is not on PATH (apt-get install -y chromium)")
    return found


def _browse(chromium: str, tmp: Path, url: str, png: Path | None = None) -> str:
    """Screenshot `url` into `png` (1280x2000) or return its DOM after scripts ran."""
    profile = tmp / f"profile-{time.monotonic_ns()}"  # a new empty profile per call
    what = [f"--screenshot={png}", "--window-size=1280,2000"] if png else ["--dump-dom"]
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *what,
                           "--virtual-time-budget=40000", url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    if png is not None:
        assert png.stat().st_size > 10_000, done.stderr[-2000:]
    return done.stdout


def _drawn_fraction(png: Path) -> float:
    """Fraction of pixels that are not (nearly) white: a blank page is ~0."""
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]  # (H, W, 3) in [0, 1]
    return float((pixels.min(axis=-1) < 0.9).mean())


@pytest.fixture(scope="module")
def mlflow_ui(pipelines_done):
    """A real `mlflow server` on loopback over the pipelines' store."""
    uri, root, _ = pipelines_done
    with mlflow_server(root, uri, "--default-artifact-root", str(root / "mlruns/artifacts")) as url:
        yield url


@pytest.mark.integration
@pytest.mark.slow
def test_screenshots_of_report_and_mlflow_ui(pipelines_done, chromium, mlflow_ui, tmp_path,
                                             capsys):
    uri, _, results = pipelines_done
    page = tmp_path / "champion.html"
    _write_report(capsys, uri, f"models:/{MODEL}@champion", "--out", str(page))
    shot = tmp_path / "report.png"
    _browse(chromium, tmp_path, page.as_uri(), shot)
    assert _drawn_fraction(shot) > 0.05
    experiment, parent = results[1].experiment_id, results[1].parent_run_id
    ml_mode = f"{mlflow_ui}/#/experiments/{experiment}?workflowType=machine_learning"
    _browse(chromium, tmp_path, ml_mode, tmp_path / "ui-experiment.png")
    _browse(chromium, tmp_path, f"{mlflow_ui}/#/experiments/{experiment}",
            tmp_path / "ui-experiment-default.png")
    dom = _browse(chromium, tmp_path, ml_mode)
    assert mlflow.get_run(parent).info.run_name in dom  # the runs table was rendered
    version = results[1].registration["version"]
    dom = _browse(chromium, tmp_path, f"{mlflow_ui}/#/models/{MODEL}/versions/{version}")
    assert f"artifacts/{report.REPORT_FILE}" in dom  # the description links the report
    mv = mlflow.MlflowClient().get_model_version(MODEL, version)
    _browse(chromium, tmp_path, mlflow_ui + "/" + report.ui_link(experiment, mv.run_id),
            tmp_path / "ui-report.png")
    print(f"screenshots: {sorted(str(p) for p in tmp_path.glob('*.png'))}")
