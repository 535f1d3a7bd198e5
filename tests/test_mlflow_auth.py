"""The cluster's locked registry, proven on loopback (docs/deploy.md, "Accounts").

A real `mlflow server --app-name basic-auth` (tests/servers.py: SQLite backend and auth
database in tmp, a free 127.0.0.1 port, `default_permission = NO_PERMISSIONS` as in
docker/compose.yaml) whose accounts are made by the same script as the compose cluster's
`mlflow-auth-init` service (docker/mlflow_auth_init.py). Then: no credentials -> 401; the
sim-tiny pipeline as `trainer` with the `promoter` account for the registering step registers
and promotes; `reader` pulls and evaluates but moving `champion` is refused (403) and the
champion stays; a wrong password is one `error:` line naming the server.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines import commands, registry, tracking
from pipelines.config import pipeline_config_from_preset
from pipelines.pipeline import run
from servers import mlflow_auth_server
from vaplan import store_uri
from vaplan.errors import TrackingAuthError

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[1]
MODEL = "vaplan-han"  # made by the init script, with the grants of docs/deploy.md
CREDENTIAL_VARS = (*store_uri.CREDENTIALS, *tracking.PROMOTER)


def _init_script():
    spec = importlib.util.spec_from_file_location("mlflow_auth_init",
                                                  REPO / "docker" / "mlflow_auth_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, passwords by account) of a basic-auth server whose accounts the init script made."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    passwords = {name: secrets.token_urlsafe(16)
                 for name in ("admin", "trainer", "promoter", "reader")}
    with mlflow_auth_server(root, passwords["admin"], "--artifacts-destination",
                            str(root / "artifacts")) as url, \
            pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", *CREDENTIAL_VARS):
            patch.delenv(name, raising=False)
        with pytest.MonkeyPatch.context() as admin:
            admin.setenv("MLFLOW_TRACKING_URI", url)
            admin.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            admin.setenv("MLFLOW_TRACKING_PASSWORD", passwords["admin"])
            for name in ("trainer", "promoter", "reader"):
                admin.setenv(f"VAPLAN_{name.upper()}_PASSWORD", passwords[name])
            assert _init_script().main() == 0
        try:
            yield url, passwords
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


@contextlib.contextmanager
def as_account(server, name: str, password: str | None = None, promoter: bool = False):
    """MLflow credentials of account `name` (and the promoter's for registry writes)."""
    url, passwords = server
    with pytest.MonkeyPatch.context() as patch:
        for var in CREDENTIAL_VARS:
            patch.delenv(var, raising=False)
        patch.setenv("MLFLOW_TRACKING_USERNAME", name)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", password or passwords[name])
        if promoter:
            patch.setenv("VAPLAN_PROMOTER_USERNAME", "promoter")
            patch.setenv("VAPLAN_PROMOTER_PASSWORD", passwords["promoter"])
        yield MlflowClient(tracking_uri=url, registry_uri=url)


def _status(url: str, user: str | None = None, password: str = "") -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def result(server):
    """The sim-tiny pipeline (1 epoch) as `trainer`, registering as `promoter`."""
    url, _ = server
    cfg = pipeline_config_from_preset("sim-tiny", ["train.epochs=1", "train.num_threads=1"],
                                      tracking_uri=url, model_name=MODEL, progress=False)
    with as_account(server, "trainer", promoter=True):
        return run(cfg)


def test_requests_without_valid_credentials_get_401(server):
    url, passwords = server
    assert _status(url) == 401
    assert _status(url, "reader", "not-the-password") == 401
    assert _status(url, "reader", passwords["reader"]) == 200


def test_pipeline_as_trainer_registers_and_promotes_as_promoter(server, result):
    version = result.registration["version"]
    assert result.registration["decision"]["promoted"] is True
    with as_account(server, "reader") as client:
        aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
        assert aliases == {"candidate": version, "champion": version}
        tags = client.get_model_version(MODEL, version).tags
        assert tags[registry.DATASET_TAG] and tags["vaplan.promotion.decision"] == "promoted"
        assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_trainer_alone_cannot_move_aliases(server, result):
    """Without the promoter account the gate's registry writes are refused: one line."""
    version = result.registration["version"]
    with as_account(server, "trainer") as client:
        with pytest.raises(MlflowException) as raw:
            client.set_registered_model_alias(MODEL, "champion", version)
        assert raw.value.get_http_status_code() == 403
        with pytest.raises(TrackingAuthError) as err:
            registry.apply_promotion_gate(MODEL, version, [50.0, 60.0])
    assert "(403)" in str(err.value) and "'trainer'" in str(err.value)
    assert server[0] in str(err.value) and "\n" not in str(err.value)


def test_reader_pulls_and_evaluates_but_cannot_move_champion(server, result, tmp_path,
                                                             sim_tiny):
    url, _ = server
    version = result.registration["version"]
    with as_account(server, "reader") as client:
        folder = commands.pull(MODEL, str(tmp_path / "champion"), tracking_uri=url)
        assert {p.name for p in folder.iterdir()} >= {"checkpoint.pt", "labels.parquet",
                                                       "config.json", "version.json"}
        scores = commands.evaluate_registered(f"models:/{MODEL}@champion", "test",
                                              tracking_uri=url, dataset=sim_tiny)
        assert scores == pytest.approx(result.test_scores, abs=1e-4)
        for alias in ("champion", "challenger"):
            with pytest.raises(MlflowException) as refused:
                client.set_registered_model_alias(MODEL, alias, version)
            assert refused.value.get_http_status_code() == 403
        with pytest.raises(MlflowException) as refused:
            client.delete_registered_model_alias(MODEL, "champion")
        assert refused.value.get_http_status_code() == 403
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == version


def test_wrong_password_is_one_error_line_naming_the_server(server, tmp_path, capsys):
    from vaplan.cli import run_app

    url, _ = server
    with as_account(server, "reader", password="wrong-password-123"):
        status = run_app(["pull", "--dest", str(tmp_path / "x"), "--tracking-uri", url])
    err = capsys.readouterr().err.strip()
    assert status == 2 and not (tmp_path / "x").exists()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert f"the MLflow server {url} refused the credentials of account 'reader' (401)" in err
    with as_account(server, "reader", password="wrong-password-123"), \
            pytest.raises(TrackingAuthError, match="401"):
        tracking.prepare_store(url, "vaplan")


def test_promoter_needs_both_variables_and_urls_hide_passwords(monkeypatch):
    monkeypatch.setenv("VAPLAN_PROMOTER_USERNAME", "promoter")
    monkeypatch.delenv("VAPLAN_PROMOTER_PASSWORD", raising=False)
    with pytest.raises(TrackingAuthError, match="VAPLAN_PROMOTER_PASSWORD is not"):
        with tracking.promoter_credentials():
            pass
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "trainer")
    message = store_uri.auth_message(401, "http://trainer:s3cret@mlflow.lab:5000")
    assert "s3cret" not in message and "http://mlflow.lab:5000" in message


def test_init_script_refuses_placeholders_and_short_passwords():
    init = _init_script()
    good = {f"VAPLAN_{n}_PASSWORD": "x" * 16 for n in ("TRAINER", "PROMOTER", "READER")}
    assert set(init.passwords(good)) == {"trainer", "promoter", "reader"}
    with pytest.raises(ValueError, match="VAPLAN_READER_PASSWORD still holds the change-me"):
        init.passwords({**good, "VAPLAN_READER_PASSWORD": "change-me-reader-pw"})
    with pytest.raises(ValueError, match="VAPLAN_TRAINER_PASSWORD must have at least 12"):
        init.passwords({**good, "VAPLAN_TRAINER_PASSWORD": "short"})
    with pytest.raises(ValueError, match="VAPLAN_PROMOTER_PASSWORD is not set"):
        init.passwords({k: v for k, v in good.items() if "PROMOTER" not in k})
