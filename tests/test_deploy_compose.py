"""The cluster files in docker/ validate here, without a Docker engine (docs/deploy.md).

`docker-compose config -q` (Debian package `docker-compose`, installed by the fixture when
missing and we are root) parses and checks docker/compose.yaml against the Compose schema. The
structural checks below need no Docker at all: services, healthchecks, volumes, the GPU
reservation, `--allowed-hosts` (run through MLflow's own host check), Ray token settings,
pinned images that match the project's versions, secrets only from docker/.env, and a
Dockerfile that installs with the same pip steps as the Makefile.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
SERVICES = {"postgres", "minio", "minio-init", "mlflow", "mlflow-auth-init", "ray-head",
            "ray-worker"}
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RAY_AUTH_TOKEN", "MLFLOW_ADMIN_PASSWORD",
           "MLFLOW_FLASK_SERVER_SECRET_KEY", "VAPLAN_TRAINER_PASSWORD",
           "VAPLAN_PROMOTER_PASSWORD", "VAPLAN_READER_PASSWORD")
LOOPBACK_BIND = "${BIND_ADDR:-127.0.0.1}:"
VAR_REF = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")  # ${NAME}, ${NAME:-x}, ${NAME:?msg}


# ---------------------------------------------------------------- helpers


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [dep for extra in project["optional-dependencies"].values()
                                      for dep in extra]  # the library's, then the extras'
    pins = {}
    for dep in deps:
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([\w.]+)$", dep.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error} (enough for these files)."""

    def repl(m: re.Match) -> str:
        name, op, arg = m[1], m[2], m[3]
        value = env.get(name, "")
        if op and op.endswith("-") and not value:
            return arg
        if op and op.endswith("?") and not value:
            raise KeyError(f"{name}: {arg}")
        return value

    return VAR_REF.sub(repl, text.replace("$$", "\0")).replace("\0", "$")


def _flag(command: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in an argv list."""
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """`pip install` argument lists, without --quiet and without the pip self-upgrade."""
    found = []
    for line in lines:
        if "pip" not in line or "install" not in line:  # other recipes may not be shell-quotable
            continue
        words = shlex.split(line.split("&&")[0].replace("$(PY) -m ", ""))
        if "pip" in words and "install" in words:
            args = words[words.index("install") + 1:]
            args = [a for a in args if a not in ("--quiet", "-q")]
            if "--upgrade" in args and "pip" in args:
                continue
            found.append(args)
    return found


def _dockerfile_runs() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line[len("RUN "):] for line in text.splitlines() if line.startswith("RUN ")]


# ---------------------------------------------------------------- docker-compose config


def _ensure_docker_compose() -> str | None:
    """The docker-compose binary; installs Debian's package (idempotent) when missing."""
    found = shutil.which("docker-compose")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "docker-compose"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(install, env=env, capture_output=True, timeout=600)
    return shutil.which("docker-compose")


@pytest.fixture(scope="module")
def docker_compose() -> str:
    found = _ensure_docker_compose()
    if found is None:
        pytest.skip("docker-compose unavailable and not installable here "
                    "(needs root and apt-get: apt-get install -y docker-compose)")
    return found


def _compose_config(docker_compose: str, env_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _env_example()}
    return subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )


def test_docker_compose_config_validates(docker_compose):
    out = _compose_config(docker_compose, ENV_EXAMPLE)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("secret", ["RAY_AUTH_TOKEN", "MLFLOW_ADMIN_PASSWORD"])
def test_docker_compose_config_refuses_missing_secrets(docker_compose, tmp_path, secret):
    env_file = tmp_path / "missing.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _env_example().items()
                                if k != secret))
    out = _compose_config(docker_compose, env_file)
    assert out.returncode != 0 and secret in out.stderr


# ---------------------------------------------------------------- structure (no docker)


