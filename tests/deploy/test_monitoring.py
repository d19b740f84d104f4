"""k8s/base/monitoring: PodMonitors, the PrometheusRule and Grafana dashboards.

Offline: promtool checks and unit-tests the rules; the PrometheusRule carries exactly the rules
file's groups; the dashboards parse and every panel queries something; every rabbitmq_* metric they
use is in the vendored list of rabbitmq_prometheus metrics. Live (broker and PostgreSQL, like the
rest of `make test`): the four services' /metrics pass `promtool check metrics` and export every
grassroots_* metric (with the labels matched on it) that the rules and dashboards use.
"""

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from tests.deploy.conftest import K8S, OVERLAYS, SERVICES, of_kind, render

MONITORING = os.path.join(K8S, "base", "monitoring")
RULES_DIR = os.path.join(MONITORING, "rules")
RULES = os.path.join(RULES_DIR, "grassroots.rules.yaml")
RULE_TESTS = os.path.join(RULES_DIR, "tests.yaml")
DASHBOARDS = os.path.join(MONITORING, "dashboards")
RABBITMQ_METRICS = os.path.join(MONITORING, "rabbitmq-metrics.txt")
# Labels the PodMonitors' targets add to every scraped series.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}
METRIC = re.compile(r"\b((?:grassroots|rabbitmq)_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b((?:grassroots|rabbitmq)_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')


def _generate_module():
    spec = importlib.util.spec_from_file_location("monitoring_generate", os.path.join(MONITORING, "generate.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generate_module()


def promtool(*args, stdin=None, cwd=None):
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: apt-get install --no-install-recommends prometheus (see README)")
    return subprocess.run([binary, *args], input=stdin, cwd=cwd, capture_output=True, text=True)


def load_rules():
    with open(RULES) as f:
        return yaml.safe_load(f)["groups"]


def alerts():
    return [rule for group in load_rules() for rule in group["rules"] if "alert" in rule]


def load_dashboards():
    names = sorted(n for n in os.listdir(DASHBOARDS) if n.endswith(".json"))
    result = {}
    for name in names:
        with open(os.path.join(DASHBOARDS, name), encoding="utf-8") as f:
            result[name] = json.load(f)
    return result


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # panels inside collapsed rows


def queries(prose=True):
    """(where, text) of every query — rule expressions, dashboard targets and template variables —
    and, with ``prose``, of the alerts' annotations (which name metrics too)."""
    for rule in alerts():
        yield f"alert {rule['alert']}", rule["expr"]
        for key, text in rule.get("annotations", {}).items() if prose else ():
            yield f"alert {rule['alert']} {key}", text
    for name, dashboard in load_dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", ()):
                yield f"{name} panel {panel['title']!r}", target["expr"]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                yield f"{name} variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def used_metrics(prefix):
    """{metric name: {label names matched on it}} for the metrics with this prefix."""
    used: dict[str, set[str]] = {}
    for _, text in queries():
        for name in METRIC.findall(text):
            if name.startswith(prefix):
                used.setdefault(name, set())
        for name, matchers in SELECTOR.findall(text):
            if name.startswith(prefix):
                used[name].update(MATCHER.findall(matchers))
    return used


GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def assert_labels_known(prefix, known):
    """Every label matched on a metric with this prefix, or grouped by in a query using only such
    metrics, is a label of those metrics (``known``: {metric: label names}) or a target label."""
    for name, labels in used_metrics(prefix).items():
        unknown = labels - known[name] - TARGET_LABELS
        assert not unknown, f"{name}: no label {sorted(unknown)} on its series"
    for where, text in queries(prose=False):
        names = set(METRIC.findall(text))
        if not names or not all(n.startswith(prefix) for n in names):
            continue
        available = set().union(*(known[n] for n in names)) | TARGET_LABELS
        for clause in GROUPING.findall(text):
            grouped = {label.strip() for label in clause.split(",") if label.strip()}
            assert grouped <= available, f"{where}: grouped by {sorted(grouped - available)}, not a label of {names}"


# --- rules -------------------------------------------------------------------------------------


def test_promtool_checks_the_rules_file():
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", os.path.basename(RULE_TESTS), cwd=RULES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    with open(RULE_TESTS) as f:
        cases = [case for test in yaml.safe_load(f)["tests"] for case in test.get("alert_rule_test", ())]
    for rule in alerts():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it stays quiet"


def test_every_alert_waits_has_a_severity_and_explains_itself():
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        assert rule.get("for"), f"{rule['alert']}: no for:"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_the_alerts_asked_for_are_there():
    exprs = {rule["alert"]: rule["expr"] for rule in alerts()}
    wanted = {
        "GrassrootsRpcErrorRatioHigh": 'outcome="error"',
        "GrassrootsRpcLatencyP99High": "histogram_quantile(0.99",
        "GrassrootsQueueBacklog": "rabbitmq_queue_messages_ready",
        "GrassrootsDeadLetterQueueNotEmpty": r'queue=~".+\\.dead"',
        "GrassrootsEventsDeadLettered": "increase(grassroots_dead_letters_total",
        "GrassrootsQueueWithoutConsumers": "rabbitmq_queue_consumers",
        "GrassrootsOutboxBacklog": "grassroots_outbox_pending",
        "GrassrootsDistrictIncidentsPilingUp": 'handling_level="district"',
    }
    for alert, fragment in wanted.items():
        assert fragment in exprs.get(alert, ""), alert


def test_generated_files_are_current():
    assert generate.stale() == [], "run: .venv/bin/python k8s/base/monitoring/generate.py"


def _check_rendered(documents, where):
    rules = [d for d in of_kind(documents, "PrometheusRule") if d["metadata"]["name"] == "grassroots"]
    assert len(rules) == 1, f"{where}: no PrometheusRule grassroots"
    rule = rules[0]
    assert rule["metadata"]["namespace"] == "grassroots"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == load_rules(), f"{where}: the PrometheusRule differs from {RULES}"

    monitors = {d["metadata"]["name"]: d for d in of_kind(documents, "PodMonitor")}
    assert set(monitors) >= {"grassroots-services", "grassroots-rabbitmq"}, where
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["grassroots"]}
    services = monitors["grassroots-services"]["spec"]
    assert services["podMetricsEndpoints"][0]["port"] == "http"
    assert services["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert services["selector"]["matchExpressions"][0]["values"] == list(SERVICES)
    assert monitors["grassroots-rabbitmq"]["spec"]["podMetricsEndpoints"][0]["port"] == "prometheus"

    maps = {d["metadata"]["name"]: d for d in of_kind(documents, "ConfigMap")}
    for name, dashboard in load_dashboards().items():
        cm = maps.get("grassroots-dashboard-" + name.removeprefix("grassroots-").removesuffix(".json"))
        assert cm is not None, f"{where}: no ConfigMap for {name} (or its name carries a hash suffix)"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][name]) == dashboard


def _kustomize(path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: the deployment checks need `kubectl kustomize` (see README)")
    out = subprocess.run([kubectl, "kustomize", path], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_base_monitoring_renders_the_rule_monitors_and_dashboards():
    _check_rendered(_kustomize(MONITORING), "k8s/base/monitoring")


@pytest.mark.parametrize("name", ("base",) + tuple(OVERLAYS))
def test_the_suite_carries_the_same_monitoring_and_what_it_scrapes(name):
    if name == "base":
        if not os.path.exists(os.path.join(K8S, "base", "kustomization.yaml")):
            pytest.skip("k8s/base/kustomization.yaml does not exist yet (k8s/base/monitoring is checked on its own)")
        documents = _kustomize(os.path.join(K8S, "base"))
    else:
        if not os.path.isdir(os.path.join(K8S, "overlays", name)):
            pytest.skip(f"k8s/overlays/{name} does not exist yet (k8s/base/monitoring is checked on its own)")
        documents = render(name)
    if not of_kind(documents, "PrometheusRule"):
        pytest.skip(f"{name} does not include k8s/base/monitoring")
    _check_rendered(documents, name)
    # What the PodMonitors select must exist: service pods with a port named http,
    # the RabbitmqCluster returning per-object metrics.
    scraped = set()
    for deployment in of_kind(documents, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") in SERVICES:
            assert labels.get("app.kubernetes.io/part-of") == "grassroots"
            ports = [p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", ())]
            assert any(p.get("name") == "http" for p in ports), deployment["metadata"]["name"]
            scraped.add(labels["app.kubernetes.io/name"])
    assert scraped == set(SERVICES), f"{name}: service pods the PodMonitor selects: {sorted(scraped)}"
    clusters = of_kind(documents, "RabbitmqCluster")
    # The operator labels the pods app.kubernetes.io/name: <cluster name>, component: rabbitmq.
    assert [c["metadata"]["name"] for c in clusters] == ["grassroots-rabbitmq"], name
    config = clusters[0]["spec"].get("rabbitmq", {}).get("additionalConfig", "")
    assert re.search(r"prometheus\.return_per_object_metrics\s*=\s*true", config), (
        "the queue alerts need per-queue series"
    )


# --- dashboards --------------------------------------------------------------------------------


def test_dashboards_parse_and_every_panel_has_a_query():
    dashboards = load_dashboards()
    assert {d["title"] for d in dashboards.values()} == {"Grassroots — suite overview", "Grassroots — domain"}
    for name, dashboard in dashboards.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = []
        for panel in panels(dashboard):
            ids.append(panel["id"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["expr"].strip(), (name, panel["title"])
                assert target["datasource"]["uid"] == "${datasource}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
        assert len(ids) == len(set(ids)), name


def test_overview_covers_rate_errors_duration_in_flight_dead_letters_and_outbox():
    overview = load_dashboards()["grassroots-overview.json"]
    exprs = " ".join(t["expr"] for p in panels(overview) for t in p.get("targets", ()))
    for fragment in (
        "rate(grassroots_requests_total",
        'outcome="error"',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "by (service, method, le)",
        "grassroots_requests_in_flight",
        "grassroots_dead_letters_total",
        "grassroots_outbox_pending",
    ):
        assert fragment in exprs, fragment


def test_domain_dashboard_covers_the_domain_gauges():
    domain = load_dashboards()["grassroots-domain.json"]
    exprs = " ".join(t["expr"] for p in panels(domain) for t in p.get("targets", ()))
    for fragment in (
        'grassroots_notices_deliveries{namespace="$namespace", status="delivered"}',
        'grassroots_notices_deliveries{namespace="$namespace", status="failed"}',
        "by (channel)",
        "grassroots_notices_acknowledgements",
        "grassroots_volunteer_requests",
        "by (handling_level) (grassroots_grid_open_incidents",
        "grassroots_grid_screening_coverage_ratio",
    ):
        assert fragment in exprs, fragment


# --- truth: rabbitmq_* names -------------------------------------------------------------------


def vendored_rabbitmq_metrics():
    metrics = {}
    with open(RABBITMQ_METRICS) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, _kind, *labels = line.split()
                metrics[name] = set(labels[0].split(",")) if labels else set()
    return metrics


def test_every_rabbitmq_metric_used_is_one_the_plugin_exposes():
    known = vendored_rabbitmq_metrics()
    used = used_metrics("rabbitmq_")
    assert used, "no rabbitmq_* metric found in the rules and dashboards"
    for name in used:
        assert name in known, f"{name} is not in {RABBITMQ_METRICS}"
    assert_labels_known("rabbitmq_", known)


# --- truth: grassroots_* names, live -----------------------------------------------------------


def _get_metrics(config):
    with urllib.request.urlopen(f"http://{config['WEB_SERVER_ADDRESS']}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


@pytest.fixture
def live_metrics(grid, notices, legal, volunteer, grid_config, notices_config, legal_config, volunteer_config, call_as):
    """{service: its /metrics text} after a call or two to each service (so that the labelled RED
    series have samples)."""
    from tests.support import token

    proxy = call_as(token("admin", sub="monitoring"))
    for service, method, kwargs in (
        ("grid", "get_unit", {"unit_id": "not-an-id"}),
        ("notices", "list_notices", {}),
        ("legal", "get_consultation", {"consultation_id": "not-an-id"}),
        ("volunteer", "list_requests", {}),
    ):
        with contextlib.suppress(Exception):  # a refused call is counted too (client_error)
            getattr(getattr(proxy, service), method)(**kwargs)
    configs = {"grid": grid_config, "notices": notices_config, "legal": legal_config, "volunteer": volunteer_config}
    return {service: _get_metrics(config) for service, config in configs.items()}


def exported(text):
    """{metric name: label names on its samples} of an exposition, histogram series included."""
    from prometheus_client.parser import text_string_to_metric_families

    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }.get(family.type, ("",))
        for suffix in suffixes:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def code_gauge_labels():
    """Label names of every SqlGauge, from the services' GAUGES (labelled gauges of an empty
    database export no samples)."""
    labels = {}
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.service")
        for gauge in module.GAUGES:
            labels[gauge.name] = set(gauge.labels)
    return labels


def test_live_metrics_pass_promtool_check_metrics(live_metrics):
    for service, text in live_metrics.items():
        assert "grassroots_requests_total{" in text, service
        # Each service has event handlers; their dead-letter counters start at 0 (see the alert).
        assert re.search(rf'grassroots_dead_letters_total{{handler="\w+",service="{service}"}} 0\.0', text), service
        result = promtool("check", "metrics", stdin=text)
        assert result.returncode == 0, f"{service}: {result.stdout}{result.stderr}"


def test_every_grassroots_metric_used_is_exported_by_the_services(live_metrics):
    exported_labels: dict[str, set[str]] = {}
    for text in live_metrics.values():
        for name, labels in exported(text).items():
            exported_labels.setdefault(name, set()).update(labels)
    for name, labels in code_gauge_labels().items():
        exported_labels.setdefault(name, set()).update(labels)
    used = used_metrics("grassroots_")
    assert used, "no grassroots_* metric found in the rules and dashboards"
    missing = sorted(set(used) - set(exported_labels))
    assert not missing, f"used in the rules or dashboards but exported by no service: {missing}"
    assert_labels_known("grassroots_", exported_labels)
    # Every gauge the domain dashboard and the district alert read is in the services' own output.
    for name in (
        "grassroots_grid_open_incidents",
        "grassroots_grid_screening_coverage_ratio",
        "grassroots_notices_deliveries",
        "grassroots_notices_acknowledgements",
        "grassroots_volunteer_requests",
        "grassroots_outbox_pending",
        "grassroots_dead_letters_total",
    ):
        assert any(
            f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text
            for text in live_metrics.values()
        ), name
