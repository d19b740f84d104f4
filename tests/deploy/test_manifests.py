"""The kustomize overlays, rendered offline: valid Kubernetes, hardened, and telling the truth about
the code (ports, probe paths, environment variables, launcher arguments, broker and database
names). Custom resources are schema-checked in test_custom_resources.py, monitoring in
test_monitoring.py; the image and the launcher in test_image.py."""

import copy
import importlib
import os
import re
import subprocess
import sys
import uuid

import pytest
import yaml

from services import registry
from tests.deploy.conftest import K8S, ROOT, SERVICES, of_kind

NAMESPACE = "grassroots"
KUBERNETES_VERSION = "1.32.0"  # the API version the manifests target (kubectl 1.32 here)
# API groups whose kinds are custom resources (validated against vendored CRD schemas elsewhere).
CUSTOM_GROUPS = {"rabbitmq.com", "postgresql.cnpg.io", "monitoring.coreos.com", "barmancloud.cnpg.io", "keda.sh"}
APP_PORT = 8080


# --- helpers -----------------------------------------------------------------------------------


def by_name(documents, kind):
    return {d["metadata"]["name"]: d for d in of_kind(documents, kind)}


def replica_bounds(documents, service):
    """(kind, minimum, maximum) of the one autoscaler of the service's Deployment: the base's CPU
    HorizontalPodAutoscaler (dev), or a KEDA ScaledObject (prod, which deletes the HPAs)."""
    scalers = [
        d
        for d in of_kind(documents, "HorizontalPodAutoscaler") + of_kind(documents, "ScaledObject")
        if d["spec"]["scaleTargetRef"]["name"] == service
    ]
    assert len(scalers) == 1, f"{service}: {[d['kind'] for d in scalers]}, not one autoscaler"
    spec = scalers[0]["spec"]
    if scalers[0]["kind"] == "ScaledObject":
        return "ScaledObject", spec["minReplicaCount"], spec["maxReplicaCount"]
    return "HorizontalPodAutoscaler", spec["minReplicas"], spec["maxReplicas"]


def service_deployments(documents):
    deployments = by_name(documents, "Deployment")
    assert set(SERVICES) <= set(deployments), f"missing Deployments: {set(SERVICES) - set(deployments)}"
    return {name: deployments[name] for name in SERVICES}


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def app_container(deployment):
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, "one container per service pod"
    return containers[0]


def all_containers(deployment):
    spec = pod_spec(deployment)
    return spec.get("initContainers", []) + spec["containers"]


def config_yml(service):
    with open(os.path.join(ROOT, "services", service, "config.yml")) as source:
        return source.read()


def config_reads(service):
    """{NAME: default or None} for every ${NAME:default} in the service's config.yml."""
    return {
        m.group(1): m.group(2) for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}", config_yml(service))
    }


def code_reads(service):
    """Variables a service's code reads from the environment itself, not through config.yml: the
    notices gateways' Authorization headers (services/notices/channels.py reads them as they are,
    since config.yml would parse a credential as YAML) and their inbound callback's secrets
    (services/notices/webhook.py, likewise)."""
    if service == "notices":
        from services.notices.channels import AUTH_HEADER_SETTINGS
        from services.notices.webhook import SECRET_SETTINGS

        return dict.fromkeys([*AUTH_HEADER_SETTINGS.values(), *SECRET_SETTINGS.values()])
    return {}


def service_configmap(documents, service):
    deployment = service_deployments(documents)[service]
    names = [
        ref["configMapRef"]["name"] for ref in app_container(deployment).get("envFrom", []) if "configMapRef" in ref
    ]
    assert len(names) == 1, f"{service}: envFrom one ConfigMap"
    configmaps = by_name(documents, "ConfigMap")
    assert names[0] in configmaps, f"{service}: ConfigMap {names[0]} is not in the render"
    return configmaps[names[0]]


def env_list(container):
    return container.get("env", [])


def env_value(container, name):
    for item in env_list(container):
        if item["name"] == name:
            return item
    raise AssertionError(f"{container['name']}: no env {name}")


def interpolations(value):
    return re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value or "")


def undeclared_env(container, reads):
    """Env names a container sets (env, and its ConfigMap's keys passed as ``configmap_keys``) that
    the service does not read: not in config.yml, and not an intermediate used by a later $(NAME)."""
    used_in_interpolation = {name for item in env_list(container) for name in interpolations(item.get("value"))}
    return [
        item["name"]
        for item in env_list(container)
        if item["name"] not in reads and item["name"] not in used_in_interpolation
    ]


