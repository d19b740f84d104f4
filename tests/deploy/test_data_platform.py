"""RabbitMQ and PostgreSQL as deployed (issue 15): a broker that starts without a resource alarm,
drains that neither block nor break quorum, PostgreSQL archived and backed up to an object store
and restorable from it, and another system's own narrow path to the RPC endpoints.

The operator and RabbitMQ behaviour the checks model is read from their source at the releases
deployed (cluster-operator v2.22.3, rabbitmq-server v4.1.8, CloudNativePG v1.30.0,
plugin-barman-cloud v0.14.0); each constant says where. Every check here failed on the manifests
as they were before issue 15 (the dev broker's 2Gi volume and 512Mi limit, no enablePDB, no broker
PodDisruptionBudget, no backups, no restore overlay, no caller user)."""

import importlib
import os
import re
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from tests.deploy.conftest import ROOT, SERVICES, of_kind, render
from tests.deploy.test_manifests import by_name, quantity, queue_names

BROKER = "grassroots-rabbitmq"
DATABASE = "grassroots-pg"
DEPLOYMENT_DOC = os.path.join(ROOT, "docs", "deployment.md")
CALLING_DOC = os.path.join(ROOT, "docs", "calling.md")

GiB = 2**30
MiB = 2**20


def read(path):
    with open(path, encoding="utf-8") as source:
        return source.read()


def broker(documents):
    return by_name(documents, "RabbitmqCluster")[BROKER]


def database(documents):
    return by_name(documents, "Cluster")[DATABASE]


# --- the releases the checks below model ---------------------------------------------------------

# The operators' behaviour modelled here was read in their source at these releases; an upgrade
# recorded in k8s/schemas/SOURCES.md (or a new RabbitMQ image) means reading it again.
MODELLED_RELEASES = {
    "rabbitmq/cluster-operator": "v2.22.3",
    "cloudnative-pg/cloudnative-pg": "v1.30.0",
    "cloudnative-pg/plugin-barman-cloud": "v0.14.0",
}
MODELLED_RABBITMQ = "4.1.8"  # rabbitmq/rabbitmq-server tag v4.1.8


def test_the_modelled_releases_are_the_deployed_ones():
    sources = read(os.path.join(ROOT, "k8s", "schemas", "SOURCES.md"))
    for project, release in MODELLED_RELEASES.items():
        recorded = set(re.findall(rf"\|\s*{re.escape(project)}\s*\|\s*(v[0-9][^\s|]*)\s*\|", sources))
        assert recorded == {release}, f"{project}: SOURCES.md records {recorded}, the checks here model {release}"
    image = broker(render("dev"))["spec"]["image"]
    assert re.fullmatch(rf"rabbitmq:{re.escape(MODELLED_RABBITMQ)}(-management)?", image), image


# --- 2. the broker starts without a disk or memory alarm ---------------------------------------

# cluster-operator v2.22.3, internal/resource/configmap.go, defaultRabbitmqConf: written into
# /etc/rabbitmq/conf.d/10-operatorDefaults.conf of every node, whatever the RabbitmqCluster says.
OPERATOR_DISK_FREE_LIMIT = "2GB"
# rabbitmq-server v4.1.8, deps/rabbit/Makefile (the rabbit application's defaults).
DEFAULT_MEMORY_HIGH_WATERMARK = 0.6
# What a RabbitMQ node with the management and Prometheus plugins, ~70 queues and a dozen
# connections uses before any message: mem_used of the test broker (RabbitMQ 3.10.8, 66 queues,
# 13 connections) in its /api/nodes, 159,019,008 bytes, on 2026-11-30.
IDLE_NODE_BYTES = 160_000_000
# Room for messages and the quorum queues' WAL and segments before the disk alarm.
MIN_DISK_ROOM = 1 * GiB

# Bytes `df -kP` shows available to a non-root user (RabbitMQ runs as uid 999) on a freshly made
# ext4 volume of each size: (free blocks - blocks reserved for root - the 4,096 clusters the kernel
# keeps back) x 4 KiB, the counts from `mkfs.ext4 -F` (e2fsprogs 1.47.0 defaults: 4 KiB blocks,
# 16 KiB per inode, a 64 MiB journal, 5% reserved) and `dumpe2fs -h` on sparse files.
# test_the_ext4_figures_are_what_mkfs_makes measures them again where mkfs.ext4 is installed.
EXT4_AVAILABLE = {
    2 * GiB: 1_916_198_912,
    4 * GiB: 3_912_130_560,
    10 * GiB: 9_910_349_824,
}


