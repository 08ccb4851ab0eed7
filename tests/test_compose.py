"""Static validation of the production stack: docker-compose.yml and the Dockerfiles.

No Docker engine is needed. The compose file is interpolated with
deploy/compose/.env.example the way Compose does it, validated against the vendored
Compose Specification JSON schema (deploy/compose/compose-spec.json, from the
compose-spec project, Apache-2.0), and checked against this project's deployment rules.
When a Compose binary is on PATH (`docker compose` v2 or the `docker-compose` package),
`config -q` is run as well.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.config import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA_FILE = COMPOSE_DIR / "compose-spec.json"
INIT_BUCKET = COMPOSE_DIR / "init-bucket.sh"
INIT_DB = COMPOSE_DIR / "init-db.sh"
DOCKER_DIR = ROOT / "deploy" / "docker"

GPU_SERVICES = ("worker-gpu", "training")
PUBLISHED_SERVICES = {"flower", "minio", "gateway"}
ANCHOR_KEY = "x-faceauth-env"
# Names of variables that hold credentials (in .env.example and in compose environments).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER|REDISCLI_AUTH)")
PLACEHOLDER = "change-me"


# --- Compose-style interpolation ------------------------------------------------------------
class MissingVariableError(ValueError):
    """A `${VAR:?msg}` / `${VAR?msg}` reference found no value: Compose refuses the file."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


