"""Create vaplan's least-privilege MLflow accounts on a basic-auth server (docs/deploy.md).

Run by the one-shot `mlflow-auth-init` service of docker/compose.yaml (inside the MLflow image,
so it needs nothing but `mlflow`), and by tests/test_mlflow_auth.py against a loopback server.
Idempotent: a second run sets the passwords again (that is how they are rotated) and re-grants.

    MLFLOW_TRACKING_URI=http://mlflow:5000
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD   the admin account
    VAPLAN_TRAINER_PASSWORD / VAPLAN_PROMOTER_PASSWORD / VAPLAN_READER_PASSWORD
    VAPLAN_EXPERIMENTS (default vaplan,vaplan-sweeps,vaplan-ablations)
    VAPLAN_MODELS      (default vaplan-han)

| account    | experiments | registered models | used by |
| ---        | ---         | ---               | ---     |
| `trainer`  | EDIT        | READ              | Ray head and workers: runs, metrics, artifacts |
| `promoter` | EDIT        | EDIT              | the registering step: new versions, tags, aliases |
| `reader`   | READ        | READ              | `vaplan pull` / `vaplan evaluate` |

The promoter needs EDIT on the experiments too: registering a version tags the logged model
(an experiment resource). Every other account starts with nothing (`default_permission =
NO_PERMISSIONS` in the server's basic_auth.ini).

Exit status 0 when every account and grant is in place; 1 with one `error:` line otherwise.
"""

from __future__ import annotations

import os
import sys

ACCOUNTS = ("trainer", "promoter", "reader")
EXPERIMENT_GRANTS = {"trainer": "EDIT", "promoter": "EDIT", "reader": "READ"}
MODEL_GRANTS = {"trainer": "READ", "promoter": "EDIT", "reader": "READ"}  # EDIT moves aliases
DEFAULT_EXPERIMENTS = "vaplan,vaplan-sweeps,vaplan-ablations"
DEFAULT_MODELS = "vaplan-han"
MIN_PASSWORD = 12  # MLflow 3.17's password policy
# The UI opens an experiment in machine-learning mode only with this tag (docs/pipelines.md).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def _names(variable: str, default: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, default).split(",") if name.strip()]


def passwords(env: dict[str, str]) -> dict[str, str]:
    """The three accounts' passwords from VAPLAN_<ACCOUNT>_PASSWORD; ValueError names the
    variable that is missing, still a `change-me` placeholder, or too short."""
    found = {}
    for account in ACCOUNTS:
        variable = f"VAPLAN_{account.upper()}_PASSWORD"
        value = env.get(variable, "")
        if not value:
            raise ValueError(f"{variable} is not set (docker/.env)")
        if "change-me" in value:
            raise ValueError(f"{variable} still holds the change-me placeholder: replace it in "
                             f"docker/.env")
        if len(value) < MIN_PASSWORD:
            raise ValueError(f"{variable} must have at least {MIN_PASSWORD} characters, "
                             f"got {len(value)}")
        found[account] = value
    return found


def _ensure_user(auth, username: str, password: str) -> str:
    """Create `username`, or set its password when it exists; returns what was done."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
    except MlflowException:
        auth.create_user(username, password)
        return "created"
    auth.update_user_password(username, password)
    return "password set"


def _ensure_experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags={KIND_TAG: KIND})
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _ensure_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)


def _grant(auth, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give `username` exactly `permission` on the resource (replacing an earlier grant)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def main() -> int:
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        secrets = passwords(dict(os.environ))
        if not uri.startswith(("http://", "https://")):
            raise ValueError(f"MLFLOW_TRACKING_URI must be the server's http(s) URL, got {uri!r}")
        if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
            raise ValueError("MLFLOW_TRACKING_USERNAME/PASSWORD must name the admin account")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    auth, client = AuthServiceClient(uri), MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        for account in ACCOUNTS:
            print(f"{account}: {_ensure_user(auth, account, secrets[account])}")
        for name in _names("VAPLAN_EXPERIMENTS", DEFAULT_EXPERIMENTS):
            experiment_id = _ensure_experiment(client, name)
            for account, permission in EXPERIMENT_GRANTS.items():
                _grant(auth, account, "experiment", experiment_id, permission)
            print(f"experiment {name} ({experiment_id}): {EXPERIMENT_GRANTS}")
        for name in _names("VAPLAN_MODELS", DEFAULT_MODELS):
            _ensure_model(client, name)
            for account, permission in MODEL_GRANTS.items():
                _grant(auth, account, "registered_model", name, permission)
            print(f"registered model {name}: {MODEL_GRANTS}")
    except Exception as err:  # one line: the admin password is wrong, the server is down, ...
        message = " ".join(str(err).split())[:300]
        print(f"error: setting up accounts on {uri} failed: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