def test_services_volumes_and_healthchecks():
    compose = _compose()
    services = compose["services"]
    assert set(services) == SERVICES
    for name in ("postgres", "minio", "mlflow", "ray-head"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    named = set(compose["volumes"])
    for name, target in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        mounts = dict(v.split(":", 1)[::-1] for v in services[name]["volumes"])
        assert mounts.get(target) in named, f"{name}: {target} is not on a named volume"
    assert services["minio-init"]["restart"] == "no"
    depends = services["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])


def test_images_are_pinned_to_the_project_versions():
    pins = _pyproject_pins()
    services = _compose()["services"]
    for name, svc in services.items():
        image = _interpolate(svc["image"], _env_example())
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and "latest" not in tag, f"{name}: image {image!r} is not pinned"
    assert services["mlflow"]["image"] == f"ghcr.io/mlflow/mlflow:v{pins['mlflow']}-full"
    base = re.search(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)[1]
    assert base == f"rayproject/ray:{pins['ray']}-py311-gpu"
    assert services["ray-head"]["build"] == services["ray-worker"]["build"]
    assert services["ray-head"]["build"]["dockerfile"] == "docker/Dockerfile"


def test_mlflow_server_postgres_s3_served_artifacts_and_allowed_hosts():
    from mlflow.server.security_utils import is_allowed_host_header

    env = _env_example()
    svc = _compose()["services"]["mlflow"]
    command = [_interpolate(arg, env) for arg in svc["command"]]
    assert command[:2] == ["mlflow", "server"]
    backend = _flag(command, "--backend-store-uri") or svc["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert _interpolate(backend, env).startswith("postgresql://")
    assert "@postgres:5432/" in backend
    assert _flag(command, "--artifacts-destination").startswith("s3://")
    assert "--serve-artifacts" in command
    assert svc["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    allowed = _flag(command, "--allowed-hosts").split(",")
    # The Host headers clients send: containers use the service name, the host uses localhost.
    for host in ("mlflow:5000", "mlflow", "localhost:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com")
    assert _flag(command, "--host") == "0.0.0.0"


def test_gpu_workers_scalable_and_head_published():
    services = _compose()["services"]
    worker, head = services["ray-worker"], services["ray-head"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert "container_name" not in worker and "ports" not in worker  # --scale needs both unset
    assert "--address=ray-head:6379" in worker["command"]
    head_command = " ".join(head["command"])
    assert "--head" in head_command and "--dashboard-host=0.0.0.0" in head_command
    assert any(str(p).endswith(":8265") for p in head["ports"])
    for svc in (head, worker):
        size = _interpolate(str(svc["shm_size"]), _env_example())
        assert re.fullmatch(r"\d+[gG][bB]?", size) and int(re.match(r"\d+", size)[0]) >= 2


def test_ray_token_auth_consistent_on_head_and_workers():
    services = _compose()["services"]
    head_env, worker_env = services["ray-head"]["environment"], services["ray-worker"]["environment"]
    for env in (head_env, worker_env):
        assert env["RAY_AUTH_MODE"] == "token"
        assert VAR_REF.fullmatch(env["RAY_AUTH_TOKEN"])[1] == "RAY_AUTH_TOKEN"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        # Ray trials and drivers log as `trainer` (docs/deploy.md, "Accounts").
        assert env["MLFLOW_TRACKING_USERNAME"] == "trainer"
        assert VAR_REF.fullmatch(env["MLFLOW_TRACKING_PASSWORD"])[1] == "VAPLAN_TRAINER_PASSWORD"
    # The registering step runs in the driver, on the head: the promoter account is there only.
    promoter = {k: v for k, v in head_env.items() if k.startswith("VAPLAN_PROMOTER_")}
    assert promoter["VAPLAN_PROMOTER_USERNAME"] == "promoter"
    assert VAR_REF.fullmatch(promoter["VAPLAN_PROMOTER_PASSWORD"])[1] == "VAPLAN_PROMOTER_PASSWORD"
    assert {k: v for k, v in head_env.items() if k not in promoter} == worker_env


def test_secrets_come_from_env_file_only():
    raw = COMPOSE.read_text().replace("$$", "")  # $${X}: the container's shell, not Compose
    example = _env_example()
    referenced = {m[1] for m in VAR_REF.finditer(raw)}
    assert referenced <= set(example), f"not in .env.example: {referenced - set(example)}"
    for key in SECRETS:
        assert "change-me" in example[key], f"{key}: .env.example must hold a placeholder"
    for match in VAR_REF.finditer(raw):  # a secret never falls back to a default value
        if match[1] in SECRETS:
            assert not (match[2] or "").endswith("-"), f"{match[0]}: a secret with a default"
    secret_keys = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
    for name, svc in _compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secret_keys.search(key):
                assert VAR_REF.search(str(value)), f"{name}.{key} is hard-coded"
    assert "postgresql://" not in raw.replace("postgresql://${", "")  # no literal credentials


def test_dockerfile_installs_like_the_makefile():
    makefile = REPO / "Makefile"
    if not makefile.exists():
        pytest.skip("no Makefile yet")
    make_installs = _pip_installs(makefile.read_text().splitlines())
    docker_installs = _pip_installs(_dockerfile_runs())
    assert make_installs, "no pip install lines in the Makefile"
    assert docker_installs == make_installs, (
        f"Dockerfile pip steps {docker_installs} differ from the Makefile's {make_installs}")
    assert ["-r", "requirements.lock"] in docker_installs
    assert "COPY --chown=ray:users requirements.lock ./" in DOCKERFILE.read_text()
    pins = _pyproject_pins()
    torch_line = next(args for args in docker_installs if any(a.startswith("torch==") for a in args))
    assert f"torch=={pins['torch']}" in torch_line
    assert f"torchvision=={pins['torchvision']}" in torch_line


def test_lock_pins_the_project_stack_without_the_project():
    lock = REPO / "requirements.lock"
    if not lock.exists():
        pytest.skip("no requirements.lock yet")
    lines = [ln.strip() for ln in lock.read_text().splitlines() if ln.strip()]
    pinned = dict(ln.lower().split("==", 1) for ln in lines if "==" in ln and not ln.startswith("#"))
    pins = _pyproject_pins()
    for name in ("ray", "mlflow", "torch"):
        assert pinned.get(name) == pins[name], f"requirements.lock: {name} != pyproject"
    assert not any(ln.startswith("-e") or ln.lower().startswith("vaplan") for ln in lines), (
        "requirements.lock must not install the project itself (the image copies it)")


def test_dockerignore_keeps_the_context_small_and_the_sources_in():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for must in (".git", ".venv", "mlruns", "docker/.env"):
        assert must in patterns, f".dockerignore must exclude {must}"
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.M)
    sources = {src for line in copied for src in line.split()}
    assert sources >= {"requirements.lock", "pyproject.toml", "README.md", "vaplan"}
    for src in sources:
        assert src not in patterns, f".dockerignore excludes {src}, which the Dockerfile copies"
        assert (REPO / src).exists(), f"the Dockerfile copies {src}, which does not exist"


# ---------------------------------------------------------------- locked by default (issue 17)


def test_published_ports_bind_to_loopback_unless_asked():
    services = _compose()["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"mlflow", "ray-head"}  # never MinIO, PostgreSQL or the workers
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith(LOOPBACK_BIND), f"{name}: {port} not on ${{BIND_ADDR}}"
            assert _interpolate(str(port), _env_example()).startswith("127.0.0.1:")
            assert _interpolate(str(port), {}).startswith("127.0.0.1:")  # BIND_ADDR unset
    assert _env_example()["BIND_ADDR"] == "127.0.0.1"


def test_mlflow_runs_basic_auth_with_its_own_accounts():
    services = _compose()["services"]
    svc, init, head = services["mlflow"], services["mlflow-auth-init"], services["ray-head"]
    assert "--app-name=basic-auth" in svc["command"]
    env = svc["environment"]
    for key, var in (("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
                     ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SERVER_SECRET_KEY")):
        ref = VAR_REF.fullmatch(env[key])
        assert ref[1] == var and ref[2] == ":?", f"mlflow.{key} must be required"
    # One-shot init after the server is healthy; the Ray head waits for it.
    assert init["restart"] == "no" and init["image"] == svc["image"]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert head["depends_on"]["mlflow-auth-init"]["condition"] == \
        "service_completed_successfully"
    mount = next(v for v in init["volumes"] if "mlflow_auth_init.py" in v)
    assert (DOCKER / mount.split(":")[0]).is_file()
    assert mount.split(":")[1] in init["entrypoint"]
    for account in ("TRAINER", "PROMOTER", "READER"):
        assert VAR_REF.fullmatch(init["environment"][f"VAPLAN_{account}_PASSWORD"])[2] == ":?"


def _run_mlflow_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The mlflow service's entrypoint script, run by sh here with `cat` as the command."""
    svc = _compose()["services"]["mlflow"]
    example = _env_example()
    script = [_interpolate(arg, example) for arg in svc["entrypoint"]]
    assert script[:2] == ["/bin/sh", "-c"]
    values = {k: _interpolate(str(v), example) for k, v in svc["environment"].items()}
    values.update(env, MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"),
                  PATH=os.environ["PATH"])
    return subprocess.run(["sh", "-c", script[2], script[3], "cat",
                           values["MLFLOW_AUTH_CONFIG_PATH"]],
                          capture_output=True, text=True, env=values, timeout=60)


def test_mlflow_entrypoint_refuses_placeholders_and_writes_the_auth_config(tmp_path):
    refused = _run_mlflow_entrypoint(tmp_path, {})  # .env.example's change-me values
    assert refused.returncode == 1 and "MLFLOW_ADMIN_PASSWORD" in refused.stderr
    uri = "postgresql://mlflow:p%40ss%25word@postgres:5432/mlflow"
    out = _run_mlflow_entrypoint(tmp_path, {"MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 16,
                                            "MLFLOW_FLASK_SERVER_SECRET_KEY": "y" * 32,
                                            "MLFLOW_BACKEND_STORE_URI": uri})
    assert out.returncode == 0, out.stderr
    config = configparser.ConfigParser()  # as mlflow.server.auth.config.read_auth_config
    config.read(tmp_path / "basic_auth.ini")
    assert config["mlflow"]["database_uri"] == uri  # the users live in the same PostgreSQL
    assert config["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert (tmp_path / "basic_auth.ini").stat().st_mode & 0o077 == 0  # umask 077
