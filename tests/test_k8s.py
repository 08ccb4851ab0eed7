"""Static validation of the Kubernetes manifests in deploy/k8s (no cluster, no network).

Built-in kinds are validated with kubernetes-validate, whose wheel carries the Kubernetes
OpenAPI schemas of every release it supports, in strict mode (unknown fields are errors),
for the pinned versions in K8S_VERSIONS. The KEDA kinds (ScaledObject,
TriggerAuthentication) are validated with jsonschema against deploy/k8s/schemas/ (see
the README there). A socket guard proves neither validator reaches the network. The
rest checks the project's rules: the kustomization lists every manifest and no Secret,
secrets are only referenced, pods are hardened, and workers, Flower and the migration
run exactly what docker-compose.yml runs. When kubectl is on PATH, `kubectl kustomize`
must build the directory too.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.config import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "deploy" / "k8s"
SCHEMA_DIR = K8S_DIR / "schemas"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
SECRETS_EXAMPLE = K8S_DIR / "secrets.example.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKER_DOCKERFILE = ROOT / "deploy" / "docker" / "worker.Dockerfile"

# The oldest release these manifests target and a newer one.
K8S_VERSIONS = ("1.31", "1.35")
KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-v1alpha1-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh-v1alpha1-triggerauthentication.json",
}
NAMESPACE = "faceauth"
POD_KINDS = {"Deployment", "Job"}
# compose service -> the k8s Deployment or Job running the same command.
COMPOSE_TWINS = {
    "worker-gpu": ("Deployment", "faceauth-worker-gpu"),
    "worker-io": ("Deployment", "faceauth-worker-io"),
    "flower": ("Deployment", "faceauth-flower"),
    "migrate": ("Job", "faceauth-migrate"),
}
GATEWAY = ("Deployment", "faceauth-gateway")
GATEWAY_COMMAND = ["faceauth", "gateway", "--host", "0.0.0.0"]
# Variable names that carry credentials, and URLs that may embed them.
SECRET_NAME = re.compile(
    r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|_USER$|DATABASE_URL|BROKER_URL|RESULT_BACKEND_URL)"
)
PLACEHOLDER = "change-me"

Doc = dict[str, Any]


# --- loading ------------------------------------------------------------------------------
def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p != KUSTOMIZATION)


@pytest.fixture(scope="module")
def kustomization() -> Doc:
    (doc,) = _load(KUSTOMIZATION)
    return doc


@pytest.fixture(scope="module")
def applied(kustomization: Doc) -> list[Doc]:
    """Every object `kubectl apply -k deploy/k8s` creates (before kustomize's namespace)."""
    return [doc for name in kustomization["resources"] for doc in _load(K8S_DIR / name)]


@pytest.fixture(scope="module")
def example_secrets() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in _load(SECRETS_EXAMPLE)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Doc]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert isinstance(services, dict)
    return services


@pytest.fixture(scope="module")
def compose_anchor_env() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["x-faceauth-env"]


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def _containers(doc: Doc, *, init: bool = True) -> list[Doc]:
    spec = _pod_spec(doc)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def _main(doc: Doc) -> Doc:
    (container,) = _pod_spec(doc)["containers"]
    return container