_BRACED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}$]*))?\}")
_BARE = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?m}`, `${VAR?m}`,
    `${VAR:+r}`, `${VAR+r}` and the `$$` escape as Compose does (no nested expressions:
    anything else after a `$` is an error, so the helper cannot silently mis-read the file).
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        braced = _BRACED.match(text, i)
        bare = None if braced else _BARE.match(text, i)
        match = braced or bare
        if match is None:
            raise ValueError(f"unsupported interpolation at {text[i : i + 30]!r}")
        name, op, arg = match["name"], match.groupdict().get("op"), match.groupdict().get("arg")
        value = env.get(name)
        is_set, non_empty = value is not None, bool(value)
        present = non_empty if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            out.append(value if present and value is not None else (arg or ""))
        elif op in (":?", "?"):
            if not present or value is None:
                raise MissingVariableError(name, arg or "required variable is missing")
            out.append(value)
        elif op in (":+", "+"):
            out.append(arg or "" if present else "")
        else:
            out.append(value or "")
        i = match.end()
    return "".join(out)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys, as in Compose) of a loaded YAML document."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def parse_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a dotenv file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}:{number}: {raw!r}"
        assert key not in env, f"{path.name}:{number}: {key} defined twice"
        env[key] = value.strip().strip("'\"")
    return env


def _referenced_variables(text: str) -> dict[str, set[str | None]]:
    """Every `${VAR...}` of the raw compose text with the operators it is used with (None for
    a plain `${VAR}`); `$${...}` is left to the container's shell and is not counted."""
    found: dict[str, set[str | None]] = {}
    for m in _BRACED.finditer(text.replace("$$", "")):
        found.setdefault(m["name"], set()).add(m["op"])
    return found


# --- fixtures -------------------------------------------------------------------------------
def _strip_comments(text: str) -> str:
    """The YAML without comments (the file has no `#` inside values), so prose that mentions
    `${VAR:?...}` or `change-me` is not mistaken for configuration."""
    lines = (re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    return "\n".join(line for line in lines if line.strip())


@pytest.fixture(scope="module")
def compose_text() -> str:
    """The compose file's configuration lines, comments removed."""
    return _strip_comments(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def raw_doc(compose_text: str) -> dict[str, Any]:
    doc = yaml.safe_load(compose_text)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def doc(raw_doc: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    resolved = interpolate_tree(raw_doc, example_env)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(doc["services"])


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # raises SchemaError if the vendored copy is corrupt
    return cls(schema)


def _is_one_shot(service: Mapping[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def _is_app_service(service: Mapping[str, Any]) -> bool:
    """A service running this project's code: built from one of deploy/docker's files."""
    build = service.get("build")
    return isinstance(build, dict) and str(build.get("dockerfile", "")).startswith("deploy/docker/")


def _command_text(service: Mapping[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def _service_volumes(service: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume entry, short or long syntax."""
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            yield source, target, len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            yield entry.get("source", ""), entry["target"], bool(entry.get("read_only", False))


# --- the schema -----------------------------------------------------------------------------
def test_vendored_schema_is_the_compose_specification(
    schema: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert schema["title"] == "Compose Specification"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert isinstance(validator, jsonschema.Draft202012Validator)
    assert (COMPOSE_DIR / "LICENSE.compose-spec").read_text().lstrip().startswith("Apache License")


def test_compose_file_validates_against_the_compose_specification(
    doc: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("redis", "imagee", "redis:7"),  # unknown service key
        ("postgres", "healthcheck", {"test": ["CMD", "true"], "interval": 10}),  # not a string
        ("worker-gpu", "depends_on", {"redis": {"condition": "service_ready"}}),  # bad enum
    ],
)
def test_schema_rejects_broken_services(
    doc: dict[str, Any],
    validator: jsonschema.protocols.Validator,
    service: str,
    key: str,
    value: Any,
) -> None:
    """Control for the test above: the validator does reject real mistakes."""
    broken = copy.deepcopy(doc)
    broken["services"][service][key] = value
    assert list(validator.iter_errors(broken))


# --- interpolation and secrets --------------------------------------------------------------
def test_interpolation_helper_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a-${SET}-$SET-$$SET", env) == "a-v-v-$SET"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "d||d"
    assert interpolate("${SET:+r}|${EMPTY:+r}|${EMPTY+r}", env) == "r||r"
    assert interpolate("${EMPTY?ok}", env) == ""
    with pytest.raises(MissingVariableError, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(ValueError, match="unsupported"):
        interpolate("${A:-${B}}", env)


def test_env_example_holds_only_placeholder_secrets(example_env: dict[str, str]) -> None:
    secrets = {key: value for key, value in example_env.items() if SECRET_NAME.search(key)}
    passwords = {key for key in secrets if re.search("PASSWORD|SECRET", key)}
    assert passwords >= {
        "POSTGRES_PASSWORD",
        "POSTGRES_OWNER_PASSWORD",
        "POSTGRES_APP_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "FACEAUTH_S3_SECRET_KEY",
        "FACEAUTH_FLOWER_PASSWORD",
    }
    assert all(example_env[key] == PLACEHOLDER for key in passwords), secrets
    # Stable project name, so the volumes are always faceauth_models, faceauth_postgres-data...
    assert example_env["COMPOSE_PROJECT_NAME"] == "faceauth"


def test_every_required_variable_is_documented_in_env_example(
    compose_text: str, example_env: dict[str, str]
) -> None:
    referenced = _referenced_variables(compose_text)
    required = {name for name, ops in referenced.items() if ops & {":?", "?", None}}
    assert required <= set(example_env), sorted(required - set(example_env))
    # and nothing in .env.example is dead weight
    passthrough = {
        key for key, value in yaml.safe_load(compose_text)[ANCHOR_KEY].items() if value is None
    }
    used = set(referenced) | passthrough | {"COMPOSE_PROJECT_NAME"}
    assert set(example_env) <= used, sorted(set(example_env) - used)


def test_secrets_are_required_so_compose_refuses_to_start_without_them(
    compose_text: str, raw_doc: dict[str, Any], example_env: dict[str, str]
) -> None:
    referenced = _referenced_variables(compose_text)
    secrets = sorted(name for name in example_env if SECRET_NAME.search(name))
    assert len(secrets) >= 7, secrets
    for name in secrets:
        assert referenced.get(name) == {":?"}, f"{name} must always be ${{{name}:?...}}"
        for missing in ({}, {name: ""}):
            env = {k: v for k, v in example_env.items() if k != name} | missing
            with pytest.raises(MissingVariableError) as excinfo:
                interpolate_tree(raw_doc, env)
            assert excinfo.value.name == name


def test_compose_file_contains_no_literal_secret(compose_text: str) -> None:
    assert PLACEHOLDER not in compose_text
    assignment = re.compile(
        r"^\s*(?:-\s+)?[A-Za-z0-9_]*(?:PASSWORD|SECRET|TOKEN|_KEY|_AUTH)(?::\s+|=)(?P<value>.+)$",
        re.IGNORECASE,
    )
    flag = re.compile(r"--(?:requirepass|password|basic-auth)[= ](?P<value>\S+)")
    checked = 0
    for line in compose_text.splitlines():
        for pattern in (assignment, flag):
            for m in pattern.finditer(line):
                # from .env through Compose (${...}) or from the container's env ("$$...")
                value = m["value"].strip().strip("'\"")
                assert value.startswith(("${", "$$")), f"literal secret: {line.strip()}"
                checked += 1
        # scheme://user:password@host: the password part must be one interpolation
        for m in re.finditer(r"://(?P<userinfo>[^/\s@]*)@", _BRACED.sub("<var>", line)):
            password = m["userinfo"].partition(":")[2]
            assert password in ("", "<var>"), f"literal password in URL: {line.strip()}"
            checked += 1
    assert checked >= 14  # the patterns do see the credential lines


def test_minio_root_credentials_reach_only_minio_and_its_init_job(
    services: dict[str, dict[str, Any]],
) -> None:
    holders = {
        name
        for name, service in services.items()
        if {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & set(service.get("environment") or {})
    }
    assert holders == {"minio", "minio-init"}
    assert not any(
        "env_file" in service for service in services.values() if _is_app_service(service)
    )


# --- services -------------------------------------------------------------------------------
def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "redis",
        "postgres",
        "minio",
        "minio-init",
        "migrate",
        "worker-gpu",
        "worker-io",
        "flower",
        "gateway",
        "training",
    }


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_referenced_dockerfiles_exist_with_their_build_args(
    services: dict[str, dict[str, Any]],
) -> None:
    flavours: dict[str, str] = {}
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        # BuildKit's per-Dockerfile ignore file keeps .venv, .git and .env out of the context
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        rules = [ln for ln in ignore.read_text().splitlines() if ln and not ln.startswith("#")]
        assert rules[0] == "*" and not {"!.venv", "!.env", "!.git"} & set(rules), ignore
        text = dockerfile.read_text()
        for arg in build.get("args", {}):
            assert re.search(rf"^ARG {arg}\b", text, re.M), f"{name}: ARG {arg} not declared"
        if "ORT_FLAVOUR" in build.get("args", {}):
            flavours[name] = build["args"]["ORT_FLAVOUR"]
    assert flavours == {
        "migrate": "cpu",
        "worker-gpu": "gpu",
        "worker-io": "cpu",
        "flower": "cpu",
        "gateway": "cpu",
    }
    # one tag per flavour, so the CPU services share one image
    assert {services[name]["image"] for name, f in flavours.items() if f == "cpu"} == {
        "faceauth-worker:cpu"
    }


def test_worker_dockerfile_swaps_in_gpu_runtime_and_headless_opencv() -> None:
    text = (DOCKER_DIR / "worker.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-cudnn-runtime-", text, re.M)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\} AS base-gpu$", text, re.M)
    assert re.search(r"^FROM base-\$\{ORT_FLAVOUR\} AS worker$", text, re.M)
    # Both flavours carry the face mesh of the quality gate (the facemesh extra).
    assert 'pip install "/src[gpu,facemesh]"' in text
    assert 'pip install "/src[cpu,gateway,facemesh]"' in text
    assert "pip uninstall -y opencv-python opencv-contrib-python" in text
    assert "pip uninstall -y onnxruntime;" in text
    assert '--force-reinstall "onnxruntime-gpu==' in text
    assert '--force-reinstall "opencv-python-headless==' in text
    assert re.search(r"^USER 10001:10001$", text, re.M)  # unprivileged


def test_training_dockerfile_installs_the_training_extra() -> None:
    text = (DOCKER_DIR / "training.Dockerfile").read_text()
    assert 'pip install "/src[training,cpu]"' in text
    assert '--force-reinstall "opencv-python-headless==' in text
    assert re.search(r"^USER 10001:10001$", text, re.M)  # unprivileged


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if _is_one_shot(service):
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name


def test_workers_are_healthy_only_once_their_start_checks_passed(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("worker-gpu", "worker-io"):
        service = services[name]
        ready = service["environment"]["FACEAUTH_WORKER_READY_FILE"]
        assert str(Path(ready).parent) in service["tmpfs"], name  # gone with the container
        command = service["healthcheck"]["test"][1]
        assert command.startswith('test -f "$FACEAUTH_WORKER_READY_FILE" &&'), name  # $$ resolved
    assert "FACEAUTH_WORKER_LOAD_MODELS_AT_START" not in services["worker-gpu"]["environment"]
    assert services["worker-io"]["environment"]["FACEAUTH_WORKER_LOAD_MODELS_AT_START"] == "false"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict), f"{name} -> {target}: use the long form"
            dependency = services[target]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in dependency, f"{name} waits on {target}'s missing check"
            else:
                assert spec["condition"] == "service_completed_successfully", (name, target)
                assert _is_one_shot(dependency), f"{target} never completes"
    for worker in ("worker-gpu", "worker-io"):
        deps = services[worker]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
        assert {"redis", "postgres", "minio"} <= set(deps)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}


def test_gpu_services_reserve_one_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        devices = (
            service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        )
        if name in GPU_SERVICES:
            assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
        else:
            assert devices is None, f"{name} should not hold a GPU"


def test_workers_consume_the_configured_queues(services: dict[str, dict[str, Any]]) -> None:
    fields = Settings.model_fields
    defaults = {name: fields[name].default for name in ("queue_inference", "queue_io")}
    gpu = services["worker-gpu"]["command"]
    assert gpu[:4] == ["celery", "-A", "workers.celery_app:app", "worker"]
    assert gpu[gpu.index("-Q") + 1] == defaults["queue_inference"]
    assert gpu[gpu.index("--concurrency") + 1] == "1"
    assert gpu[gpu.index("--prefetch-multiplier") + 1] == "1"
    io = services["worker-io"]["command"]
    assert io[:4] == gpu[:4]
    assert io[io.index("-Q") + 1] == defaults["queue_io"]
    for name in ("worker-gpu", "worker-io"):
        command = services[name]["command"]
        prefix = command[command.index("-n") + 1].split("@")[0]
        # the healthcheck pings "<prefix>@<hostname>"
        assert services[name]["environment"]["CELERY_NODE_PREFIX"] == prefix
        assert "CELERY_NODE_PREFIX" in " ".join(services[name]["healthcheck"]["test"])


def test_flower_runs_behind_basic_auth_on_every_route(
    raw_doc: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Flower starts through deploy.flower_auth (auth before routing, no start without a
    password), with the credentials in its environment only, and its healthcheck
    authenticates (tests/test_devstack.py runs the same launcher for real)."""
    flower = services["flower"]
    assert flower["command"] == [
        "python", "-m", "deploy.flower_auth", "-A", "workers.celery_app:app", "flower",
        "--port=5555",
    ]  # fmt: skip
    assert "basic-auth" not in _command_text(flower)  # not on a command line
    env = raw_doc["services"]["flower"]["environment"]
    assert env["FACEAUTH_FLOWER_USER"].startswith("${FACEAUTH_FLOWER_USER:?")
    assert env["FACEAUTH_FLOWER_PASSWORD"].startswith("${FACEAUTH_FLOWER_PASSWORD:?")
    assert flower["healthcheck"]["test"] == [
        "CMD", "python", "-m", "deploy.flower_auth", "healthcheck", "http://127.0.0.1:5555"
    ]  # fmt: skip
    assert [str(p).rsplit(":", 1)[-1] for p in flower["ports"]] == ["5555"]
    # the launcher ships in the image: a module of the installed `deploy` package
    assert (ROOT / "deploy" / "flower_auth.py").is_file()
    assert (ROOT / "deploy" / "__init__.py").is_file()
    ignore = (DOCKER_DIR / "worker.Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/" in ignore


def test_gateway_serves_the_api_as_the_app_role_and_is_healthy_when_ready(
    raw_doc: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """The HTTP gateway: `faceauth gateway` from the CPU image (which installs the gateway
    extra and ships the package), healthy when /readyz answers, metrics summed over its
    uvicorn workers, the application role only (checked with the others below)."""
    gateway = services["gateway"]
    assert gateway["command"] == ["faceauth", "gateway", "--host", "0.0.0.0"]
    # the published port is the settings' default port
    assert Settings.model_fields["gateway_port"].default == 8080
    assert gateway["image"] == "faceauth-worker:cpu"
    assert gateway["healthcheck"]["test"] == [
        "CMD", "python", "-m", "gateway.healthcheck", "http://127.0.0.1:8080"
    ]  # fmt: skip
    assert (ROOT / "gateway" / "healthcheck.py").read_text().count("/readyz") >= 1
    assert [str(p).rsplit(":", 1)[-1] for p in gateway["ports"]] == ["8080"]
    assert raw_doc["services"]["gateway"]["ports"][0].startswith("${GATEWAY_BIND_ADDR:-127.0.0.1}")
    env = gateway["environment"]
    assert env["PROMETHEUS_MULTIPROC_DIR"] in gateway["tmpfs"]
    assert "deploy" not in gateway and "FACEAUTH_ORT_PROVIDERS" not in env  # no GPU, no model
    assert set(gateway["depends_on"]) >= {"postgres", "redis", "minio", "migrate"}
    # the stop grace covers the longest ?wait a request may hold
    grace = int(str(gateway["stop_grace_period"]).removesuffix("s"))
    assert grace > Settings.model_fields["gateway_wait_max_s"].default
    ignore = (DOCKER_DIR / "worker.Dockerfile.dockerignore").read_text().splitlines()
    assert "!gateway/" in ignore
    assert "import gateway.app" in (DOCKER_DIR / "worker.Dockerfile").read_text()


def test_only_flower_minio_and_gateway_publish_ports_on_loopback_by_default(
    raw_doc: dict[str, Any], example_env: dict[str, str]
) -> None:
    env = {k: v for k, v in example_env.items() if not k.endswith("_BIND_ADDR")}
    resolved = interpolate_tree(raw_doc, env)["services"]
    published = {name for name, service in resolved.items() if service.get("ports")}
    assert published == PUBLISHED_SERVICES
    for name in published:
        for port in resolved[name]["ports"]:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
    for name in ("redis", "postgres"):
        assert "ports" not in resolved[name]


def test_named_volumes_are_declared_and_used(doc: dict[str, Any]) -> None:
    declared = set(doc.get("volumes") or {})
    used: set[str] = set()
    for name, service in doc["services"].items():
        for source, target, _ in _service_volumes(service):
            assert target.startswith("/"), (name, target)
            if source.startswith((".", "/", "~")):
                assert (ROOT / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in declared, f"{name}: volume {source!r} not declared"
                used.add(source)
    assert used == declared


def test_models_mount_read_only_in_workers_and_writable_for_training(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = {name: list(_service_volumes(s)) for name, s in services.items()}
    assert ("models", "/models", True) in mounts["worker-gpu"]
    assert ("models", "/models", False) in mounts["training"]
    assert ("training-data", "/data", True) in mounts["training"]
    env = services["worker-gpu"]["environment"]
    assert env["FACEAUTH_FACE_PACK_DIR"] == "/models/buffalo_l"
    assert env["FACEAUTH_LIVENESS_MODEL_DIR"] == "/models/liveness"
    command = services["training"]["command"]
    assert command == [
        "faceauth", "train", "liveness", "--data", "/data/liveness", "--out", "/models/liveness-new"
    ]  # fmt: skip
    assert services["training"]["profiles"] == ["training"]


def test_app_services_get_the_shared_faceauth_environment(
    doc: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    anchor = doc[ANCHOR_KEY]
    app_services = {name for name, service in services.items() if _is_app_service(service)}
    assert app_services == {"migrate", "worker-gpu", "worker-io", "flower", "gateway", "training"}
    for name in app_services:
        env = services[name]["environment"]
        assert isinstance(env, dict), name
        missing = {k: v for k, v in anchor.items() if k not in env or env[k] != v}
        assert not missing, f"{name} lacks shared settings {sorted(missing)}"
    assert services["migrate"]["command"] == ["faceauth", "db", "migrate"]


def test_every_faceauth_variable_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    """A typo in a FACEAUTH_* name would be ignored silently by pydantic-settings."""
    fields = set(Settings.model_fields)
    for name, service in services.items():
        for key in service.get("environment") or {}:
            if key.startswith("FACEAUTH_"):
                assert key.removeprefix("FACEAUTH_").lower() in fields, f"{name}: {key}"


@pytest.mark.parametrize(
    "name", ["migrate", "worker-gpu", "worker-io", "flower", "gateway", "training"]
)
def test_app_environments_parse_into_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Compose hands a container is what shared.config accepts (types, JSON lists)."""
    for key in list(os.environ):
        if key.startswith("FACEAUTH_"):
            monkeypatch.delenv(key)
    env = services[name]["environment"]
    for key, value in env.items():
        if key.startswith("FACEAUTH_") and value is not None:  # None: passed through if set
            monkeypatch.setenv(key, str(value))
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()  # later tests must not see this container's settings
    assert settings.s3_endpoint == "minio:9000" and settings.s3_secure is False
    assert settings.s3_secret_key.get_secret_value() == env["FACEAUTH_S3_SECRET_KEY"]
    assert settings.database_dsn() == env["FACEAUTH_DATABASE_URL"]
    if name == "migrate":
        assert settings.migration_dsn() == env["FACEAUTH_MIGRATION_DATABASE_URL"]
        assert settings.db_app_role == env["FACEAUTH_DB_APP_ROLE"]
    else:
        assert settings.migration_dsn() == settings.database_dsn()
    assert str(settings.face_pack_dir) == "/models/buffalo_l"
    if name == "worker-gpu":
        assert settings.ort_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if name == "flower":
        assert settings.flower_password.get_secret_value() == env["FACEAUTH_FLOWER_PASSWORD"]


def test_faceauth_urls_point_at_the_compose_services(
    services: dict[str, dict[str, Any]], example_env: dict[str, str]
) -> None:
    env = services["worker-io"]["environment"]
    password = example_env["REDIS_PASSWORD"]
    assert env["FACEAUTH_BROKER_URL"] == f"redis://:{password}@redis:6379/0"
    assert env["FACEAUTH_RESULT_BACKEND_URL"] == f"redis://:{password}@redis:6379/1"
    # the application role, never the superuser or the owner
    assert env["FACEAUTH_DATABASE_URL"] == (
        f"postgresql://{example_env['POSTGRES_APP_USER']}:{example_env['POSTGRES_APP_PASSWORD']}"
        f"@postgres:5432/{example_env['POSTGRES_DB']}"
    )
    assert env["FACEAUTH_S3_ENDPOINT"] == "minio:9000"
    assert env["FACEAUTH_S3_BUCKET"] == services["minio-init"]["environment"]["FACEAUTH_S3_BUCKET"]
    # the redis server and its clients use the same password
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password


def test_database_roles_are_least_privilege(
    raw_doc: dict[str, Any], services: dict[str, dict[str, Any]], example_env: dict[str, str]
) -> None:
    """Superuser for the bootstrap only, the owner for `migrate` only, the application
    role for everything else; three distinct roles, each password required."""
    users = {
        key: example_env[key]
        for key in ("POSTGRES_USER", "POSTGRES_OWNER_USER", "POSTGRES_APP_USER")
    }
    assert len(set(users.values())) == 3, users
    postgres = services["postgres"]
    env = postgres["environment"]
    assert env["POSTGRES_USER"] == users["POSTGRES_USER"]
    assert env["DB_OWNER_USER"] == users["POSTGRES_OWNER_USER"]
    assert env["DB_APP_USER"] == users["POSTGRES_APP_USER"]
    raw_env = raw_doc["services"]["postgres"]["environment"]
    for key in ("POSTGRES_PASSWORD", "DB_OWNER_PASSWORD", "DB_APP_PASSWORD"):
        assert raw_env[key].startswith("${") and ":?" in raw_env[key], key
    mounts = list(_service_volumes(postgres))
    assert (
        "./deploy/compose/init-db.sh",
        "/docker-entrypoint-initdb.d/10-faceauth-roles.sh",
        True,
    ) in mounts
    # who may log in as whom
    superuser_password = example_env["POSTGRES_PASSWORD"]
    owner_dsn = (
        f"postgresql://{users['POSTGRES_OWNER_USER']}:{example_env['POSTGRES_OWNER_PASSWORD']}"
        f"@postgres:5432/{example_env['POSTGRES_DB']}"
    )
    for name, service in services.items():
        service_env = {str(k): str(v) for k, v in (service.get("environment") or {}).items()}
        text = " ".join(service_env.values())
        if name != "postgres":
            assert f"{users['POSTGRES_USER']}:{superuser_password}@" not in text, name
            assert "POSTGRES_PASSWORD" not in service_env, name
        if name == "migrate":
            assert service_env["FACEAUTH_MIGRATION_DATABASE_URL"] == owner_dsn
            assert service_env["FACEAUTH_DB_APP_ROLE"] == users["POSTGRES_APP_USER"]
        else:
            assert "FACEAUTH_MIGRATION_DATABASE_URL" not in service_env, name
            assert f"{users['POSTGRES_OWNER_USER']}:" not in text, name
    raw_migrate = raw_doc["services"]["migrate"]["environment"]
    assert "${POSTGRES_OWNER_PASSWORD:?" in raw_migrate["FACEAUTH_MIGRATION_DATABASE_URL"]


def test_init_db_script_is_strict_posix_sh_and_reads_only_its_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    text = INIT_DB.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert os.access(INIT_DB, os.X_OK)  # the entrypoint executes it (sources it otherwise)
    sh = shutil.which("sh")
    if sh is not None:
        subprocess.run([sh, "-n", str(INIT_DB)], check=True)
    needed = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert needed == {
        "POSTGRES_USER",
        "POSTGRES_DB",
        "DB_OWNER_USER",
        "DB_OWNER_PASSWORD",
        "DB_APP_USER",
        "DB_APP_PASSWORD",
    }
    assert needed <= set(services["postgres"]["environment"])
    # passwords reach psql through \getenv, not its argv
    assert "\\getenv owner_password DB_OWNER_PASSWORD" in text
    assert "\\getenv app_password DB_APP_PASSWORD" in text
    assert not re.search(r"psql[^\n]*PASSWORD", text)
    for attribute in ("NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOBYPASSRLS"):
        assert text.count(attribute) == 2, attribute
    assert "CREATE EXTENSION IF NOT EXISTS vector" in text


def test_init_bucket_script_is_strict_posix_sh(services: dict[str, dict[str, Any]]) -> None:
    text = INIT_BUCKET.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    sh = shutil.which("sh")
    if sh is not None:
        subprocess.run([sh, "-n", str(INIT_BUCKET)], check=True)
    mounted = [s for s, _, _ in _service_volumes(services["minio-init"])]
    assert mounted == ["./deploy/compose/init-bucket.sh"]
    # the script reads exactly the variables minio-init is given
    needed = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert needed <= set(services["minio-init"]["environment"])


# --- the real Compose implementation, when installed ----------------------------------------
def _clean_env() -> dict[str, str]:
    """Only what the Compose CLI needs to run and find its plugin: a variable left in the
    shell (POSTGRES_PASSWORD, ...) would override the env file and hide a missing secret."""
    keep = ("PATH", "HOME", "DOCKER_CONFIG")
    return {key: os.environ[key] for key in keep if key in os.environ}


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, env=_clean_env(), check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def _run_compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose binary (docker compose plugin or docker-compose) on PATH")
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_clean_env(),
        timeout=120,
        check=False,
    )


def test_compose_binary_accepts_the_file() -> None:
    result = _run_compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_binary_refuses_a_missing_secret(tmp_path: Path) -> None:
    env_file = tmp_path / "missing.env"
    env_file.write_text(
        "\n".join(
            line
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("POSTGRES_PASSWORD=")
        )
    )
    result = _run_compose_config(env_file)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr
