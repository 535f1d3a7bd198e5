"""The pure helpers the MLflow/Ray layer uses (no store, no Ray): model URIs, local stores,
run owners, doctor's service checks and the label sweeps' objectives. Bad input first."""

from __future__ import annotations

import os
import socket

import pytest
from servers import dead_pid

from vaplan import runs, services, store_uri
from vaplan.errors import ConfigError
from vaplan.sweep_scores import PLG_OBJECTIVE, plg_scores


@pytest.mark.parametrize("uri", ["models:/vaplan-han", "vaplan-han@champion", "models:/x/v3",
                                 "models:/a@b/3", ""])
def test_bad_model_uris_are_config_errors_naming_the_forms(uri):
    with pytest.raises(ConfigError, match=r"must look like models:/<name>@<alias> or "):
        store_uri.parse_model_uri(uri)


def test_model_uris_by_alias_and_version():
    assert store_uri.parse_model_uri("models:/vaplan-han@champion") == \
        ("vaplan-han", "champion", None)
    assert store_uri.parse_model_uri("models:/vaplan-han/3") == ("vaplan-han", None, "3")


def test_local_store_missing_and_a_new_store_needs_a_writable_folder(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert store_uri.local_store_missing(uri) == db
    assert store_uri.local_store_missing(str(tmp_path)) is None  # a file store that exists
    assert store_uri.local_store_missing("http://127.0.0.1:5000") is None  # a server: ask it
    check = services.new_sqlite_store(uri)
    assert check.status == "ok" and "not created yet" in check.detail
    db.parent.mkdir()
    db.write_bytes(b"x")
    assert store_uri.local_store_missing(uri) is None and services.new_sqlite_store(uri) is None
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores the mode
        pytest.skip("running as root: every folder is writable")
    check = services.new_sqlite_store(f"sqlite:///{locked}/sub/mlflow.db")
    assert check.status == "fail" and f"{locked} is not writable" in check.detail


def test_check_ray_names_an_address_nobody_listens_on():
    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = services.check_ray(f"127.0.0.1:{port}")
    assert check.status == "fail" and f"cannot connect to 127.0.0.1:{port}" in check.detail
    assert services.check_ray("local").status == "ok"


def test_owner_gone_for_a_dead_or_reused_pid_only():
    me = runs.process_tags()
    assert runs.owner_gone({runs.PID_TAG: "x"}, 0.0) is None  # no pid: left alone
    assert runs.owner_gone(me, 0.0) is None
    gone = runs.owner_gone({runs.PID_TAG: str(dead_pid())}, 0.0)
    assert gone is not None and gone.endswith("is gone")
    assert runs.owner_gone({**me, runs.PID_STARTED_TAG: "1000.00"}, 0.0) is not None


def test_plg_objective_is_the_mean_of_the_two_modalities():
    scores = plg_scores({"audio/average": 40.0, "visual/average": 60.0, "audio/seg": 1.0})
    assert scores == {"plg/val/audio/average": 40.0, "plg/val/visual/average": 60.0,
                      "plg/val/audio/seg": 1.0, PLG_OBJECTIVE: 50.0}
    with pytest.raises(KeyError):
        plg_scores({"audio/average": 40.0})