def _env(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def _secret_ref(container: Doc, name: str) -> tuple[str, str]:
    ref = _env(container)[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _pods(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in POD_KINDS]


def _doc_id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _all_docs() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in _manifest_files() for doc in _load(path)]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any attempt to open a network connection (a validator fetching a schema)."""

    def refuse(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX:
            return original(self, address)
        raise AssertionError(f"network access attempted: {address!r}")

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield


# --- parsing and the kustomization ---------------------------------------------------------
def test_every_manifest_parses_into_named_objects() -> None:
    seen: set[tuple[str, str]] = set()
    files = _manifest_files()
    assert {p.name for p in files} >= {
        "namespace.yaml",
        "configmap.yaml",
        "migrate-job.yaml",
        "worker-gpu.yaml",
        "worker-io.yaml",
        "gateway.yaml",
        "flower.yaml",
        "autoscaling.yaml",
        "secrets.example.yaml",
    }
    for path in files:
        docs = _load(path)
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path.name
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in seen, f"{path.name}: {key} defined twice"
            seen.add(key)
            if doc["kind"] != "Namespace" and path != SECRETS_EXAMPLE:
                # kustomize sets the namespace; a hard-coded other one would escape it.
                assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE, key


def test_kustomization_lists_every_manifest_but_the_placeholder_secrets(
    kustomization: Doc,
) -> None:
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    allowed = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert set(kustomization) <= allowed, set(kustomization) - allowed  # no secretGenerator
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    expected = {p.name for p in _manifest_files()} - {SECRETS_EXAMPLE.name}
    assert set(resources) == expected
    assert SECRETS_EXAMPLE.name not in resources


def test_kustomization_namespace_enforces_the_restricted_pod_security_profile(
    applied: list[Doc],
) -> None:
    labels = _find(applied, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_kustomize_builds_the_directory(applied: list[Doc]) -> None:
    """`kubectl kustomize` renders offline; every object ends up in the namespace."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(map(_doc_id, built)) == sorted(map(_doc_id, applied))
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, _doc_id(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "faceauth"
    assert not [d for d in built if d["kind"] == "Secret"]


# --- schema validation ---------------------------------------------------------------------
def _keda_validator(doc: Doc) -> jsonschema.protocols.Validator | None:
    name = KEDA_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if name is None:
        return None
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("path", "doc"),
    [pytest.param(p, d, id=f"{p.name}:{_doc_id(d)}") for p, d in _all_docs()],
)
def test_manifest_validates_offline(path: Path, doc: Doc, version: str) -> None:
    """Built-in kinds against Kubernetes' own schema (strict), KEDA kinds against ours."""
    validator = _keda_validator(doc)
    if validator is not None:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors
        return
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:  # a kind nobody validates
        pytest.fail(f"{path.name}: {exc.message}")
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.name}: {_doc_id(doc)}: {list(exc.path)}: {exc.message}")
    assert validated == version


@pytest.mark.usefixtures("no_network")
def test_kubernetes_schemas_reject_broken_manifests(applied: list[Doc]) -> None:
    """The validator really checks: typos, wrong types and missing fields fail."""
    deployment = _find(applied, "Deployment", "faceauth-worker-gpu")
    typo = copy.deepcopy(deployment)
    _main(typo)["securityContex"] = _main(typo).pop("securityContext")
    wrong_type = copy.deepcopy(deployment)
    _main(wrong_type)["livenessProbe"]["periodSeconds"] = "60"
    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    for broken in (typo, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_keda_schemas_reject_broken_objects(applied: list[Doc]) -> None:
    scaled = _find(applied, "ScaledObject", "faceauth-worker-gpu")
    auth = _find(applied, "TriggerAuthentication", "faceauth-redis")
    validator = _keda_validator(scaled)
    auth_validator = _keda_validator(auth)
    assert validator is not None and auth_validator is not None
    assert validator.is_valid(scaled) and auth_validator.is_valid(auth)

    def broken(change: Any) -> Doc:
        doc = copy.deepcopy(scaled)
        change(doc["spec"])
        return doc

    cases = [
        broken(lambda s: s.update(minReplicas=1)),  # HPA's name, not KEDA's
        broken(lambda s: s["triggers"][0]["metadata"].pop("listName")),
        broken(lambda s: s["triggers"][0]["metadata"].update(listLength=5)),  # not a string
        broken(lambda s: s["triggers"][0]["metadata"].update(password="hunter2")),
        broken(lambda s: s["scaleTargetRef"].pop("name")),
        broken(
            lambda s: s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
                "scaleDown"
            ].update(stabilizationWindowSeconds=7200)
        ),
        broken(lambda s: s.update(triggers=[])),
    ]
    for case in cases:
        assert not validator.is_valid(case), case["spec"]
    bad_auth = copy.deepcopy(auth)
    bad_auth["spec"]["secretTargetRef"][0].pop("key")
    assert not auth_validator.is_valid(bad_auth)


# --- secrets ---------------------------------------------------------------------------------
def test_no_secret_is_applied_or_written_into_a_manifest(
    applied: list[Doc], kustomization: Doc
) -> None:
    assert not [d for d in applied if d["kind"] == "Secret"]
    text = "\n".join((K8S_DIR / name).read_text() for name in kustomization["resources"])
    assert PLACEHOLDER not in text
    assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", text), "credentials inside a URL"
    for pod in _pods(applied):
        for container in _containers(pod):
            for name, item in _env(container).items():
                where = f"{_doc_id(pod)}/{container['name']}: {name}"
                if SECRET_NAME.search(name):
                    assert "secretKeyRef" in item.get("valueFrom", {}), where
                    assert "value" not in item, where
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, "name each secret variable explicitly"
    config = _find(applied, "ConfigMap", "faceauth-config")["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    auth = _find(applied, "TriggerAuthentication", "faceauth-redis")["spec"]
    assert set(auth) == {"secretTargetRef"}


def _secret_references(applied: list[Doc]) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    for pod in _pods(applied):
        for container in _containers(pod):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    for doc in applied:
        if doc["kind"] == "TriggerAuthentication":
            refs |= {(r["name"], r["key"]) for r in doc["spec"]["secretTargetRef"]}
    return refs


def test_secret_references_match_the_placeholder_secrets(
    applied: list[Doc], example_secrets: dict[str, dict[str, str]]
) -> None:
    """Every referenced key is documented in secrets.example.yaml, and nothing more."""
    documented = {(name, key) for name, data in example_secrets.items() for key in data}
    assert _secret_references(applied) == documented
    for doc in _load(SECRETS_EXAMPLE):
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert "data" not in doc  # stringData only: nothing base64-encoded to hide a value


def test_placeholder_secrets_hold_only_placeholders(
    example_secrets: dict[str, dict[str, str]],
) -> None:
    for name, data in example_secrets.items():
        for key, value in data.items():
            where = f"{name}/{key}"
            if "://" in value:
                parts = urlsplit(value)
                assert parts.password == PLACEHOLDER, where
                assert parts.hostname and parts.hostname.endswith(".example.com"), where
            elif key == "address":
                assert re.fullmatch(r"[a-z0-9.-]+\.example\.com:\d+", value), where
            else:
                assert value == PLACEHOLDER, where
    redis = example_secrets["faceauth-redis"]
    broker = urlsplit(redis["broker-url"])
    # KEDA must watch the broker's Redis: same host, port and password.
    assert redis["address"] == f"{broker.hostname}:{broker.port}"
    assert redis["password"] == broker.password
    assert urlsplit(example_secrets["faceauth-database"]["app-url"]).username == "faceauth_app"
    assert urlsplit(example_secrets["faceauth-database"]["owner-url"]).username == (
        "faceauth_owner"
    )


# --- pod hardening ---------------------------------------------------------------------------
def _dockerfile_uid() -> int:
    match = re.search(r"^USER (\d+):\d+$", WORKER_DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "worker.Dockerfile has no numeric USER"
    return int(match[1])


def test_every_pod_runs_non_root_without_privileges(applied: list[Doc]) -> None:
    uid = _dockerfile_uid()
    pods = _pods(applied)
    assert len(pods) == 5
    for pod in pods:
        spec = _pod_spec(pod)
        where = _doc_id(pod)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == "faceauth", where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys(), where
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] == uid and context["runAsGroup"] == uid, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for volume in spec.get("volumes", []):
            assert {"emptyDir", "persistentVolumeClaim"} & volume.keys(), (where, volume)
        for container in _containers(pod):
            at = f"{where}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["capabilities"] == {"drop": ["ALL"]}, at
            assert not sc.get("privileged"), at
            assert "runAsUser" not in sc or sc["runAsUser"] == uid, at
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources[bound].keys(), f"{at}: {bound}"
            assert container["imagePullPolicy"] == "IfNotPresent", at


def test_long_running_containers_have_probes(applied: list[Doc]) -> None:
    """Deployments' containers are probed; the Job and initContainers run to completion."""
    for pod in _pods(applied):
        if pod["kind"] != "Deployment":
            continue
        for container in _containers(pod, init=False):
            at = f"{_doc_id(pod)}/{container['name']}"
            assert {"readinessProbe", "livenessProbe"} <= container.keys(), at


def _mounts(container: Doc) -> dict[str, Doc]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def test_writable_paths_are_empty_dirs(applied: list[Doc]) -> None:
    """The root is read-only: /tmp (MPLCONFIGDIR, the working directory), the Prometheus
    multiprocess folder and the ready file's folder are emptyDirs."""
    for pod in _pods(applied):
        volumes = {v["name"]: v for v in _pod_spec(pod).get("volumes", [])}
        for container in _containers(pod, init=False):
            at = f"{_doc_id(pod)}/{container['name']}"
            mounts = _mounts(container)
            writable = ["/tmp"]
            env = _env(container)
            if "PROMETHEUS_MULTIPROC_DIR" in env:
                writable.append(env["PROMETHEUS_MULTIPROC_DIR"]["value"])
            if "FACEAUTH_WORKER_READY_FILE" in env:
                ready = PurePosixPath(env["FACEAUTH_WORKER_READY_FILE"]["value"])
                writable.append(str(ready.parent))
            for path in writable:
                assert path in mounts, f"{at}: {path} not mounted"
                volume = volumes[mounts[path]["name"]]
                assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), at
                assert not mounts[path].get("readOnly"), at
            for path, mount in mounts.items():
                if "persistentVolumeClaim" in volumes[mount["name"]]:
                    assert mount["readOnly"] is True, f"{at}: {path}"