def ext4_available(size):
    """A lower bound of what an empty ext4 volume of ``size`` bytes shows available to RabbitMQ:
    5% reserved for root, at most 5% of metadata (inode tables 1.6%, a journal of 64 MiB up to
    16 GiB), and 16 MiB the kernel keeps back. Below every measurement in EXT4_AVAILABLE."""
    return 0.9 * size - 16 * MiB


def rabbitmq_bytes(value):
    """An information unit as RabbitMQ 4.1 reads it (rabbit_resource_monitor_misc:
    parse_information_unit): k/K/KB/M/MB/G/GB... are powers of 1000, Ki/KiB/Mi/MiB/Gi/GiB... of 1024."""
    match = re.fullmatch(r"(\d+)([kKmMgGtT]?)(i?)([bB]?)", value.strip())
    assert match, f"not an information unit RabbitMQ reads: {value!r}"
    number, prefix, binary, _ = match.groups()
    power = " kmgt".index(prefix.lower()) if prefix else 0
    return int(number) * (1024 if binary else 1000) ** power


def operator_memory_available(limit):
    """total_memory_available_override_value as the operator sets it from the memory limit
    (cluster-operator v2.22.3, internal/resource/configmap.go, removeHeadroom): the limit minus
    min(20% of it, 2 GiB), left to the Erlang VM."""
    limit = int(limit)
    return limit - 2 * GiB if limit // 5 > 2 * GiB else limit - limit // 5


def node_config(cluster):
    """The settings of the user configuration (90-userDefinedConfiguration.conf, read after the
    operator's file, so it wins)."""
    config = {}
    for line in cluster["spec"].get("rabbitmq", {}).get("additionalConfig", "").splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            config[key] = value
    return config


def alarm_thresholds(cluster):
    """(bytes available on the fresh volume, the disk alarm's limit, the memory alarm's threshold)."""
    config = node_config(cluster)
    modelled = {
        "disk_free_limit.absolute",
        "vm_memory_high_watermark.relative",
        "total_memory_available_override_value",
    }
    other = [k for k in config if k.startswith(("disk_free_limit", "vm_memory_high_watermark")) and k not in modelled]
    assert not other, f"{other}: not modelled here, extend alarm_thresholds"
    spec = cluster["spec"]
    disk_limit = rabbitmq_bytes(config.get("disk_free_limit.absolute", OPERATOR_DISK_FREE_LIMIT))
    volume = quantity(spec["persistence"]["storage"])
    available = EXT4_AVAILABLE.get(int(volume), ext4_available(volume))
    memory = config.get("total_memory_available_override_value")
    total = (
        rabbitmq_bytes(memory) if memory else operator_memory_available(quantity(spec["resources"]["limits"]["memory"]))
    )
    watermark = float(config.get("vm_memory_high_watermark.relative", DEFAULT_MEMORY_HIGH_WATERMARK)) * total
    return available, disk_limit, watermark


def test_the_broker_starts_without_a_disk_alarm(overlay):
    name, documents = overlay
    available, disk_limit, _ = alarm_thresholds(broker(documents))
    assert available - disk_limit >= MIN_DISK_ROOM, (
        f"{name}: the broker's volume shows {available:,.0f} bytes available, the disk alarm is at "
        f"{disk_limit:,} bytes: {available - disk_limit:,.0f} bytes of room, fewer than {MIN_DISK_ROOM:,}"
    )


def test_the_broker_starts_without_a_memory_alarm(overlay):
    name, documents = overlay
    _, _, watermark = alarm_thresholds(broker(documents))
    assert watermark >= 2 * IDLE_NODE_BYTES, (
        f"{name}: the memory alarm is at {watermark:,.0f} bytes, less than twice what an idle node "
        f"uses ({IDLE_NODE_BYTES:,})"
    )


