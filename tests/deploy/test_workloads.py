"""The services' workloads in the rendered overlays (issue 15): scaling on the work, drains that an
outage cannot block, Secrets that reach running pods, and the notices gateways' credentials and
rates. Each test names the issue's item it checks; each fails on the manifests as they were before
the issue (`git archive` of that commit's k8s/: in prod for item 9's KEDA and spread, which are
prod's, in both overlays for the others).

- 7: the gateways' Authorization headers come from a Secret (required in prod) and reach the
  adapters (read from the environment as they are); each replica's rate is the channel's total
  divided by the replica ceiling the overlay's autoscaler has; the prod placeholders cannot send
  and, with the Secret, are documented.
- 9: prod scales each service with a KEDA ScaledObject on its own queues (names from the code) and
  CPU, and nothing else scales it; dev keeps the CPU HPA; KEDA reaches the management API with a
  user that can touch nothing; the spread ignores nodes whose taints the pods do not tolerate; a
  PodDisruptionBudget never counts unready pods against a drain. (/readyz reusing one connection:
  tests/integration/test_readyz_connection.py.)
- 10: a Deployment rolls when a Secret it reads changes (stakater Reloader's annotation, naming
  exactly the Secrets its pods read), and the docs name Reloader as a required operator.
"""

import copy
import importlib
import os
import re

import pytest

from tests.deploy.conftest import ROOT, SERVICES, of_kind

NAMESPACE = "grassroots"
RELOAD = "secret.reloader.stakater.com/reload"
TRANSFER = "scaledobject.keda.sh/transfer-hpa-ownership"
GATEWAYS = {"sms": "SMS", "voice_call": "VOICE", "app_push": "PUSH"}  # channel: <CHANNEL> in the settings
RATED = {**GATEWAYS, "chat_group": "CHAT"}
# Loading config.yml imports nameko's CLI, which imports pkg_resources (shared/__init__.py quiets it
# outside pytest, which resets the filters per test).
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning")


# --- helpers ------------------------------------------------------------------------------------


def by_name(documents, kind):
    return {d["metadata"]["name"]: d for d in of_kind(documents, kind)}


def deployment(documents, service):
    return by_name(documents, "Deployment")[service]


def app_container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def env(container):
    return {item["name"]: item for item in container.get("env", [])}


def configmap_data(documents, service):
    name = app_container(deployment(documents, service))["envFrom"][0]["configMapRef"]["name"]
    return by_name(documents, "ConfigMap")[name]["data"]