# --- the same processes as docker-compose.yml -----------------------------------------------
@pytest.mark.parametrize("service", sorted(COMPOSE_TWINS))
def test_commands_and_images_match_compose(
    service: str, compose: dict[str, Doc], applied: list[Doc]
) -> None:
    container = _main(_find(applied, *COMPOSE_TWINS[service]))
    assert "args" not in container  # the whole command line, as compose's `command:`
    assert container["command"] == compose[service]["command"]
    assert container["image"] == compose[service]["image"]


def test_gateway_runs_the_gateway_command(compose: dict[str, Doc], applied: list[Doc]) -> None:
    container = _main(_find(applied, *GATEWAY))
    if "gateway" in compose:  # the compose twin, once there is one
        assert container["command"] == compose["gateway"]["command"]
        assert container["image"] == compose["gateway"]["image"]
    else:
        assert container["command"] == GATEWAY_COMMAND
        assert container["image"] == compose["worker-io"]["image"]


@pytest.mark.parametrize("service", ["worker-gpu", "worker-io", "flower", "migrate"])
def test_service_specific_environment_matches_compose(
    service: str,
    compose: dict[str, Doc],
    compose_anchor_env: dict[str, Any],
    applied: list[Doc],
) -> None:
    """What compose sets for one service beyond the shared block, k8s sets alike: literal
    values equal, `${...}` values (credentials) from a Secret."""
    container = _main(_find(applied, *COMPOSE_TWINS[service]))
    env = _env(container)
    for key, value in compose[service]["environment"].items():
        if key in compose_anchor_env and compose_anchor_env[key] == value:
            continue
        where = f"{service}: {key}"
        if isinstance(value, str) and "${" in value:
            if key == "FACEAUTH_DB_APP_ROLE":  # plain config, from the ConfigMap
                continue
            assert "secretKeyRef" in env[key]["valueFrom"], where
        else:
            assert key in env, where
            assert env[key]["value"] == str(value), where


def test_model_folders_match_compose(
    compose_anchor_env: dict[str, Any], applied: list[Doc]
) -> None:
    config = _find(applied, "ConfigMap", "faceauth-config")["data"]
    for key in ("FACEAUTH_FACE_PACK_DIR", "FACEAUTH_LIVENESS_MODEL_DIR"):
        assert config[key] == compose_anchor_env[key]
        assert PurePosixPath(config[key]).is_relative_to("/models")


def _shell(command: list[str]) -> str:
    assert command[:2] == ["sh", "-c"], command
    return " ".join(command[2].split())


@pytest.mark.parametrize("service", ["worker-gpu", "worker-io"])
def test_worker_probes_run_the_compose_healthcheck(
    service: str, compose: dict[str, Doc], applied: list[Doc]
) -> None:
    """Ready file (start checks passed) and `celery inspect ping` of this very node."""
    compose_check = compose[service]["healthcheck"]["test"]
    assert compose_check[0] == "CMD-SHELL"
    expected = " ".join(compose_check[1].replace("$$", "$").split())  # compose's $$ escape
    container = _main(_find(applied, *COMPOSE_TWINS[service]))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _shell(container[probe]["exec"]["command"]) == expected, probe
        assert container[probe]["timeoutSeconds"] >= 15, probe  # ping has --timeout 10
    prefix = _env(container)["CELERY_NODE_PREFIX"]["value"]
    command = container["command"]
    assert command[command.index("-n") + 1] == f"{prefix}@%h"


