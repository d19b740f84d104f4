"""Custom resources in the rendered overlays against the vendored upstream CRD schemas.

Every document whose apiVersion is not a built-in Kubernetes group must have a schema under
k8s/schemas/ (provenance in k8s/schemas/SOURCES.md) and validate against it the way the API
server would, unknown fields included (the API server prunes them silently): see
tests/deploy/crd_validation.py for how the Kubernetes extensions are handled. The validator's own
tests below run on tests/deploy/samples/custom-resources.yaml, so the check is known to fail when
it should.
"""

import copy
import glob
import hashlib
import importlib.util
import json
import os
import re

import pytest
import yaml

from tests.deploy import crd_validation as cv

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "custom-resources.yaml")
SOURCES = os.path.join(cv.SCHEMAS, "SOURCES.md")


def _report(missing, invalid):
    lines = list(missing)
    for resource, messages in invalid.items():
        lines.append(resource)
        lines.extend(f"    {m}" for m in messages)
    return "\n".join(lines)


# --- the overlays -----------------------------------------------------------------------------


def test_every_custom_resource_has_a_vendored_schema(overlay):
    name, documents = overlay
    missing, _ = cv.check_documents(documents)
    assert not missing, (
        f"overlay {name}: custom resources without a vendored CRD schema "
        f"(vendor it with k8s/schemas/vendor_crd.py, record it in SOURCES.md):\n" + "\n".join(missing)
    )


def test_custom_resources_validate_against_their_crd_schemas(overlay):
    name, documents = overlay
    _, invalid = cv.check_documents(documents)
    assert not invalid, f"overlay {name}: custom resources that do not match their CRD schema:\n" + _report([], invalid)


def test_custom_resources_have_a_name(overlay):
    name, documents = overlay
    nameless = [cv.describe(d) for d in documents if not cv.is_builtin(d) and not (d.get("metadata") or {}).get("name")]
    assert not nameless, f"overlay {name}: custom resources without metadata.name: {nameless}"


# --- the vendored schemas ---------------------------------------------------------------------


def _vendored():
    return sorted(os.path.relpath(p, cv.SCHEMAS) for p in glob.glob(os.path.join(cv.SCHEMAS, "*", "*.json")))


def test_every_vendored_schema_is_recorded_with_its_sha256():
    with open(SOURCES, encoding="utf-8") as f:
        sources = f.read()
    recorded = dict(re.findall(r"`([\w.-]+/[\w.-]+\.json)`[^\n]*?\b([0-9a-f]{64})\b", sources))
    problems = []
    for rel in _vendored():
        with open(os.path.join(cv.SCHEMAS, rel), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if rel not in recorded:
            problems.append(f"{rel}: no row in SOURCES.md")
        elif recorded[rel] != digest:
            problems.append(f"{rel}: sha256 {digest}, SOURCES.md says {recorded[rel]}")
    assert _vendored(), "no vendored schema under k8s/schemas"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel", _vendored())
def test_vendored_schema_is_in_canonical_form_and_usable(rel):
    spec = importlib.util.spec_from_file_location("vendor_crd", os.path.join(cv.SCHEMAS, "vendor_crd.py"))
    assert spec is not None and spec.loader is not None
    vendor_crd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor_crd)
    path = os.path.join(cv.SCHEMAS, rel)
    with open(path, "rb") as f:
        data = f.read()
    schema = json.loads(data)
    assert vendor_crd.render(schema) == data, f"{rel} is not what vendor_crd.py writes (re-vendor it)"
    assert schema.get("type") == "object" and "spec" in schema.get("properties", {}), rel
    cv.KubernetesValidator.check_schema(cv.to_jsonschema(schema))


# --- the validator itself, on the samples -----------------------------------------------------