def autoscalers(documents, service):
    """Every HPA and ScaledObject in the render that scales the service's Deployment."""
    return [
        doc
        for doc in of_kind(documents, "HorizontalPodAutoscaler") + of_kind(documents, "ScaledObject")
        if doc["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        and doc["spec"]["scaleTargetRef"]["name"] == service
    ]


def replica_bounds(documents, service):
    """(minimum, maximum) replicas of the one autoscaler of the service."""
    (scaler,) = autoscalers(documents, service)
    spec = scaler["spec"]
    if scaler["kind"] == "ScaledObject":
        return spec["minReplicaCount"], spec["maxReplicaCount"]
    return spec["minReplicas"], spec["maxReplicas"]


def consumed_queues(service):
    """The queues the service's code consumes, as nameko 2.14 and shared/ name them: its RPC queue,
    one per event handler, one per command handler."""
    from nameko.events import EventHandler
    from nameko.rpc import Rpc

    from shared.commands import CommandHandler, command_queue_name

    cls = getattr(importlib.import_module(f"services.{service}.service"), f"{service.capitalize()}Service")
    queues = set()
    for attr in dir(cls):
        for entrypoint in getattr(getattr(cls, attr), "nameko_entrypoints", ()):
            if isinstance(entrypoint, Rpc):
                queues.add(f"rpc-{service}")
            elif isinstance(entrypoint, CommandHandler):  # before EventHandler: it is one
                queues.add(command_queue_name(service, entrypoint.command))
            elif isinstance(entrypoint, EventHandler):
                queues.add(f"evt-{entrypoint.source_service}-{entrypoint.event_type}--{service}.{attr}")
    return queues


def not_work(service):
    """Queue names that must not count as the service's work: its dead letters, retry tiers and
    reply queues, and every other service's queues."""
    names = {f"{q}.dead" for q in consumed_queues(service)}
    names |= {f"{service}.retry.1s", f"{service}.retry.300s", f"rpc.reply-{service}-0b3c", f"rpc-{service}x"}
    for other in SERVICES:
        if other != service:
            names |= consumed_queues(other)
    return names


def load_notices_config(monkeypatch, variables):
    """services/notices/config.yml as the runner loads it, with only ``variables`` in the environment
    (of the NOTICES_* ones)."""
    from shared.runner import load_config

    for name in list(os.environ):
        if name.startswith("NOTICES_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_config(os.path.join(ROOT, "services", "notices", "config.yml"))


def docs(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as source:
        return source.read()


# --- 7: the notices gateways --------------------------------------------------------------------


def test_7_the_gateways_credentials_come_from_a_secret_and_reach_the_adapters(overlay, monkeypatch):
    from services.notices.channels import AUTH_HEADER_SETTINGS, build_channels

    name, documents = overlay
    variables = env(app_container(deployment(documents, "notices")))
    secrets = set()
    for channel, upper in GATEWAYS.items():
        setting = f"NOTICES_{upper}_AUTH_HEADER"
        assert AUTH_HEADER_SETTINGS[channel] == setting
        assert setting in variables, f"{name}: notices sets no {setting}"
        ref = variables[setting]["valueFrom"]["secretKeyRef"]
        secrets.add(ref["name"])
        # Required in prod: a pod without the credentials does not start; dev runs stub twins.
        assert ref.get("optional", False) is (name != "prod"), f"{name}: {setting} optional={ref.get('optional')}"
    assert len(secrets) == 1, f"{name}: one Secret for the gateways' credentials, not {secrets}"
    # notices reads each from its environment as it is (a header value is not YAML) and sends it.
    header = "Bearer k3y: with#odd [chars]"
    config = load_notices_config(
        monkeypatch,
        {f"NOTICES_{u}_AUTH_HEADER": f"{header} {u}\n" for u in GATEWAYS.values()}
        | {"NOTICES_SMS_GATEWAY_URL": "https://sms.gateway.test/v1", "NOTICES_PUSH_URL": "https://push.gateway.test/v1"}
        | {"NOTICES_VOICE_GATEWAY_URL": "https://voice.gateway.test/v1"},
    )
    adapters = build_channels(config["CHANNELS"])
    for channel, upper in GATEWAYS.items():
        assert adapters[channel].http.headers["Authorization"] == f"{header} {upper}", channel
    assert "Authorization" not in adapters["chat_group"].http.headers  # webhooks never get one


def test_7_each_replica_sends_its_share_of_the_channel_quota(overlay, monkeypatch):
    from services.notices.channels import per_replica_rates

    name, documents = overlay
    data = configmap_data(documents, "notices")
    _, ceiling = replica_bounds(documents, "notices")
    assert int(data.get("NOTICES_MAX_REPLICAS", 0)) == ceiling, (
        f"{name}: NOTICES_MAX_REPLICAS must be notices' maxReplicas ({ceiling})"
    )
    for upper in RATED.values():
        assert f"NOTICES_{upper}_RATE_TOTAL" in data, f"{name}: no district-wide NOTICES_{upper}_RATE_TOTAL"
        assert f"NOTICES_{upper}_RATE" not in data, f"{name}: NOTICES_{upper}_RATE is per replica: set the total"
    config = load_notices_config(monkeypatch, {k: v for k, v in data.items() if k.startswith("NOTICES_")})
    rates = per_replica_rates(config)
    for channel, upper in RATED.items():
        total = float(data[f"NOTICES_{upper}_RATE_TOTAL"])
        assert rates[channel] == pytest.approx(total / ceiling), f"{name}/{channel}"
        assert rates[channel] * ceiling <= total + 1e-9  # all replicas together stay within the quota
    # ... also during a rollout: no surge pod beyond the ceiling.
    deployment = next(d for d in of_kind(documents, "Deployment") if d["metadata"]["name"] == "notices")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, f"{name}: a surge pod exceeds the quota"


def test_7_the_prod_gateway_placeholders_cannot_send_and_are_documented(overlay):
    from services.notices.channels import ChannelSettingError, check_settings, placeholder_host
    from services.notices.outbound import GATEWAY_SETTINGS

    name, documents = overlay
    dep = deployment(documents, "notices")
    variables = env(app_container(dep))
    assert "NOTICES_SMS_AUTH_HEADER" in variables, f"{name}: notices reads no gateway credentials"
    secret = variables["NOTICES_SMS_AUTH_HEADER"]["valueFrom"]["secretKeyRef"]["name"]
    deployment_md = docs("deployment.md")
    # The Secret is made by hand: the docs say how, with every key the Deployment reads.
    keys = {
        item["valueFrom"]["secretKeyRef"]["key"]
        for item in variables.values()
        if item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret
    }
    assert f"create secret generic {secret}" in deployment_md, f"docs/deployment.md: how to create {secret}"
    assert keys and all(f"--from-literal={key}=" in deployment_md for key in keys), keys
    if name != "prod":
        return
    data = configmap_data(documents, "notices")
    for channel, setting in GATEWAY_SETTINGS.items():
        url = data[setting]
        assert url.startswith("https://"), f"prod: {setting}"
        # A placeholder: on a reserved domain, and documented as one to replace ...
        assert placeholder_host(url), f"prod: {setting}={url} is not a reserved placeholder domain"
        assert setting in deployment_md, f"docs/deployment.md does not mention {setting}"
        # ... which notices refuses to start with, naming the variable.
        config = {"CHANNELS": {channel: {"url": url}}}
        with pytest.raises(ChannelSettingError, match=f"^{setting} "):
            check_settings(config)


# --- 9: scaling on the work, spread, drains -----------------------------------------------------


def test_9_prod_scales_each_service_on_its_queues_with_keda_and_nothing_else_scales_it(overlay):
    name, documents = overlay
    hpa_names = set(by_name(documents, "HorizontalPodAutoscaler"))
    for service in SERVICES:
        scalers = autoscalers(documents, service)
        assert len(scalers) == 1, f"{name}/{service}: {[s['kind'] for s in scalers]} (exactly one autoscaler)"
        (scaler,) = scalers
        if name == "dev":  # the fallback: CPU, no KEDA needed
            assert scaler["kind"] == "HorizontalPodAutoscaler"
            assert [m["resource"]["name"] for m in scaler["spec"]["metrics"]] == ["cpu"]
            continue
        assert scaler["kind"] == "ScaledObject", f"prod/{service}: scales on {scaler['kind']}, not the queues"
        spec = scaler["spec"]
        # The HPA KEDA makes must not be one the render also holds (two owners of one name).
        hpa = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("name", f"keda-hpa-{service}")
        assert hpa not in hpa_names, f"prod/{service}: the render has an HPA {hpa} too"
        if scaler["metadata"].get("annotations", {}).get(TRANSFER) == "true":
            assert hpa == service, "taking over the earlier HPA needs its name"
        assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        triggers = {t["type"]: t for t in spec["triggers"]}
        assert set(triggers) == {"rabbitmq", "cpu"}, f"prod/{service}: {sorted(triggers)}"
        assert triggers["cpu"]["metricType"] == "Utilization" and int(triggers["cpu"]["metadata"]["value"]) <= 80


def test_9_the_queue_trigger_counts_exactly_the_services_queues_per_worker_pool(overlay):
    from kombu.utils.url import url_to_parts

    name, documents = overlay
    if name != "prod":
        pytest.skip("KEDA scales prod only")
    cluster = of_kind(documents, "RabbitmqCluster")[0]["metadata"]["name"]
    for service in SERVICES:
        (scaler,) = autoscalers(documents, service)
        (trigger,) = [t for t in scaler["spec"]["triggers"] if t["type"] == "rabbitmq"]
        meta = trigger["metadata"]
        assert meta["mode"] == "QueueLength" and meta["protocol"] == "http"
        assert meta.get("excludeUnacknowledged", "false") == "false"  # taken, not finished: still work
        # The management API of the service's own broker and vhost, without credentials.
        amqp = url_to_parts(env(app_container(deployment(documents, service)))["AMQP_URI"]["value"])
        assert meta["host"] == f"http://{cluster}.{NAMESPACE}.svc:15672/{amqp.path}", meta["host"]
        # All of its queues summed, by exact name: nothing else.
        assert meta["useRegex"] == "true" and meta["operation"] == "sum"
        pattern = re.compile(meta["queueName"])
        queues = consumed_queues(service)
        assert f"rpc-{service}" in queues and any(q.startswith("evt-") for q in queues)
        assert all(pattern.search(q) for q in queues), (
            f"{service}: misses {[q for q in queues if not pattern.search(q)]}"
        )
        counted = sorted(q for q in not_work(service) if pattern.search(q))
        assert counted == [], f"{service}: counts {counted}"
        # A replica's worth of work: its worker pool (nameko's prefetch too).
        workers = configmap_data(documents, service)[f"{service.upper()}_MAX_WORKERS"]
        assert float(meta["value"]) == float(workers), f"{service}: target {meta['value']}, pool {workers}"


def test_9_keda_reads_the_management_api_as_a_user_that_can_touch_nothing(overlay):
    name, documents = overlay
    if name != "prod":
        pytest.skip("KEDA scales prod only")
    auths = by_name(documents, "TriggerAuthentication")
    users = by_name(documents, "User")
    permissions = {p["spec"]["userReference"]["name"]: p for p in of_kind(documents, "Permission")}
    cluster = of_kind(documents, "RabbitmqCluster")[0]
    for service in SERVICES:
        (scaler,) = autoscalers(documents, service)
        (trigger,) = [t for t in scaler["spec"]["triggers"] if t["type"] == "rabbitmq"]
        auth = auths[trigger["authenticationRef"]["name"]]["spec"]
        refs = {ref["parameter"]: ref for ref in auth["secretTargetRef"]}
        assert {"username", "password"} <= set(refs) and refs["username"]["name"] == refs["password"]["name"]
        (user,) = [u for u, doc in users.items() if f"{u}-user-credentials" == refs["username"]["name"]]
        assert users[user]["spec"]["rabbitmqClusterReference"]["name"] == cluster["metadata"]["name"]
        assert users[user]["spec"]["tags"] == ["management"]  # the HTTP API, no more
        access = permissions[user]["spec"]["permissions"]
        for name_used in consumed_queues(service) | {"nameko-rpc", f"{service}.events", "amq.default"}:
            assert not any(re.search(access[kind], name_used) for kind in ("configure", "write", "read")), name_used
    # The KEDA operator may reach the broker's management API (NetworkPolicies add up).
    broker_labels = {"app.kubernetes.io/name": cluster["metadata"]["name"]}
    admitted = [
        rule
        for policy in of_kind(documents, "NetworkPolicy")
        if policy["spec"]["podSelector"].get("matchLabels") == broker_labels
        for rule in policy["spec"].get("ingress", [])
        if any(p["port"] == 15672 for p in rule.get("ports", []))
        and any(
            peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "keda"}
            and peer.get("podSelector", {}).get("matchLabels") == {"app": "keda-operator"}
            for peer in rule.get("from", [])
        )
    ]
    assert admitted, "no NetworkPolicy admits the KEDA operator to the management API"


def test_9_the_spread_leaves_out_nodes_whose_taints_the_pods_do_not_tolerate(overlay):
    name, documents = overlay
    for service in SERVICES:
        constraints = deployment(documents, service)["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        if name == "prod":
            assert any(c["whenUnsatisfiable"] == "DoNotSchedule" for c in constraints), f"prod/{service}"
        for constraint in constraints:
            assert constraint.get("nodeTaintsPolicy") == "Honor", f"{name}/{service}: {constraint['topologyKey']}"


def test_9_an_outage_never_blocks_a_drain(overlay):
    """During a broker or database outage every pod is unready; a budget that counts them blocks
    every eviction until the outage ends."""
    name, documents = overlay
    budgets = by_name(documents, "PodDisruptionBudget")
    for service in SERVICES:
        spec = budgets[service]["spec"]
        assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow", f"{name}/{service}"


# --- 10: Secrets that change reach the running pods ---------------------------------------------


def secrets_read(dep):
    """Every Secret the Deployment's pods read: env, envFrom and volumes, init containers included."""
    spec = dep["spec"]["template"]["spec"]
    names = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for projected in volume.get("projected", {}).get("sources", []):
            if "secret" in projected:
                names.add(projected["secret"]["name"])
    return names


def test_10_a_deployment_rolls_when_a_secret_its_pods_read_changes(overlay):
    name, documents = overlay
    for service in SERVICES:
        dep = deployment(documents, service)
        annotation = dep["metadata"].get("annotations", {}).get(RELOAD)
        assert annotation, f"{name}/{service}: no {RELOAD} annotation"
        listed = [s.strip() for s in annotation.split(",")]
        assert len(listed) == len(set(listed))
        read = secrets_read(dep)
        assert {"grassroots-app", f"{service}-db-credentials"} <= read
        assert set(listed) == read, f"{name}/{service}: reloads on {sorted(listed)}, reads {sorted(read)}"
    # The annotation does nothing without the operator: the deployment page requires it.
    deployment_md = docs("deployment.md")
    operators = deployment_md.split("## Operators", 1)[1].split("\n## ", 1)[0]
    assert "Reloader" in operators and RELOAD in deployment_md, "docs/deployment.md: Reloader is a required operator"


def test_the_secret_list_check_can_fail(overlay):
    _, documents = overlay
    dep = copy.deepcopy(deployment(documents, "grid"))
    spec = dep["spec"]["template"]["spec"]
    spec["containers"][0]["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "grid-x", "key": "k"}}})
    spec["volumes"].append({"name": "tls", "secret": {"secretName": "grid-tls"}})
    assert {"grid-x", "grid-tls"} <= secrets_read(dep)
    assert not {"grid-x", "grid-tls"} & set(dep["metadata"]["annotations"][RELOAD].split(","))