# --- the workers -----------------------------------------------------------------------------
def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_gpu_worker_takes_one_gpu_and_one_task_at_a_time(applied: list[Doc]) -> None:
    deployment = _find(applied, "Deployment", "faceauth-worker-gpu")
    container = _main(deployment)
    command = container["command"]
    assert _option(command, "-Q") == Settings().queue_inference
    assert _option(command, "--concurrency") == "1"
    assert _option(command, "--prefetch-multiplier") == "1"
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    env = _env(container)
    assert json.loads(env["FACEAUTH_ORT_PROVIDERS"]["value"])[0] == "CUDAExecutionProvider"
    # ONNX Runtime's threads follow the pod's CPU limit, not the node's cores.
    assert env["FACEAUTH_ORT_INTRA_OP_THREADS"]["value"] == resources["limits"]["cpu"]
    mount = _mounts(container)["/models"]
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}[mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    _find(applied, "PersistentVolumeClaim", claim["claimName"])
    tolerations = _pod_spec(deployment)["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    # Warm shutdown lets the running task finish within its time limit.
    grace = _pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > Settings().task_time_limit_s


def test_io_worker_loads_no_model_and_takes_no_gpu(applied: list[Doc]) -> None:
    container = _main(_find(applied, "Deployment", "faceauth-worker-io"))
    assert _option(container["command"], "-Q") == Settings().queue_io
    assert _env(container)["FACEAUTH_WORKER_LOAD_MODELS_AT_START"]["value"] == "false"
    assert "/models" not in _mounts(container)
    for pod in _pods(applied):
        if pod["metadata"]["name"] != "faceauth-worker-gpu":
            for c in _containers(pod):
                assert "nvidia.com/gpu" not in json.dumps(c["resources"]), _doc_id(pod)


# --- autoscaling -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("deployment", "queue_flag_value"),
    [("faceauth-worker-gpu", "faceauth.inference"), ("faceauth-worker-io", "faceauth.io")],
)
def test_scaled_objects_follow_the_queue_their_deployment_consumes(
    applied: list[Doc], deployment: str, queue_flag_value: str
) -> None:
    target = _find(applied, "Deployment", deployment)
    scaled = _find(applied, "ScaledObject", deployment)["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": target["metadata"]["name"],
    }
    assert "replicas" not in target["spec"]  # the HPA owns it; apply must not reset it
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis"
    queue = _option(_main(target)["command"], "-Q")
    assert trigger["metadata"]["listName"] == queue == queue_flag_value
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert trigger["metadata"]["databaseIndex"] == "0"  # the broker's /0
    auth = _find(applied, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
    assert parameters == {"address", "password"}
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["cooldownPeriod"] > 0
    scale_down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300


def test_gpu_scaled_object_queue_is_the_configured_inference_queue(applied: list[Doc]) -> None:
    scaled = _find(applied, "ScaledObject", "faceauth-worker-gpu")["spec"]
    assert scaled["triggers"][0]["metadata"]["listName"] == Settings().queue_inference
    assert scaled["fallback"]["replicas"] >= scaled["minReplicaCount"]


def test_pod_disruption_budgets_and_services_select_existing_pods(applied: list[Doc]) -> None:
    deployments = {d["metadata"]["name"]: d for d in applied if d["kind"] == "Deployment"}
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def matching(selector: dict[str, str]) -> list[Doc]:
        return [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for doc in applied:
        if doc["kind"] == "PodDisruptionBudget":
            assert len(matching(doc["spec"]["selector"]["matchLabels"])) == 1, _doc_id(doc)
        if doc["kind"] == "Service":
            (target,) = matching(doc["spec"]["selector"])
            ports = {p["name"]: p["containerPort"] for p in _main(target)["ports"]}
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in ports, _doc_id(doc)


# --- configuration, migration, gateway, Flower -----------------------------------------------
def test_configmap_holds_settings_that_parse(
    applied: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _find(applied, "ConfigMap", "faceauth-config")["data"]
    fields = set(Settings.model_fields)
    for key in config:
        assert key.startswith("FACEAUTH_"), key
        assert key.removeprefix("FACEAUTH_").lower() in fields, key
        assert isinstance(config[key], str), key  # ConfigMap data are strings
    for pod in _pods(applied):
        for container in _containers(pod):
            for name in _env(container):
                if name.startswith("FACEAUTH_"):
                    assert name.removeprefix("FACEAUTH_").lower() in fields, name
    for key in list(os.environ):
        if key.startswith("FACEAUTH_"):
            monkeypatch.delenv(key)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert settings.s3_secure is True
    assert settings.gateway_port == 8080
    assert settings.db_app_role == "faceauth_app"


def test_migration_job_runs_as_the_owner_role_only(applied: list[Doc]) -> None:
    job = _find(applied, "Job", "faceauth-migrate")
    container = _main(job)
    assert container["command"] == ["faceauth", "db", "migrate"]
    assert _secret_ref(container, "FACEAUTH_MIGRATION_DATABASE_URL") == (
        "faceauth-database",
        "owner-url",
    )
    assert set(_env(container)) == {"FACEAUTH_MIGRATION_DATABASE_URL"}
    assert _pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    # Nobody else gets the owner role.
    for pod in _pods(applied):
        for c in _containers(pod):
            if pod is not job:
                assert "FACEAUTH_MIGRATION_DATABASE_URL" not in _env(c), _doc_id(pod)


def _wait_for_schema(pod: Doc) -> Doc:
    (init,) = _pod_spec(pod)["initContainers"]
    assert init["name"] == "wait-for-schema"
    return init


def test_pods_using_the_database_wait_for_the_migration(applied: list[Doc]) -> None:
    scripts = set()
    for pod in _pods(applied):
        if pod["kind"] != "Deployment":
            continue
        main = _main(pod)
        if "FACEAUTH_DATABASE_URL" not in _env(main):
            assert "initContainers" not in _pod_spec(pod), _doc_id(pod)  # Flower
            continue
        init = _wait_for_schema(pod)
        assert init["image"] == main["image"], _doc_id(pod)  # nothing more to pull
        assert _secret_ref(init, "FACEAUTH_DATABASE_URL") == (
            _secret_ref(main, "FACEAUTH_DATABASE_URL")
        )
        assert init["command"][:2] == ["python", "-c"]
        scripts.add(init["command"][2])
    assert len(scripts) == 1  # one check, copied alike


def test_wait_for_schema_script_waits_until_nothing_is_pending(
    applied: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the initContainer's script: it retries a database error and a pending migration
    and returns once the schema is current, as the application role's DSN."""
    import shared.db.migrations as migrations

    script = _wait_for_schema(_find(applied, "Deployment", "faceauth-worker-gpu"))["command"][2]
    pending = migrations.Migration(5, "gateway", "SELECT 1")
    answers: list[Any] = [OSError("connection refused"), [pending], []]
    dsns: list[str] = []

    def fake_pending(dsn: str) -> list[Any]:
        dsns.append(dsn)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    monkeypatch.setattr(migrations, "pending_migrations", fake_pending)
    monkeypatch.setattr("time.sleep", lambda _s: None)
    monkeypatch.setenv("FACEAUTH_DATABASE_URL", "postgresql://faceauth_app:x@db/faceauth")
    get_settings.cache_clear()
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            exec(compile(script, "wait-for-schema", "exec"), {"__name__": "__main__"})
    finally:
        get_settings.cache_clear()
    assert answers == []
    assert dsns == ["postgresql://faceauth_app:x@db/faceauth"] * 3
    lines = out.getvalue().splitlines()
    assert lines[0] == "waiting for the database: OSError: connection refused"
    assert lines[1] == "waiting for faceauth db migrate (pending: 0005_gateway)"
    assert lines[2] == "schema is current"


def test_gateway_listens_on_8080_with_health_probes(applied: list[Doc]) -> None:
    deployment = _find(applied, *GATEWAY)
    container = _main(deployment)
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert Settings().gateway_port == 8080
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = _find(applied, "Service", "faceauth-gateway")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    assert deployment["spec"]["replicas"] >= 2


def test_flower_gets_its_credentials_from_a_secret_and_nothing_else(
    applied: list[Doc], compose: dict[str, Doc]
) -> None:
    container = _main(_find(applied, "Deployment", "faceauth-flower"))
    assert container["command"][:3] == ["python", "-m", "deploy.flower_auth"]
    assert "basic-auth" not in " ".join(container["command"])  # never on a command line
    assert _secret_ref(container, "FACEAUTH_FLOWER_PASSWORD") == ("faceauth-flower", "password")
    assert _secret_ref(container, "FACEAUTH_FLOWER_USER") == ("faceauth-flower", "user")
    # The broker only: no database or S3 credentials in the monitoring UI.
    assert set(_env(container)) == {
        "FACEAUTH_BROKER_URL",
        "FACEAUTH_RESULT_BACKEND_URL",
        "FACEAUTH_FLOWER_USER",
        "FACEAUTH_FLOWER_PASSWORD",
    }
    healthcheck = compose["flower"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == healthcheck[1:]
    assert _find(applied, "Service", "faceauth-flower")["spec"]["type"] == "ClusterIP"


# --- documentation ---------------------------------------------------------------------------
def test_readme_documents_the_kubernetes_deployment(applied: list[Doc]) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## [^\n]*Kubernetes[^\n]*\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README has no Kubernetes section"
    section = match[1]
    assert "kubectl apply -k deploy/k8s" in section
    for name in _manifest_files():
        assert name.name in section, name.name
    for secret, _key in _secret_references(applied):
        assert secret in section, secret
    assert "ScaledObject" in section and "KEDA" in section