def _samples():
    with open(SAMPLES, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _sample(kind):
    return copy.deepcopy(next(d for d in _samples() if d["kind"] == kind))


def test_the_samples_are_valid_and_cover_every_vendored_schema():
    samples = _samples()
    missing, invalid = cv.check_documents(samples)
    assert not missing and not invalid, _report(missing, invalid)
    used = {os.path.relpath(cv.schema_file(d), cv.SCHEMAS) for d in samples}
    assert used == set(_vendored())


def _errors(doc):
    return cv.validate(doc)


def test_rejects_a_wrong_type():
    doc = _sample("RabbitmqCluster")
    doc["spec"]["replicas"] = "three"
    assert _errors(doc) == ["spec.replicas: 'three' is not of type 'integer'"]


def test_rejects_a_wrong_type_deep_in_an_embedded_pod_template():
    doc = _sample("RabbitmqCluster")
    pod = doc["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
    pod["containers"][0]["ports"][0]["containerPort"] = "15692"
    assert _errors(doc) == [
        "spec.override.statefulSet.spec.template.spec.containers[0].ports[0].containerPort: "
        "'15692' is not of type 'integer'"
    ]


def test_rejects_an_unknown_field():
    doc = _sample("Vhost")
    doc["spec"]["defaultQueueTyp"] = "quorum"  # a typo the API server would silently drop
    assert _errors(doc) == ["spec.defaultQueueTyp: unknown field (not in the schema; the API server would prune it)"]


def test_rejects_an_unknown_field_at_the_top_and_in_metadata():
    doc = _sample("User")
    doc["specs"] = {}
    doc["metadata"]["label"] = {"a": "b"}
    assert _errors(doc) == [
        "metadata.label: unknown field (not in the schema; the API server would prune it)",
        "specs: unknown field (not in the schema; the API server would prune it)",
    ]


def test_rejects_an_unknown_field_in_an_object_without_properties():
    doc = _sample("Cluster")
    doc["spec"]["ephemeralVolumeSource"] = {
        "volumeClaimTemplate": {
            "metadata": {"labels": {"a": "b"}},  # `metadata: {type: object}` here: the API server prunes it all
            "spec": {"accessModes": ["ReadWriteOnce"]},
        }
    }
    assert _errors(doc) == [
        "spec.ephemeralVolumeSource.volumeClaimTemplate.metadata.labels: unknown field "
        "(not in the schema; the API server would prune it)"
    ]


def test_rejects_a_missing_required_field():
    doc = _sample("Database")
    del doc["spec"]["owner"]
    assert _errors(doc) == ["spec: 'owner' is a required property"]
    doc = _sample("Vhost")
    del doc["spec"]["rabbitmqClusterReference"]
    assert _errors(doc) == ["spec: 'rabbitmqClusterReference' is a required property"]


def test_rejects_a_missing_or_malformed_name():
    doc = _sample("PodMonitor")
    del doc["metadata"]["name"]
    assert _errors(doc) == ["metadata: 'name' is a required property"]
    doc["metadata"]["name"] = "Grid_Monitor"
    assert len(_errors(doc)) == 1 and _errors(doc)[0].startswith("metadata.name: 'Grid_Monitor' does not match")


def test_rejects_label_values_that_are_not_strings():
    doc = _sample("PodMonitor")
    doc["metadata"]["labels"] = {"enabled": True}
    assert _errors(doc) == ["metadata.labels.enabled: True is not of type 'string'"]


def test_rejects_an_enum_violation():
    doc = _sample("Database")
    doc["spec"]["databaseReclaimPolicy"] = "keep"
    assert _errors(doc) == ["spec.databaseReclaimPolicy: 'keep' is not one of ['delete', 'retain']"]


def test_int_or_string_accepts_both_and_nothing_else():
    doc = _sample("ServiceMonitor")
    for port in (8000, "http"):
        doc["spec"]["endpoints"][0]["targetPort"] = port
        assert _errors(doc) == []
    for wrong in (True, 1.5, None, ["http"]):
        doc["spec"]["endpoints"][0]["targetPort"] = wrong
        assert [e.split(":")[0] for e in _errors(doc)] == ["spec.endpoints[0].targetPort"], wrong


def test_quantities_are_int_or_string_with_the_quantity_pattern():
    doc = _sample("RabbitmqCluster")
    doc["spec"]["resources"]["limits"]["memory"] = 1073741824
    assert _errors(doc) == []
    doc["spec"]["resources"]["limits"]["memory"] = "1 GB"
    assert [e.split(":")[0] for e in _errors(doc)] == ["spec.resources.limits.memory"]


def test_rejects_duplicate_list_map_keys_with_defaults():
    doc = _sample("RabbitmqCluster")
    container = doc["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]["containers"][0]
    container["ports"].append({"containerPort": 15692, "protocol": "TCP", "name": "again"})  # protocol defaults to TCP
    (error,) = _errors(doc)
    assert error.startswith(
        "spec.override.statefulSet.spec.template.spec.containers[0].ports: duplicate entries [0] and [1]"
    )
    container["ports"][1]["protocol"] = "UDP"
    assert _errors(doc) == []


def test_rejects_duplicates_in_a_set():
    doc = _sample("PodMonitor")
    doc["spec"]["scrapeProtocols"] = ["PrometheusProto", "PrometheusProto"]
    (error,) = _errors(doc)
    assert error.startswith("spec.scrapeProtocols: duplicate set entries")


def test_go_patterns_with_inline_flags():
    doc = _sample("PrometheusRule")
    doc["spec"]["groups"][0]["partial_response_strategy"] = "WARN"  # ^(?i)(abort|warn)?$ in RE2
    assert _errors(doc) == []
    doc["spec"]["groups"][0]["partial_response_strategy"] = "maybe"
    assert [e.split(":")[0] for e in _errors(doc)] == ["spec.groups[0].partial_response_strategy"]


def test_formats():
    doc = _sample("RabbitmqCluster")
    doc["spec"]["replicas"] = 2**31
    assert [e.split(":")[0] for e in _errors(doc)] == ["spec.replicas"]  # format: int32


def test_keda_trigger_metadata_values_are_strings():
    doc = _sample("ScaledObject")
    doc["spec"]["triggers"][0]["metadata"]["value"] = 20  # map[string]string: the API server refuses a number
    assert _errors(doc) == ["spec.triggers[0].metadata.value: 20 is not of type 'string'"]


def test_backup_method_and_retention_policy():
    doc = _sample("ScheduledBackup")
    doc["spec"]["method"] = "barmanCloud"  # the plugin is `method: plugin` with a pluginConfiguration
    assert _errors(doc) == [
        "spec.method: 'barmanCloud' is not one of ['barmanObjectStore', 'volumeSnapshot', 'plugin']"
    ]
    doc = _sample("ObjectStore")
    doc["spec"]["retentionPolicy"] = "30 days"
    assert [e.split(":")[0] for e in _errors(doc)] == ["spec.retentionPolicy"]
    doc["spec"]["retentionPolicy"] = "30d"
    del doc["spec"]["configuration"]["destinationPath"]
    assert _errors(doc) == ["spec.configuration: 'destinationPath' is a required property"]


def test_preserve_unknown_fields_and_nullable():
    schema = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "free": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {"known": {"type": "integer"}},
                    },
                    "strict": {"type": "object", "properties": {"known": {"type": "integer"}}},
                    "maybe": {"type": "string", "nullable": True},
                },
            },
        },
    }
    validator = cv.validator_for_schema(schema)
    ok = {"metadata": {"name": "x"}, "spec": {"free": {"known": 1, "anything": {"goes": [1]}}, "maybe": None}}
    assert cv.errors_for_schema(validator, ok) == []
    bad = {"metadata": {"name": "x"}, "spec": {"free": {"known": "1"}, "strict": {"other": 1}, "maybe": 1}}
    assert cv.errors_for_schema(validator, bad) == [
        "spec.free.known: '1' is not of type 'integer'",  # preserving unknown fields still checks known ones
        "spec.maybe: 1 is not of type 'string', 'null'",
        "spec.strict.other: unknown field (not in the schema; the API server would prune it)",
    ]


def test_a_custom_resource_without_a_vendored_schema_is_named():
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    missing, invalid = cv.check_documents([widget, route, deployment])
    assert missing == [
        "Widget w (example.com/v1): no schema at k8s/schemas/example.com/widget_v1.json",
        "HTTPRoute r (gateway.networking.k8s.io/v1): "
        "no schema at k8s/schemas/gateway.networking.k8s.io/httproute_v1.json",
    ]
    assert invalid == {}


def test_builtin_groups():
    assert cv.is_builtin({"apiVersion": "v1"}) and cv.is_builtin({"apiVersion": "autoscaling/v2"})
    assert cv.is_builtin({"apiVersion": "networking.k8s.io/v1"})
    assert not cv.is_builtin({"apiVersion": "monitoring.coreos.com/v1"})
    assert not cv.is_builtin({"apiVersion": "snapshot.storage.k8s.io/v1"})