def test_the_alarm_arithmetic_is_the_operators_and_rabbitmqs():
    # the figures in the comment of k8s/overlays/dev/rabbitmq.yaml, and what the old dev broker had
    assert rabbitmq_bytes(OPERATOR_DISK_FREE_LIMIT) == 2_000_000_000
    assert rabbitmq_bytes("2GiB") == 2 * GiB and rabbitmq_bytes("512Mi") == 512 * MiB
    assert rabbitmq_bytes("2000000000") == 2_000_000_000
    assert int(DEFAULT_MEMORY_HIGH_WATERMARK * operator_memory_available(512 * MiB)) == 257_698_038
    assert int(DEFAULT_MEMORY_HIGH_WATERMARK * operator_memory_available(1 * GiB)) == 515_396_076
    assert operator_memory_available(16 * GiB) == 14 * GiB  # the 2 GiB cap on the headroom
    for size, measured in EXT4_AVAILABLE.items():
        assert ext4_available(size) <= measured, size  # the model never promises more than ext4 gives
    assert EXT4_AVAILABLE[2 * GiB] < 2_000_000_000  # the old dev volume: in alarm before any message
    old: dict[str, Any] = {
        "spec": {
            "persistence": {"storage": "2Gi"},
            "resources": {"limits": {"memory": "512Mi"}},
            "rabbitmq": {"additionalConfig": "default_queue_type = quorum"},
        }
    }
    available, disk_limit, watermark = alarm_thresholds(old)
    assert available < disk_limit and watermark < 2 * IDLE_NODE_BYTES
    old["spec"]["rabbitmq"]["additionalConfig"] = "disk_free_limit.absolute = 500MB  # overrides the operator's"
    assert alarm_thresholds(old)[1] == 500_000_000


def test_the_ext4_figures_are_what_mkfs_makes(tmp_path):
    mkfs, dumpe2fs = (
        shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4",
        shutil.which("dumpe2fs") or "/usr/sbin/dumpe2fs",
    )
    if not (os.path.exists(mkfs) and os.path.exists(dumpe2fs)):
        pytest.skip("e2fsprogs is not installed: EXT4_AVAILABLE stays as measured")
    for size, recorded in EXT4_AVAILABLE.items():
        image = tmp_path / "volume.img"
        with open(image, "wb") as f:
            f.truncate(size)  # sparse: nothing is written but the metadata
        subprocess.run([mkfs, "-q", "-F", str(image)], check=True, capture_output=True)
        header = subprocess.run([dumpe2fs, "-h", str(image)], check=True, capture_output=True, text=True).stdout
        field = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in header.splitlines() if ":" in line)}
        blocks, free = int(field["Block count"]), int(field["Free blocks"])
        reserved, block_size = int(field["Reserved block count"]), int(field["Block size"])
        kept_back = min(blocks * 2 // 100, 4096)  # the kernel's reserved clusters (ext4_calculate_resv_clusters)
        assert (free - reserved - kept_back) * block_size == recorded, f"{size} bytes: mke2fs made another volume"
        image.unlink()


# --- 3. a single-instance PostgreSQL can be drained ---------------------------------------------


def test_a_single_instance_database_has_no_disruption_budget(overlay):
    """CloudNativePG protects the primary with a PodDisruptionBudget unless enablePDB is false; with
    one instance no node holding it could be drained (CloudNativePG v1.30.0,
    docs/src/kubernetes_upgrade.md). With three, the budgets stay."""
    name, documents = overlay
    spec = database(documents)["spec"]
    if spec["instances"] == 1:
        assert spec.get("enablePDB") is False, f"{name}: one instance and CloudNativePG's PDB: drains blocked"
    else:
        assert spec.get("enablePDB", True) is True, f"{name}: {spec['instances']} instances without their PDBs"


# --- 4. broker nodes are evicted one at a time ----------------------------------------------------


def broker_pod_labels(cluster):
    """The labels the Cluster Operator puts on the broker pods (cluster-operator v2.22.3,
    internal/metadata/label.go, Label): the RabbitmqCluster's own app.kubernetes.io/* labels are
    not among them."""
    name = cluster["metadata"]["name"]
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "rabbitmq",
        "app.kubernetes.io/part-of": "rabbitmq",
    }


