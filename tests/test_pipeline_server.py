"""A tiny pipeline against a real `mlflow server` subprocess over HTTP (no mocks).

The server runs on a free 127.0.0.1 port with a temp SQLite backend and a temp
`--artifacts-destination`; results are read back through MlflowClient; the server is always
stopped.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines import commands, tracking
from servers import mlflow_server
from pipelines.config import STEP_NAMES, pipeline_config_from_preset
from pipelines.pipeline import run
from pipelines.reuse import OUTPUTS_TAG
from vaplan.metrics import SCORE_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "vaplan-han-server-test"


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root, f"sqlite:///{root}/mlflow.db", "--artifacts-destination",
                       str(root / "artifacts")) as url, pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield url, root
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def result(server_uri):
    url, _ = server_uri
    overrides = ["train.epochs=1", "train.num_threads=1"]
    cfg = pipeline_config_from_preset("sim-tiny", overrides, tracking_uri=url, model_name=MODEL,
                                      progress=False)
    return run(cfg)


def test_pipeline_over_http(server_uri, result):
    url, root = server_uri
    assert result.tracking_uri == url and mlflow.get_tracking_uri() == url

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    children = tracking.child_runs(result.parent_run_id, result.experiment_id)
    assert [r.info.run_name for r in children] == list(STEP_NAMES)
    assert {f"test/{k}" for k in SCORE_KEYS} <= set(parent.data.metrics)
    retrain = next(r for r in children if r.info.run_name == "retrain")
    history = client.get_metric_history(retrain.info.run_id, "epoch/val/seg_type")
    assert [m.step for m in history] == [1]
    outputs = retrain.data.tags[OUTPUTS_TAG]  # train's run when PLD kept PLG's labels
    assert outputs in {retrain.info.run_id, next(r.info.run_id for r in children
                                                 if r.info.run_name == "train")}
    names = {item.path for item in client.list_artifacts(outputs, "checkpoint")}
    assert names == {"checkpoint/han.pt"}
    assert any((root / "artifacts").rglob("han.pt"))  # proxied into --artifacts-destination

    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == result.registration["version"]
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"candidate": str(version.version), "champion": str(version.version)}
    scores = commands.evaluate_registered(f"models:/{MODEL}@champion", "test", tracking_uri=url)
    assert scores == pytest.approx(result.test_scores, abs=1e-4)


# ---- what a user sees: the store read through MLflow's REST API (what the UI reads) --------

STEP_SECTIONS = {"generate_labels": ("plg.",), "train": ("train.",), "denoise": ("pld.",),
                 "retrain": ("train.",), "evaluate": ("pipeline.",),
                 "register": ("registry.", "pipeline.")}
SECTIONS = ("data.", "train.", "plg.", "pld.", "registry.", "labels.", "pipeline.")


def _rest(url: str, path: str, body: dict | None = None, **query: str) -> dict:
    """GET (query) or POST (body) on /api/2.0/mlflow/<path>; the decoded JSON answer."""
    address = f"{url}/api/2.0/mlflow/{path}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(address, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", []) or entity["data"].get("tags", [])}


def test_rest_api_shows_names_descriptions_and_few_tags(server_uri, result):
    url, _ = server_uri
    experiment = _rest(url, "experiments/get", experiment_id=result.experiment_id)["experiment"]
    assert _tags(experiment)["mlflow.experimentKind"] == "custom_model_development"  # ML mode

    parent = _rest(url, "runs/get", run_id=result.parent_run_id)["run"]
    name = parent["info"]["run_name"]
    assert re.fullmatch(r"sim-tiny train\.epochs=1 train\.num_threads=1 [0-9a-f]{4}", name), name
    description = _tags(parent)["mlflow.note.content"]
    assert "**Promotion gate: promoted to `champion`**" in description
    assert "| test | " in description and "**Pseudo labels on val**" in description
    params = _params(parent)
    assert params["train.lr"] == "0.0003" and "lr" not in params
    assert not [key for key in params if not key.startswith(SECTIONS)], sorted(params)

    children = _rest(url, "runs/search", {
        "experiment_ids": [result.experiment_id], "max_results": 100,
        "filter": f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"})["runs"]
    assert sorted(run["info"]["run_name"] for run in children) == sorted(STEP_NAMES)
    for child in children:  # only its own section, under the parent's names and values
        own = _params(child)
        assert own and all(key.startswith(STEP_SECTIONS[child["info"]["run_name"]])
                           for key in own), own
        assert {k: v for k, v in own.items() if k in params} == \
            {k: params[k] for k in own if k in params}

    version = _rest(url, "model-versions/get", name=MODEL,
                    version=result.registration["version"])["model_version"]
    assert len(_tags(version)) <= 8, _tags(version)
    assert {"vaplan.sha256.checkpoint", "vaplan.sha256.labels"} <= set(_tags(version))
    assert "**Promotion gate" in version["description"] and "**Scores**" in version["description"]
    assert commands.logged_scores(MODEL, version=int(version["version"]), tracking_uri=url) == \
        pytest.approx(result.test_scores, abs=1e-9)  # the rest: registration.json of its run