def interpolation_errors(container):
    """$(NAME) references to a variable not defined earlier in the same env list (Kubernetes would
    leave them verbatim)."""
    defined, errors = set(), []
    for item in env_list(container):
        for name in interpolations(item.get("value")):
            if name not in defined:
                errors.append(f"{item['name']} uses $({name}) before it is defined")
        defined.add(item["name"])
    return errors


def named_port(container, port):
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    matches = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert matches, f"{container['name']}: no container port named {port!r}"
    return matches[0]


def web_paths():
    """The HTTP paths shared/web.py serves."""
    with open(os.path.join(ROOT, "shared", "web.py")) as source:
        return set(re.findall(r'@http\(\s*"GET"\s*,\s*"([^"]+)"', source.read()))


def quantity(value):
    """A Kubernetes quantity as a float (cores or bytes)."""
    value = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def setting(documents, service, name):
    """A setting as the service will see it: its ConfigMap's value, else config.yml's default."""
    data = service_configmap(documents, service).get("data", {})
    if name in data:
        return data[name]
    return config_reads(service).get(name)


# --- it renders, and Kubernetes would take it ---------------------------------------------------


def test_every_overlay_renders_the_whole_suite(overlay):
    name, documents = overlay
    assert documents, f"{name}: nothing rendered"
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    assert [d["metadata"]["name"] for d in of_kind(documents, "Namespace")] == [NAMESPACE]
    for service in SERVICES:
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
            assert service in by_name(documents, kind), f"{name}: {service} has no {kind}"
        replica_bounds(documents, service)  # one autoscaler: an HPA or a ScaledObject
        service_configmap(documents, service)
    assert "grassroots-rabbitmq" in by_name(documents, "RabbitmqCluster")
    assert "grassroots-pg" in by_name(documents, "Cluster")
    deny = [p for p in of_kind(documents, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")


def kubernetes_validate(documents, tmp_path):
    """Run `kubernetes-validate --strict` (offline, the schemas ship with it) on the documents.

    Returns (exit status, kinds that passed, error lines, kinds it had no schema for)."""
    path = tmp_path / f"render-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
    )
    lines = (result.stdout + result.stderr).splitlines()
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    errors = [line for line in lines if line.startswith(("ERROR", "FATAL"))]
    unknown = re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", "\n".join(lines))
    return result.returncode, passed, errors, unknown


def test_kubernetes_validate_strict_passes_for_every_built_in_kind(overlay, tmp_path):
    name, documents = overlay
    status, passed, errors, unknown = kubernetes_validate(documents, tmp_path)
    assert status == 0 and not errors, f"{name}:\n" + "\n".join(errors)
    # Kinds without a Kubernetes schema must be the custom resources, and nothing else: a
    # built-in kind with a misspelt apiVersion would otherwise slip through as "unknown".
    strays = {(kind, api) for kind, api in unknown if api.split("/")[0] not in CUSTOM_GROUPS}
    assert not strays, f"{name}: no schema for {strays}"
    built_in = [d for d in documents if d["apiVersion"].split("/")[0] not in CUSTOM_GROUPS]
    assert len(passed) == len(built_in), f"{name}: {len(passed)} of {len(built_in)} built-in objects validated"


def test_kubernetes_validate_catches_a_bad_object(overlay, tmp_path):
    _, documents = overlay
    deployment = copy.deepcopy(service_deployments(documents)["grid"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    status, _, errors, _ = kubernetes_validate([deployment], tmp_path)
    assert status != 0 and errors
    misspelt = copy.deepcopy(deployment)
    misspelt["apiVersion"] = "apps/v2"
    *_, unknown = kubernetes_validate([misspelt], tmp_path)
    assert unknown == [("Deployment", "apps/v2")]  # reported as a stray by the test above


# --- every Deployment is hardened and probed ----------------------------------------------------


def test_probes_on_the_named_port(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        container = app_container(deployment)
        expected = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            assert probe in container, f"{name}/{service}: no {probe}"
            assert container[probe]["httpGet"]["path"] == path, f"{name}/{service}: {probe}"
            assert container[probe]["httpGet"]["port"] == "http", f"{name}/{service}: {probe} on the named port"


def test_requests_and_limits_for_cpu_and_memory(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        for container in all_containers(deployment):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    where = f"{name}/{service}/{container['name']}"
                    assert resource in resources.get(bound, {}), f"{where}: {bound}.{resource}"
            for resource in ("cpu", "memory"):
                assert quantity(resources["requests"][resource]) <= quantity(resources["limits"][resource])


def hardening_problems(deployment):
    spec = pod_spec(deployment)
    pod = spec.get("securityContext", {})
    problems = []
    if pod.get("runAsNonRoot") is not True:
        problems.append("pod runAsNonRoot")
    if not pod.get("runAsUser"):
        problems.append("pod runAsUser non-zero")
    if "fsGroup" not in pod:
        problems.append("pod fsGroup")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile RuntimeDefault")
    for container in all_containers(deployment):
        sc = container.get("securityContext", {})
        where = container["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: drop ALL")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser", pod.get("runAsUser")) in (None, 0):
            problems.append(f"{where}: non-root user")
        if sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccomp RuntimeDefault")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp"), {}):
            problems.append(f"{where}: an emptyDir at /tmp")
    return problems


def test_pods_run_hardened(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        assert hardening_problems(deployment) == [], f"{name}/{service}"
        assert pod_spec(deployment).get("automountServiceAccountToken") is False


def test_hardening_check_can_fail(overlay):
    _, documents = overlay
    deployment = copy.deepcopy(service_deployments(documents)["notices"])
    container = pod_spec(deployment)["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    pod_spec(deployment)["securityContext"]["runAsUser"] = 0
    assert set(hardening_problems(deployment)) >= {
        "notices: readOnlyRootFilesystem",
        "notices: drop ALL",
        "pod runAsUser non-zero",
    }


def test_termination_grace_outlasts_the_longest_call(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        container = app_container(deployment)
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        rpc_timeout = float(setting(documents, service, f"{service.upper()}_RPC_TIMEOUT") or 10)
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace > rpc_timeout + float(pre_stop[1]), f"{name}/{service}: grace {grace}s"


def test_replicas_per_overlay(overlay):
    name, documents = overlay
    hpas = by_name(documents, "HorizontalPodAutoscaler")
    for service, deployment in service_deployments(documents).items():
        # The autoscaler owns the count: a replicas field would reset it on every apply.
        assert "replicas" not in deployment["spec"], f"{name}/{service}: replicas is the autoscaler's"
        kind, minimum, maximum = replica_bounds(documents, service)
        assert minimum <= maximum
        if name == "dev":
            # The fallback: CPU only (KEDA scales prod: tests/deploy/test_workloads.py).
            assert kind == "HorizontalPodAutoscaler", f"dev/{service}"
            hpa = hpas[service]
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
            assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
            assert (minimum, maximum) == (1, 2), f"dev/{service}"
        else:
            assert minimum >= 2, f"{name}/{service}: at least two replicas"
    rabbit = by_name(documents, "RabbitmqCluster")["grassroots-rabbitmq"]["spec"]
    postgres = by_name(documents, "Cluster")["grassroots-pg"]["spec"]
    if name == "dev":
        assert (rabbit["replicas"], postgres["instances"]) == (1, 1)
    else:
        assert (rabbit["replicas"], postgres["instances"]) == (3, 3)
        assert "podAntiAffinity" in rabbit["affinity"]
        assert postgres["affinity"]["enablePodAntiAffinity"] is True
        for service, deployment in service_deployments(documents).items():
            keys = {c["topologyKey"] for c in pod_spec(deployment).get("topologySpreadConstraints", [])}
            assert "kubernetes.io/hostname" in keys, f"{name}/{service}: spread over nodes"


def test_disruption_budgets_never_block_a_drain_and_keep_one_pod_in_prod(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        pdb = by_name(documents, "PodDisruptionBudget")[service]["spec"]
        assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        _, replicas, _ = replica_bounds(documents, service)
        evictable = min(pdb["maxUnavailable"], replicas) if "maxUnavailable" in pdb else replicas - pdb["minAvailable"]
        assert evictable >= 1, f"{name}/{service}: the PDB blocks every eviction"
        if name == "prod":
            assert replicas - evictable >= 1, f"prod/{service}: a drain may take every pod"


def test_every_service_migrates_in_an_init_container(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        init = pod_spec(deployment).get("initContainers", [])
        assert [c["args"] for c in init] == [["migrate", service]], f"{name}/{service}"
        assert init[0]["image"] == app_container(deployment)["image"]
        env_value(init[0], f"{service.upper()}_DATABASE_URL")
        assert interpolation_errors(init[0]) == []


def test_the_image_is_pinned_by_the_overlay(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        for container in all_containers(deployment):
            image = container["image"]
            assert re.fullmatch(r"[a-z0-9.-]+(/[a-z0-9._-]+)+:[0-9][\w.-]*", image), f"{name}/{service}: {image}"
            assert not image.endswith(":latest")


# --- no secrets in the repository ---------------------------------------------------------------

SECRET_KEY = re.compile(
    r"(?im)^\s*-?\s*[\"']?(password|passwd|secret|token|api[_-]?key|private[_-]?key|"
    r"access[_-]?key|client[_-]?secret)[\"']?\s*[:=]\s*[\"']?([^\s\"'#]+)"
)
SECRET_ENV_LINE = re.compile(r"(?m)^\s*([A-Z0-9_]*(PASSWORD|SECRET|TOKEN|PII_KEY)[A-Z0-9_]*)\s*=\s*(\S+)")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s:@]+):([^@\s]+)@")
HIGH_ENTROPY = re.compile(
    r"(?<![A-Za-z0-9+/=:])(?=[A-Za-z0-9+/]*[0-9])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])"
    r"[A-Za-z0-9+/]{32,}={0,2}(?![A-Za-z0-9+/=])"
)


def secret_literals(text):
    """Lines of a manifest that look like they carry a secret value."""
    found = [m.group(0).strip() for m in SECRET_KEY.finditer(text)]
    found += [m.group(0).strip() for m in SECRET_ENV_LINE.finditer(text)]
    found += [
        m.group(0)
        for m in URL_CREDENTIALS.finditer(text)
        if not (m.group(1).startswith("$(") and m.group(2).startswith("$("))
    ]
    found += [
        m.group(0)
        for m in HIGH_ENTROPY.finditer(text)
        if not text[max(0, m.start() - 7) : m.start()].endswith("sha256:")
    ]
    return found


def manifest_files():
    for folder, _, files in os.walk(K8S):
        for name in files:
            if name.endswith((".yaml", ".yml", ".env")):
                yield os.path.join(folder, name)


def test_no_secret_objects_and_no_secret_values(overlay):
    name, documents = overlay
    assert not of_kind(documents, "Secret"), f"{name}: Secrets are created by hand, never kept in the repo"
    for path in manifest_files():
        with open(path) as source:
            assert secret_literals(source.read()) == [], os.path.relpath(path, ROOT)
    for service, deployment in service_deployments(documents).items():
        for container in all_containers(deployment):
            for item in env_list(container):
                if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|USERNAME", item["name"]):
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{name}/{service}: {item['name']}"
    for configmap in of_kind(documents, "ConfigMap"):
        assert (
            secret_literals(
                "\n".join(f"{k}={v}" for k, v in configmap.get("data", {}).items() if not k.endswith(".json"))
            )
            == []
        )


def test_the_secret_scan_can_fail():
    assert secret_literals("password: hunter2-hunter2")
    assert secret_literals("  - password: 'hunter2'")
    assert secret_literals("GRASSROOTS_JWT_SECRET=abc")
    assert secret_literals("value: amqp://grid:s3cret@rabbit:5672/")
    assert secret_literals("data: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA9X")
    assert not secret_literals("value: amqp://$(AMQP_USERNAME):$(AMQP_PASSWORD)@rabbit:5672/grassroots")
    assert not secret_literals("key: jwt-secret\nname: grassroots-app")
    assert not secret_literals("image: python@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3")


# --- the manifests tell the truth about the code ------------------------------------------------


def test_one_port_everywhere(overlay):
    """containerPort == WEB_SERVER_ADDRESS's port == probe ports == Service targetPort ==
    NetworkPolicy ingress port."""
    name, documents = overlay
    services = by_name(documents, "Service")
    policies = by_name(documents, "NetworkPolicy")
    for service, deployment in service_deployments(documents).items():
        container = app_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": APP_PORT}, f"{name}/{service}"
        address = env_value(container, "WEB_SERVER_ADDRESS")["value"]
        assert int(address.rsplit(":", 1)[1]) == APP_PORT and address.startswith("0.0.0.0:")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert named_port(container, container[probe]["httpGet"]["port"]) == APP_PORT
        svc = services[service]["spec"]
        assert svc["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert [(p["name"], p["port"], named_port(container, p["targetPort"])) for p in svc["ports"]] == [
            ("http", APP_PORT, APP_PORT)
        ]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["selector"].items())
        policy = policies[service]["spec"]
        assert all(labels.get(k) == v for k, v in policy["podSelector"]["matchLabels"].items())
        assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {APP_PORT}


def test_probe_paths_are_served_by_shared_web(overlay):
    _, documents = overlay
    served = web_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= served
    for deployment in service_deployments(documents).values():
        container = app_container(deployment)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] in served


def test_every_variable_set_is_read_by_the_service(overlay):
    name, documents = overlay
    for service, deployment in service_deployments(documents).items():
        reads = {**config_reads(service), **code_reads(service)}
        configmap = service_configmap(documents, service)
        unread = sorted(set(configmap.get("data", {})) - set(reads))
        assert unread == [], f"{name}/{service}: ConfigMap sets what config.yml never reads"
        for container in all_containers(deployment):
            assert undeclared_env(container, reads) == [], f"{name}/{service}/{container['name']}"
            assert interpolation_errors(container) == [], f"{name}/{service}/{container['name']}"
        # And the ConfigMap's values have the type of config.yml's defaults.
        for key, value in configmap.get("data", {}).items():
            default = reads[key]
            if default is None:
                continue
            if re.fullmatch(r"-?\d+", default):
                int(value)
            elif re.fullmatch(r"-?\d+\.\d*", default):
                float(value)
            elif default in ("true", "false"):
                assert value in ("true", "false"), f"{name}/{service}: {key}={value}"


def test_the_variable_check_can_fail(overlay):
    _, documents = overlay
    container = copy.deepcopy(app_container(service_deployments(documents)["grid"]))
    container["env"].append({"name": "GRID_MAX_WORKER", "value": "5"})  # misspelt
    container["env"].insert(0, {"name": "EARLY", "value": "$(DB_USERNAME)"})
    assert undeclared_env(container, config_reads("grid")) == ["EARLY", "GRID_MAX_WORKER"]
    assert interpolation_errors(container) == ["EARLY uses $(DB_USERNAME) before it is defined"]


def test_launcher_arguments_name_real_services(overlay):
    from services import registry
    from services.launch import run_argv

    _, documents = overlay
    assert set(SERVICES) == set(registry.NAMES)
    for service, deployment in service_deployments(documents).items():
        command, target = app_container(deployment)["args"]
        assert (command, target) == ("run", service)
        argv = run_argv(target)
        config, spec = argv[argv.index("--config") + 1], argv[-1]
        assert os.path.exists(config)
        module, cls = spec.split(":")
        assert getattr(importlib.import_module(module), cls).name == service
    with pytest.raises(registry.UnknownService):
        run_argv("gird")


def permission_for(documents, service):
    """The Permission of the broker user whose credentials Secret the service's pods read."""
    container = app_container(service_deployments(documents)[service])
    secret = env_value(container, "AMQP_USERNAME")["valueFrom"]["secretKeyRef"]["name"]
    assert env_value(container, "AMQP_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] == secret
    users = [u for u in of_kind(documents, "User") if f"{u['metadata']['name']}-user-credentials" == secret]
    assert len(users) == 1, f"{service}: {secret} is made by no User"
    user = users[0]["metadata"]["name"]
    permissions = [p for p in of_kind(documents, "Permission") if p["spec"]["userReference"]["name"] == user]
    assert len(permissions) == 1, f"{service}: one Permission for {user}"
    return users[0], permissions[0]


def test_broker_address_vhost_and_user_match_the_rabbitmq_objects(overlay):
    from kombu.utils.url import url_to_parts

    name, documents = overlay
    cluster = of_kind(documents, "RabbitmqCluster")[0]
    vhosts = {v["spec"]["name"]: v for v in of_kind(documents, "Vhost")}
    for service, deployment in service_deployments(documents).items():
        uri = env_value(app_container(deployment), "AMQP_URI")["value"]
        parts = url_to_parts(uri)
        assert parts.hostname == f"{cluster['metadata']['name']}.{cluster['metadata']['namespace']}.svc"
        assert parts.port == 5672 and parts.scheme == "amqp"
        assert parts.path in vhosts, f"{name}/{service}: vhost {parts.path} is not declared"
        assert vhosts[parts.path]["spec"]["defaultQueueType"] == "quorum"
        user, permission = permission_for(documents, service)
        assert permission["spec"]["vhost"] == parts.path
        for obj in (user, permission, vhosts[parts.path]):
            assert obj["spec"]["rabbitmqClusterReference"]["name"] == cluster["metadata"]["name"]
        assert user["spec"].get("tags", []) == []
    config = cluster["spec"]["rabbitmq"]["additionalConfig"]
    assert re.search(r"(?m)^\s*default_queue_type\s*=\s*quorum\s*$", config)
    # Per-queue series come from /metrics/detailed (k8s/base/monitoring); /metrics stays aggregated.
    assert not re.search(r"(?m)^\s*prometheus\.return_per_object_metrics\s*=\s*true\s*$", config)
    # Bodies are bounded at the broker too, above what the services accept (MAX_MESSAGE_BYTES).
    size = re.search(r"(?m)^\s*max_message_size\s*=\s*(\d+)\s*$", config)
    assert size and 1024 * 1024 < int(size.group(1)) <= 128 * 1024 * 1024, "max_message_size"
    assert "rabbitmq_prometheus" in cluster["spec"]["rabbitmq"]["additionalPlugins"]


# Who sends commands to whom (shared/commands.py): {receiving service: the services that send it
# commands}. The receiver declares <service>.commands and its cmd-<service>-<command> queues; a
# sender only publishes to the exchange.
COMMAND_SENDERS = {"notices": {"volunteer", "legal"}}


def queue_names(service, documents=None):
    """What the service's code declares, consumes and publishes to, as nameko 2.14 names them.

    {"configure": {...}, "write": {...}, "read": {...}}: RabbitMQ checks `configure` to declare
    a queue or exchange, `write` to publish to an exchange or bind a queue, `read` to consume from
    a queue or bind from an exchange (and to declare a queue with a dead-letter exchange, `write`
    on that exchange). The retry tiers follow the deployed EVENT_RETRY_* settings (``documents``,
    else config.yml's defaults)."""
    from nameko.events import EventHandler
    from nameko.rpc import Rpc

    from shared.clients import ServiceClient
    from shared.commands import CommandHandler, command_exchange_name, command_queue_name
    from shared.handlers import RetrySchedule, tier_name

    cls = getattr(importlib.import_module(f"services.{service}.service"), f"{service.capitalize()}Service")
    names = {"configure": {"nameko-rpc", f"{service}.events"}, "write": {f"{service}.events"}, "read": set()}
    keys = ("EVENT_RETRY_BASE_SECONDS", "EVENT_RETRY_MAX_DELAY_SECONDS", "EVENT_RETRY_HORIZON_SECONDS")
    deployed = {key: setting(documents, service, f"GRASSROOTS_{key}") for key in keys} if documents else {}
    tiers = {tier_name(service, d) for d in RetrySchedule.from_config(deployed).tiers}
    assert tiers, "no retry tier"

    def consumes(queue):
        """A handler queue with its .dead twin and the service's retry tiers (exchange and queue of
        one name each): published to through amq.default and the tiers' exchanges, dead-lettered
        back through amq.default."""
        names["configure"] |= {queue, f"{queue}.dead"} | tiers
        names["write"] |= {queue, "amq.default"} | tiers
        names["read"] |= {queue} | tiers

    for attr in dir(cls):
        for entrypoint in getattr(getattr(cls, attr), "nameko_entrypoints", ()):
            if isinstance(entrypoint, Rpc):
                queue = f"rpc-{service}"
                # the .dead twin: requests that cannot be answered, published via amq.default
                names["configure"] |= {queue, f"{queue}.dead"}
                names["write"] |= {"nameko-rpc", queue, "amq.default"}  # replies; binding the queue
                names["read"] |= {"nameko-rpc", queue}
            elif isinstance(entrypoint, CommandHandler):  # before EventHandler: it is one
                exchange = command_exchange_name(service)
                consumes(command_queue_name(service, entrypoint.command))
                names["configure"].add(exchange)
                names["read"].add(exchange)
            elif isinstance(entrypoint, EventHandler):
                exchange = f"{entrypoint.source_service}.events"
                consumes(f"evt-{entrypoint.source_service}-{entrypoint.event_type}--{service}.{attr}")
                names["configure"].add(exchange)
                names["read"].add(exchange)
    names["write"] |= {f"{receiver}.commands" for receiver, senders in COMMAND_SENDERS.items() if service in senders}
    if any(isinstance(getattr(cls, attr, None), ServiceClient) for attr in dir(cls)):
        reply = f"rpc.reply-{service}-{uuid.uuid4()}"
        names["configure"] |= {reply, "nameko-rpc"}
        names["write"] |= {reply, "nameko-rpc"}
        names["read"] |= {reply, "nameko-rpc"}
    return names


def allowed(permission, access, name):
    return re.search(permission["spec"]["permissions"][access], name) is not None


def test_broker_permissions_allow_what_each_service_uses_and_nothing_of_the_others(overlay):
    _, documents = overlay
    used = {service: queue_names(service, documents) for service in SERVICES}
    assert any(n.endswith(".dead") for names in used.values() for n in names["configure"]), "no event handler found"
    assert any(".retry." in n for names in used.values() for n in names["write"]), "no retry tier found"
    receivers = {s for s in SERVICES if any(n.startswith(f"cmd-{s}-") for n in used[s]["configure"])}
    assert receivers == set(COMMAND_SENDERS), "COMMAND_SENDERS names every service with command handlers"
    for service in SERVICES:
        _, permission = permission_for(documents, service)
        for access, names in used[service].items():
            refused = sorted(n for n in names if not allowed(permission, access, n))
            assert refused == [], f"{service} needs {access} on {refused}"
        for other in SERVICES:
            if other == service:
                continue
            for access, names in used[other].items():
                shared = {"nameko-rpc", "amq.default"} | {f"{s}.events" for s in SERVICES}
                if access == "write":  # the commands exchanges it sends to
                    shared |= {f"{r}.commands" for r, senders in COMMAND_SENDERS.items() if service in senders}
                private = sorted(n for n in names - shared if allowed(permission, access, n))
                assert private == [], f"{service} may {access} {other}'s {private}"
            assert not allowed(permission, "write", f"{other}.events"), f"{service} may publish {other}'s events"
            # another's retry tiers and command queues, whatever names they come to have
            for name in (f"{other}.retry.1s", f"{other}.retry.250ms", f"cmd-{other}-x", f"cmd-{other}-x.dead"):
                assert not any(allowed(permission, access, name) for access in ("configure", "write", "read")), name
            sends = service in COMMAND_SENDERS.get(other, ())
            assert allowed(permission, "write", f"{other}.commands") == sends, f"{service} commanding {other}"
            assert not allowed(permission, "configure", f"{other}.commands"), f"{service} declaring {other}.commands"


def test_database_address_role_and_secret_match_the_postgres_objects(overlay):
    from sqlalchemy.engine import make_url

    name, documents = overlay
    cluster = by_name(documents, "Cluster")["grassroots-pg"]
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    databases = {d["spec"]["name"]: d for d in of_kind(documents, "Database")}
    for service, deployment in service_deployments(documents).items():
        for container in all_containers(deployment):
            url = make_url(env_value(container, f"{service.upper()}_DATABASE_URL")["value"])
            assert url.host == f"{cluster['metadata']['name']}-rw.{cluster['metadata']['namespace']}.svc"
            assert url.port == 5432 and url.get_backend_name() == "postgresql"
            assert url.database == service
            secret = env_value(container, "DB_USERNAME")["valueFrom"]["secretKeyRef"]["name"]
            assert env_value(container, "DB_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] == secret
        database = databases[service]["spec"]
        assert database["cluster"]["name"] == cluster["metadata"]["name"]
        role = roles[database["owner"]]
        assert role["login"] is True and role.get("ensure", "present") == "present"
        assert role["passwordSecret"]["name"] == secret, f"{name}/{service}: the pods log in as another role"
    # Scraped by our own PodMonitor (k8s/base/monitoring), not CNPG's deprecated enablePodMonitor.
    assert not cluster["spec"].get("monitoring", {}).get("enablePodMonitor")


def test_connection_budget_fits_max_connections(overlay):
    """At every autoscaler's maximum plus the rollout surge, each pod holding its whole pool and
    overflow (shared/db.py: max_overflow = pool_size), plus a migration (lock + alembic)."""
    name, documents = overlay
    cluster = by_name(documents, "Cluster")["grassroots-pg"]["spec"]
    max_connections = int(cluster["postgresql"]["parameters"]["max_connections"])
    reserved = 3 + 10  # superuser_reserved_connections, CNPG's instance manager and exporter
    demand = {}
    for service, deployment in service_deployments(documents).items():
        _, _, max_replicas = replica_bounds(documents, service)
        surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        pool = int(setting(documents, service, f"{service.upper()}_DB_POOL_SIZE"))
        demand[service] = (max_replicas + surge) * 2 * pool + 2
    assert sum(demand.values()) + reserved <= max_connections, f"{name}: {demand} > {max_connections}"


def test_network_policies_open_the_paths_the_services_use(overlay):
    name, documents = overlay
    policies = by_name(documents, "NetworkPolicy")
    cluster = by_name(documents, "RabbitmqCluster")["grassroots-rabbitmq"]

    def reaches(egress, selector, port):
        return any(
            any(peer.get("podSelector", {}).get("matchLabels") == selector for peer in rule.get("to", []))
            and any(p["port"] == port for p in rule["ports"])
            for rule in egress
        )

    for service in SERVICES:
        egress = policies[service]["spec"]["egress"]

        assert reaches(egress, {"app.kubernetes.io/name": cluster["metadata"]["name"]}, 5672), (
            f"{name}/{service}: broker"
        )
        assert reaches(egress, {"cnpg.io/cluster": "grassroots-pg"}, 5432), f"{name}/{service}: database"
        assert any(p["port"] == 53 for rule in egress for p in rule["ports"]), f"{name}/{service}: DNS"
        https = any(
            any("ipBlock" in peer for peer in rule.get("to", [])) and any(p["port"] == 443 for p in rule["ports"])
            for rule in egress
        )
        assert https == (service == "notices"), f"{name}/{service}: HTTPS egress only for the gateways"
    broker = policies["grassroots-rabbitmq"]["spec"]
    sources = [
        (peer.get("podSelector", {}).get("matchLabels"), {p["port"] for p in rule["ports"]})
        for rule in broker["ingress"]
        for peer in rule["from"]
    ]
    assert ({"app.kubernetes.io/part-of": "grassroots", "app.kubernetes.io/component": "service"}, {5672}) in sources
    assert any(
        sel == {"app.kubernetes.io/name": "grassroots-rabbitmq"} and {4369, 25672} <= ports for sel, ports in sources
    ), "broker nodes talk to each other"


def test_the_runners_stop_bound_fits_the_grace_period(overlay):
    """preStop pause + the runner's graceful stop (STOP_TIMEOUT) + its kill budget end before the
    kubelet's SIGKILL: a pod is never killed mid-stop by Kubernetes rather than by its own bound."""
    from shared.runner import KILL_TIMEOUT

    _, documents = overlay
    for service, deployment in service_deployments(documents).items():
        container = app_container(deployment)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        configmap = service_configmap(documents, service)
        stop_timeout = float(
            env.get("GRASSROOTS_STOP_TIMEOUT")
            or configmap.get("data", {}).get("GRASSROOTS_STOP_TIMEOUT")
            or config_reads(service)["GRASSROOTS_STOP_TIMEOUT"]
        )
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", f"{service}: preStop is a pause"
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        assert float(command[1]) + stop_timeout + KILL_TIMEOUT < grace, service


def served_routes(service):
    """(method, url) of every nameko ``@http`` entrypoint on the service's class."""
    from nameko.web.handlers import HttpRequestHandler

    cls = registry.get(service).service_class()
    return {
        (entrypoint.method, entrypoint.url)
        for attribute in vars(cls).values()
        for entrypoint in getattr(attribute, "nameko_entrypoints", ())
        if isinstance(entrypoint, HttpRequestHandler)
    }


# What the public may reach over the Ingress: path prefix → the service that serves it.
PUBLIC_PREFIXES = {"/open311/v2/": "grid", "/gateways/": "notices"}


def public_ingress_problems(documents):
    """Why the overlay's Ingresses expose more (or other) than PUBLIC_PREFIXES, as a list."""
    problems = []
    for ingress in of_kind(documents, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                prefix, backend = path["path"], path["backend"]["service"]["name"]
                if PUBLIC_PREFIXES.get(prefix) != backend:
                    problems.append(f"{prefix} → {backend} is not a public route")
                    continue
                if path["pathType"] != "Prefix" or not prefix.endswith("/"):
                    problems.append(f"{prefix}: a Prefix ending in / (no neighbour path may match)")
                if not any(url.startswith(prefix) for _, url in served_routes(backend)):
                    problems.append(f"{prefix}: {backend} serves no route under it")
    return problems


def test_the_public_ingress_routes_only_the_public_paths(overlay):
    name, documents = overlay
    ingresses = of_kind(documents, "Ingress")
    if name != "prod":
        assert ingresses == [], f"{name}: only prod publishes anything"
        return
    assert public_ingress_problems(documents) == []
    routed = {path["path"] for i in ingresses for rule in i["spec"]["rules"] for path in rule["http"]["paths"]}
    assert routed == set(PUBLIC_PREFIXES)
    assert all(i["spec"]["tls"] for i in ingresses), "HTTPS only"
    policies = by_name(documents, "NetworkPolicy")
    for service in set(PUBLIC_PREFIXES.values()):
        admitted = [
            rule
            for policy in policies.values()
            if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == service
            for rule in policy["spec"].get("ingress", [])
            if any(
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                == "ingress-nginx"
                for peer in rule["from"]
            )
        ]
        assert admitted and all(p["port"] == APP_PORT for rule in admitted for p in rule["ports"]), service


def test_the_public_route_check_can_fail(overlay):
    name, documents = overlay
    if name != "prod":
        pytest.skip("only prod has an Ingress")
    leaky = copy.deepcopy(documents)
    paths = of_kind(leaky, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"]
    paths.append(
        {"path": "/metrics", "pathType": "Prefix", "backend": {"service": {"name": "grid", "port": {"name": "http"}}}}
    )
    paths[0]["path"] = "/open311"
    problems = public_ingress_problems(leaky)
    assert any("/metrics" in p for p in problems) and any(p.startswith("/open311 ") for p in problems), problems