def selects(selector, labels):
    return (
        bool(selector.get("matchLabels"))
        and not selector.get("matchExpressions")
        and all(labels.get(k) == v for k, v in selector["matchLabels"].items())
    )


def test_broker_nodes_are_evicted_one_at_a_time_in_prod(overlay):
    name, documents = overlay
    cluster = broker(documents)
    replicas = cluster["spec"]["replicas"]
    labels = broker_pod_labels(cluster)
    budgets = [p for p in of_kind(documents, "PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
    assert len(budgets) <= 1, f"{name}: several PodDisruptionBudgets select the broker pods"
    if replicas == 1:
        for budget in budgets:  # none is needed; one must not block the drain of the only node
            assert budget["spec"].get("maxUnavailable", 0) >= 1 or budget["spec"].get("minAvailable", 1) == 0
        return
    assert budgets, f"{name}: no PodDisruptionBudget selects the broker pods ({labels})"
    spec = budgets[0]["spec"]
    evictable = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
    assert evictable == 1, f"{name}: {evictable} broker nodes may be evicted at once"
    assert replicas - evictable >= replicas // 2 + 1, f"{name}: quorum queues lose their majority"


def test_the_broker_selector_check_can_fail():
    cluster = {"metadata": {"name": BROKER}}
    labels = broker_pod_labels(cluster)
    assert selects({"matchLabels": {"app.kubernetes.io/name": BROKER}}, labels)
    # the RabbitmqCluster's own labels are not on its pods
    assert not selects(
        {"matchLabels": {"app.kubernetes.io/name": BROKER, "app.kubernetes.io/part-of": "grassroots"}}, labels
    )
    assert not selects({"matchLabels": {}}, labels)


# --- 5. PostgreSQL archived and backed up to an object store; restorable ------------------------

PLUGIN = "barman-cloud.cloudnative-pg.io"  # plugin-barman-cloud v0.14.0, web/docs/usage.md


def wal_archiver(cluster):
    archivers = [p for p in cluster["spec"].get("plugins", []) if p.get("isWALArchiver")]
    assert len(archivers) <= 1, "one WAL archiver"
    return archivers[0] if archivers else None


def secret_refs(value):
    """Every {name, key} Secret reference in an object."""
    if isinstance(value, dict):
        if set(value) == {"name", "key"}:
            yield value["name"], value["key"]
        for sub in value.values():
            yield from secret_refs(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from secret_refs(sub)


def egress_allows(policy, port):
    """Whether the policy lets its pods out to an address outside the cluster on that port."""
    for rule in policy["spec"].get("egress", []):
        peers = rule.get("to", [])
        outside = not peers or any("ipBlock" in p for p in peers)
        if outside and any(p.get("port") == port for p in rule.get("ports", [])):
            return True
    return False


def test_prod_archives_wal_and_takes_daily_base_backups(overlay):
    name, documents = overlay
    cluster = database(documents)
    archiver = wal_archiver(cluster)
    if name != "prod" and archiver is None:
        return  # dev keeps no backups
    assert archiver, f"{name}: no WAL archiving (a Barman Cloud plugin entry with isWALArchiver: true)"
    assert archiver["name"] == PLUGIN and archiver.get("enabled", True)
    parameters = archiver["parameters"]
    assert parameters.get("serverName"), "serverName: the folder of this cluster's backups (restores change it)"
    stores = by_name(documents, "ObjectStore")
    assert parameters["barmanObjectName"] in stores, f"{name}: no ObjectStore {parameters['barmanObjectName']}"
    store = stores[parameters["barmanObjectName"]]
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
    configuration = store["spec"]["configuration"]
    assert "serverName" not in configuration  # forbidden there: the Cluster's plugin parameter says it
    assert configuration["destinationPath"].startswith("s3://"), "an S3-compatible object store"
    endpoint = configuration.get("endpointURL", "https://s3.amazonaws.com")
    assert endpoint.startswith("https://"), f"{endpoint}: personal data goes over TLS"
    credentials = configuration["s3Credentials"]
    refs = set(secret_refs(credentials))
    assert {r[0] for r in refs} == {credentials["accessKeyId"]["name"]} and len(refs) >= 2, refs
    secret = credentials["accessKeyId"]["name"]
    assert secret not in by_name(documents, "Secret")
    doc = read(DEPLOYMENT_DOC)
    creation = re.search(rf"create secret generic {re.escape(secret)}((?:[^\n]*\\\n)*[^\n]*)", doc)
    assert creation, f"docs/deployment.md does not say how to create the Secret {secret}"
    for _, key in refs:
        assert f"--from-literal={key}=" in creation.group(1), f"docs/deployment.md: {secret} without {key}"
    assert re.fullmatch(r"[1-9][0-9]*[dwm]", store["spec"].get("retentionPolicy", "")), "a retention policy"
    assert configuration.get("wal", {}).get("compression")
    # the instances (and the plugin's sidecar in them) reach the endpoint
    address = re.match(r"https://[^/:]+(?::(\d+))?", endpoint)
    assert address, endpoint
    port = int(address.group(1) or 443)
    assert egress_allows(by_name(documents, "NetworkPolicy")[DATABASE], port), f"{name}: no egress to {endpoint}"
    # a base backup every day, through the plugin
    scheduled = [s for s in of_kind(documents, "ScheduledBackup") if s["spec"]["cluster"]["name"] == DATABASE]
    assert len(scheduled) == 1, f"{name}: one ScheduledBackup of {DATABASE}"
    spec = scheduled[0]["spec"]
    assert spec["method"] == "plugin" and spec["pluginConfiguration"]["name"] == PLUGIN
    fields = spec["schedule"].split()
    # CloudNativePG's schedule has six fields, seconds first (robfig/cron): daily = s m h * * *
    assert len(fields) == 6 and fields[3:] == ["*", "*", "*"], spec["schedule"]
    assert all(f.isdigit() for f in fields[:3]), f"{spec['schedule']}: once a day"
    assert spec.get("immediate") is True, "the first base backup at once: WAL alone restores nothing"


def restore_documents():
    return render("prod-restore")


def test_the_restore_overlay_recovers_grassroots_pg_from_what_prod_archives():
    from tests.deploy import crd_validation as cv

    prod, restore = render("prod"), restore_documents()
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, prod)) == sorted(map(key, restore)), "the restore overlay is the prod overlay"
    for before, after in zip(sorted(prod, key=key), sorted(restore, key=key), strict=True):
        if key(before) != ("Cluster", DATABASE):
            assert before == after, f"{key(before)} differs in the restore overlay"
    source_cluster, cluster = database(prod), database(restore)
    archiving = wal_archiver(source_cluster)["parameters"]
    spec = cluster["spec"]
    rest = {k: v for k, v in spec.items() if k not in ("bootstrap", "externalClusters", "plugins")}
    assert rest == {k: v for k, v in source_cluster["spec"].items() if k != "plugins"}
    recovery = spec["bootstrap"]["recovery"]
    assert set(spec["bootstrap"]) == {"recovery"}
    origins = {c["name"]: c for c in spec["externalClusters"]}
    origin = origins[recovery["source"]]["plugin"]
    assert origin["name"] == PLUGIN
    # it reads the folder prod archives into, in prod's object store...
    assert origin["parameters"] == {
        "barmanObjectName": archiving["barmanObjectName"],
        "serverName": archiving["serverName"],
    }
    # ...and archives, from then on, into another one of the same store (Barman refuses a used one)
    new = wal_archiver(cluster)["parameters"]
    assert new["barmanObjectName"] == archiving["barmanObjectName"]
    assert new["serverName"] != archiving["serverName"], "the restored cluster would archive into the old history"
    missing, invalid = cv.check_documents(restore)
    assert not missing and not invalid, (missing, invalid)
    doc = read(DEPLOYMENT_DOC)
    for step in (
        f"kubectl -n grassroots delete cluster {DATABASE}",
        "kubectl apply -k k8s/overlays/prod-restore",
        f"serverName: {new['serverName']}",
    ):
        assert step in doc, f"docs/deployment.md's restore lacks {step!r}"


# --- 10. another system's own path to the RPC endpoints -----------------------------------------

CALLER = "external"
CALLER_USER = f"{CALLER}-rabbitmq-user"


def caller_objects(documents):
    users = [u for u in of_kind(documents, "User") if u["metadata"]["name"] == CALLER_USER]
    permissions = [p for p in of_kind(documents, "Permission") if p["spec"]["userReference"]["name"] == CALLER_USER]
    topics = [p for p in of_kind(documents, "TopicPermission") if p["spec"]["userReference"]["name"] == CALLER_USER]
    assert len(users) == 1, f"no User {CALLER_USER} for another system"
    assert len(permissions) == 1 and len(topics) == 1, "one Permission and one TopicPermission"
    return users[0], permissions[0], topics[0]


def rpc_routing_keys():
    """<service>.<method> of every RPC method of the suite."""
    from nameko.rpc import Rpc

    keys = set()
    for service in SERVICES:
        cls = getattr(importlib.import_module(f"services.{service}.service"), f"{service.capitalize()}Service")
        for attr in dir(cls):
            if any(isinstance(e, Rpc) for e in getattr(getattr(cls, attr), "nameko_entrypoints", ())):
                keys.add(f"{service}.{attr}")
    assert len(keys) > 20
    return keys


def matches(pattern, name):
    return re.search(pattern, name) is not None


def test_another_system_has_its_own_narrow_broker_user(overlay):
    name, documents = overlay
    assert CALLER not in SERVICES, "its reply queues would look like a service's"
    user, permission, topic = caller_objects(documents)
    assert user["spec"].get("tags", []) == [], "AMQP only: no management API"
    vhosts = {v["spec"]["name"] for v in of_kind(documents, "Vhost")}
    for obj in (user, permission, topic):
        assert obj["spec"]["rabbitmqClusterReference"]["name"] == BROKER
    assert permission["spec"]["vhost"] == topic["spec"]["vhost"] and permission["spec"]["vhost"] in vhosts
    allowed = permission["spec"]["permissions"]
    reply = f"rpc.reply-{CALLER}-{uuid.uuid4()}"
    # what a caller does: declare, bind and read its reply queue, publish to nameko-rpc
    assert matches(allowed["configure"], reply)
    assert matches(allowed["write"], reply) and matches(allowed["write"], "nameko-rpc")
    assert matches(allowed["read"], reply) and matches(allowed["read"], "nameko-rpc")
    # and nothing else: not declare (so not delete) nameko-rpc, nor any name a service uses
    assert not matches(allowed["configure"], "nameko-rpc")
    for other in (
        f"rpc.reply-{CALLER}-x",
        f"rpc.reply-{CALLER}-{uuid.uuid4()}.x",
        f"rpc.reply-standalone_rpc_proxy-{uuid.uuid4()}",
    ):
        assert not any(matches(allowed[a], other) for a in allowed), other
    for service in SERVICES:
        for access, names in queue_names(service, documents).items():
            granted = sorted(n for n in names - {"nameko-rpc"} if matches(allowed[access], n))
            assert granted == [], f"{name}: the caller may {access} {service}'s {granted}"
    # routing keys on nameko-rpc: requests to a method only; binds with a reply's uuid only
    assert topic["spec"]["permissions"]["exchange"] == "nameko-rpc"
    write, read_ = topic["spec"]["permissions"]["write"], topic["spec"]["permissions"]["read"]
    for key in rpc_routing_keys():
        assert matches(write, key), key
        assert not matches(read_, key), f"the caller may bind to {key}'s requests"
    assert matches(read_, str(uuid.uuid4()))
    for key in ("#", "*", "*.*", "grid.*", "#.get_unit", str(uuid.uuid4()), "grid", ""):
        assert not matches(write, key), f"the caller may publish with {key!r}"
    for key in ("#", "*", "*.*", "grid.*", "", f"{uuid.uuid4()}.#"):
        assert not matches(read_, key), f"the caller may bind with {key!r}"


def test_another_system_reaches_the_broker_on_amqp_only(overlay):
    name, documents = overlay
    labels = broker_pod_labels(broker(documents))
    doc = read(DEPLOYMENT_DOC)
    found = []
    for policy in of_kind(documents, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if 5672 not in {p["port"] for p in rule.get("ports", [])}:
                continue  # the operators' and Prometheus' ports
            for peer in rule.get("from", []):
                if "namespaceSelector" not in peer:
                    continue  # the services and the broker's own nodes, in its namespace
                namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
                assert namespace, f"{name}: AMQP from namespaces chosen by a label anyone may set"
                pods = peer.get("podSelector", {}).get("matchLabels")
                assert pods, f"{name}: every pod of {namespace} may reach the broker"
                assert {p["port"] for p in rule["ports"]} == {5672}, f"{name}: {namespace} reaches more than AMQP"
                found.append((namespace, pods))
    assert len(found) == 1, f"{name}: no NetworkPolicy admits another system to the broker ({found})"
    namespace, pods = found[0]
    assert f"`{namespace}`" in doc and all(f'{k}: "{v}"' in doc for k, v in pods.items()), (
        "docs/deployment.md names the caller's namespace and pod label"
    )


def calling_doc_client():
    """The client code of docs/calling.md's "Connecting from another system", executed."""
    text = read(CALLING_DOC)
    section = text.split("\n## Connecting from another system\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, 'docs/calling.md: no client code under "Connecting from another system"'
    code = block.group(1)
    namespace = {"__name__": "calling_doc_client"}
    exec(compile(code, CALLING_DOC, "exec"), namespace)
    return namespace


def test_the_documented_client_calls_a_service_with_only_the_callers_permissions(grid, rabbit_config, rabbit_manager):
    """On the test RabbitMQ: a user with exactly the rendered Permission and TopicPermission calls grid
    through docs/calling.md's client, and is refused what the permissions exclude."""
    from urllib.parse import quote

    from amqp.exceptions import AccessRefused
    from kombu import Connection, Exchange, Queue

    from tests.support import token

    _, permission, topic = caller_objects(render("dev"))
    allowed, topics = permission["spec"]["permissions"], topic["spec"]["permissions"]
    vhost = rabbit_config["vhost"]
    name, password = f"{CALLER}/{uuid.uuid4().hex[:8]}+u", f"pw/{uuid.uuid4().hex}+="
    rabbit_manager._put("users", name, json={"password": password, "tags": ""})
    try:
        rabbit_manager.set_vhost_permissions(vhost, name, allowed["configure"], allowed["read"], allowed["write"])
        rabbit_manager._put("topic-permissions", vhost, name, json=topics)
        host = rabbit_config["AMQP_URI"].split("@", 1)[1].rsplit("/", 1)[0]
        uri = f"amqp://{quote(name, safe='')}:{quote(password, safe='')}@{host}/{quote(vhost, safe='')}"

        client = calling_doc_client()
        assert client["CALLER"] == CALLER
        with client["caller_proxy"](uri, token("admin", sub="root")) as rpc:
            unit = rpc.grid.create_unit(parent_id=None, level="district", name="Called From Outside")
            assert rpc.grid.get_unit(unit_id=unit["id"])["name"] == "Called From Outside"

        rpc_exchange = Exchange("nameko-rpc", type="topic", durable=True)
        with Connection(uri) as conn, pytest.raises(AccessRefused):
            rpc_exchange(conn.channel()).declare()  # configure on nameko-rpc: it could delete it
        with Connection(uri) as conn, pytest.raises(AccessRefused):
            conn.channel().basic_get("rpc-grid")  # read grid's requests
        with Connection(uri) as conn, pytest.raises(AccessRefused):
            queue = Queue(f"rpc.reply-{CALLER}-{uuid.uuid4()}", durable=False, auto_delete=True)
            queue(conn.channel()).declare()
            conn.channel().queue_bind(queue.name, "nameko-rpc", routing_key="#")  # everyone's traffic
        with Connection(uri) as conn, pytest.raises(AccessRefused):
            producer = conn.Producer()
            producer.publish({}, exchange="nameko-rpc", routing_key=str(uuid.uuid4()), retry=False)  # a fake reply
            conn.default_channel.basic_qos(0, 1, False)  # flush: the refusal closes the channel
        with Connection(uri) as conn, pytest.raises(AccessRefused):
            conn.Producer().publish({}, exchange="grid.events", routing_key="incident_reported", retry=False)
            conn.default_channel.basic_qos(0, 1, False)
    finally:
        rabbit_manager._delete("users", name)
