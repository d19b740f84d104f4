"""k8s/base/monitoring: PodMonitors, the PrometheusRule and Grafana dashboards.

Offline: promtool checks and unit-tests the rules; the PrometheusRule carries exactly the rules
file's groups; the dashboards parse and every panel queries something; every rabbitmq_* and cnpg_*
metric they use is in the vendored metric lists of the deployed versions (rabbitmq-metrics.txt,
cnpg-metrics.txt), on an endpoint a PodMonitor that Prometheus selects scrapes: RabbitMQ's
per-queue series from /metrics/detailed with only the families used, PostgreSQL's from the
CloudNativePG instances' exporter. Live (broker and PostgreSQL, like the rest of `make test`): the
four services' /metrics pass `promtool check metrics` and export every grassroots_* metric (with
the labels matched on it) that the rules and dashboards use.
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
CNPG_METRICS = os.path.join(MONITORING, "cnpg-metrics.txt")
SCHEMA_SOURCES = os.path.join(K8S, "schemas", "SOURCES.md")
# What kube-prometheus-stack's Prometheus selects PodMonitors and PrometheusRules by (generate.py).
PROMETHEUS_SELECTOR = {"release": "kube-prometheus-stack"}
# Labels the PodMonitors' targets add to every scraped series.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}
METRIC = re.compile(r"\b((?:grassroots|rabbitmq|cnpg)_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b((?:grassroots|rabbitmq|cnpg)_[a-z0-9_]+)\s*\{([^}]*)\}")
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
        "GrassrootsQueueBacklog": "rabbitmq_detailed_queue_messages_ready",
        "GrassrootsDeadLetterQueueNotEmpty": r'queue=~".+\\.dead"',
        "GrassrootsEventsDeadLettered": "increase(grassroots_dead_letters_total",
        "GrassrootsQueueWithoutConsumers": "rabbitmq_detailed_queue_consumers",
        "GrassrootsOutboxBacklog": "grassroots_outbox_pending",
        "GrassrootsDistrictIncidentsPilingUp": 'handling_level="district"',
        "GrassrootsQueueMetricsAbsent": "absent(rabbitmq_detailed_queue_messages",
        "GrassrootsPostgresMetricsAbsent": "absent(cnpg_collector_up",
        "GrassrootsPostgresDown": "cnpg_collector_up",
        "GrassrootsPostgresWalArchivingFailing": "cnpg_pg_stat_archiver_last_failed_time",
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
    assert set(monitors) >= {
        "grassroots-services",
        "grassroots-rabbitmq",
        "grassroots-rabbitmq-detailed",
        "grassroots-postgres",
    }, where
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
    # What the PodMonitors select must exist: service pods with a port named http, the
    # RabbitmqCluster (its per-queue series: test_queue_series_come_from_metrics_detailed...).
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


# --- truth: rabbitmq_* and cnpg_* names, scraped where they are served --------------------------

# The labels the RabbitMQ Cluster Operator gives a RabbitmqCluster's pods (internal/metadata/label.go,
# rabbitmq/cluster-operator v2.22.3) and the ones CloudNativePG gives a Cluster's instance pods
# (pkg/specs/pods.go, cloudnative-pg/cloudnative-pg v1.30.0); <name> is the custom resource's name.
RABBITMQ_POD_LABELS = {"app.kubernetes.io/name": "<name>", "app.kubernetes.io/component": "rabbitmq"}
CNPG_POD_LABELS = {"cnpg.io/cluster": "<name>", "cnpg.io/podRole": "instance"}
SOURCE_LINE = re.compile(r"^# Source: (\S+) (v\S+) \(commit ([0-9a-f]{40})\)")
CNPG_PORT = re.compile(r"port `(\w+)` \((\d+)\)")
RENDERED = ("base",) + tuple(OVERLAYS)


def vendored_metrics(path):
    """(header, rows) of a vendored metric list; a row: (name, type, {labels}, path, family or source)."""
    header, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                header.append(line.rstrip("\n"))
            elif line.strip():
                name, kind, labels, where, what = line.split()
                rows.append((name, kind, set() if labels == "-" else set(labels.split(",")), where, what))
    return header, rows


def vendored_source(path):
    """(repository, tag, commit) named by the list's header."""
    with open(path, encoding="utf-8") as f:
        header = [line for line in f if line.startswith("#")]
    for line in header:
        match = SOURCE_LINE.match(line)
        if match:
            return match.groups()
    pytest.fail(f"{path}: no '# Source: <repository> <tag> (commit <sha>)' line in its header")


def cnpg_exporter_port():
    """(name, number) of the CloudNativePG instances' exporter port, as the list's header records it."""
    for line in vendored_metrics(CNPG_METRICS)[0]:
        match = CNPG_PORT.search(line)
        if match:
            return match.group(1), int(match.group(2))
    pytest.fail(f"{CNPG_METRICS}: its header names no exporter port")


def rendered(name):
    if name == "base":
        return _kustomize(os.path.join(K8S, "base"))
    return render(name)


def _labels_match(selector, labels):
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", ()):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", ())
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and labels.get(key) in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def scraping(documents, pod_labels, namespace):
    """The podMetricsEndpoints, of the PodMonitors kube-prometheus-stack's Prometheus selects
    (PROMETHEUS_SELECTOR), whose selector and namespaceSelector take pods with these labels."""
    endpoints = []
    for monitor in of_kind(documents, "PodMonitor"):
        labels = monitor["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in PROMETHEUS_SELECTOR.items()):
            continue
        namespaces = monitor["spec"].get("namespaceSelector", {})
        if not namespaces.get("any") and namespace not in namespaces.get(
            "matchNames", [monitor["metadata"].get("namespace")]
        ):
            continue
        if _labels_match(monitor["spec"]["selector"], pod_labels):
            endpoints += [(monitor["metadata"]["name"], e) for e in monitor["spec"]["podMetricsEndpoints"]]
    return endpoints


def _pods(resource, template):
    return {k: v.replace("<name>", resource["metadata"]["name"]) for k, v in template.items()}


def _served(rows, path, families):
    """The rows a scrape of `path` (with these family= values, on /metrics/detailed) returns."""
    for row in rows:
        _name, _kind, _labels, where, family = row
        if where != path:
            continue
        if path == "/metrics/detailed" and family != "-" and not set(family.split("|")) & set(families):
            continue
        yield row


def _rabbitmq_scrapes(documents):
    (cluster,) = of_kind(documents, "RabbitmqCluster")
    namespace = cluster["metadata"].get("namespace", "grassroots")
    return scraping(documents, _pods(cluster, RABBITMQ_POD_LABELS), namespace)


def _rabbitmq_config(cluster):
    return cluster["spec"].get("rabbitmq", {}).get("additionalConfig", "")


@pytest.mark.parametrize("name", RENDERED)
def test_rabbitmq_metrics_stays_aggregated(name):
    """Issue 15, item 10: /metrics returns aggregated series; per-object ones (every family for
    every queue, channel and connection) are not what the queue alerts should scrape."""
    for cluster in of_kind(rendered(name), "RabbitmqCluster"):
        assert not re.search(r"(?m)^\s*prometheus\.return_per_object_metrics\s*=\s*true", _rabbitmq_config(cluster)), (
            f"{name}: {cluster['metadata']['name']} sets prometheus.return_per_object_metrics = true; "
            "per-queue series come from /metrics/detailed (PodMonitor grassroots-rabbitmq-detailed)"
        )


@pytest.mark.parametrize("name", RENDERED)
def test_queue_series_come_from_metrics_detailed_with_only_the_families_used(name):
    """Issue 15, item 10: the rules and dashboards read rabbitmq_detailed_* series of
    /metrics/detailed, scraped with the families they need and the suite's vhost, and every other
    rabbitmq_* name from the aggregated /metrics; nothing from /metrics/per-object."""
    documents = rendered(name)
    _, rows = vendored_metrics(RABBITMQ_METRICS)
    scrapes = _rabbitmq_scrapes(documents)
    paths = {endpoint.get("path", "/metrics") for _, endpoint in scrapes}
    assert "/metrics/per-object" not in paths, name
    detailed = [endpoint for _, endpoint in scrapes if endpoint.get("path") == "/metrics/detailed"]
    assert len(detailed) == 1, f"{name}: RabbitMQ's /metrics/detailed is scraped by {len(detailed)} endpoints"
    params = detailed[0].get("params", {})
    families = params.get("family", [])

    served: dict[str, set[str]] = {}
    for _, endpoint in scrapes:
        for row_name, _kind, labels, *_ in _served(rows, endpoint.get("path", "/metrics"), families):
            served.setdefault(row_name, set()).update(labels)
    used = used_metrics("rabbitmq_")
    unserved = sorted(set(used) - set(served))
    assert not unserved, f"{name}: used in the rules or dashboards, but no scraped RabbitMQ endpoint serves {unserved}"
    assert_labels_known("rabbitmq_", served)

    # Only the families something uses: each asked-for family provides a metric used.
    providers: dict[str, set[str]] = {}
    for row in rows:
        if row[3] == "/metrics/detailed":
            providers.setdefault(row[0], set()).update(row[4].split("|"))
    for family in families:
        assert any(family in providers.get(metric, ()) for metric in used), (
            f"{name}: family={family} is scraped from /metrics/detailed but nothing uses its metrics"
        )
    # Queue series only for the suite's vhost, which every rule and panel selects.
    vhosts = sorted(v["spec"]["name"] for v in of_kind(documents, "Vhost"))
    assert sorted(params.get("vhost", [])) == vhosts, f"{name}: vhost= {params.get('vhost')} != {vhosts}"
    for where, text in queries(prose=False):
        for metric, matchers in SELECTOR.findall(text):
            if metric.startswith("rabbitmq_detailed_"):
                for vhost in re.findall(r'\bvhost\s*=\s*"([^"]*)"', matchers):
                    assert vhost in vhosts, f"{where}: vhost {vhost!r} is not scraped"


@pytest.mark.parametrize("name", RENDERED)
def test_the_rabbitmq_metric_list_is_of_the_version_deployed(name):
    """Issue 15, item 10: rabbitmq-metrics.txt is read from rabbitmq-server at the tag of the image
    the RabbitmqCluster runs (it was captured from 3.10.8 while 4.1 was deployed)."""
    repository, tag, _commit = vendored_source(RABBITMQ_METRICS)
    assert repository == "rabbitmq/rabbitmq-server"
    for cluster in of_kind(rendered(name), "RabbitmqCluster"):
        version = re.fullmatch(r"(?:.*/)?rabbitmq:(\d+\.\d+\.\d+)(?:-[\w.-]+)?", cluster["spec"]["image"])
        assert version, f"{name}: cannot read RabbitMQ's version from image {cluster['spec']['image']}"
        assert tag == f"v{version.group(1)}", f"{RABBITMQ_METRICS} is of {tag}, the broker runs {version.group(1)}"


# --- PostgreSQL (CloudNativePG) ------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERED)
def test_postgres_instances_are_scraped_by_a_podmonitor_prometheus_selects(name):
    """Issue 15, item 6: the instances' exporter (port `metrics`, 9187) is scraped through a
    PodMonitor carrying the label kube-prometheus-stack's Prometheus selects (CNPG's generated one
    has none), and the NetworkPolicy of those pods lets Prometheus (namespace monitoring) in."""
    documents = rendered(name)
    port_name, port_number = cnpg_exporter_port()
    clusters = [c for c in of_kind(documents, "Cluster") if c["apiVersion"].startswith("postgresql.cnpg.io/")]
    assert clusters, f"{name}: no CloudNativePG Cluster"
    for cluster in clusters:
        pods = _pods(cluster, CNPG_POD_LABELS)
        scrapes = scraping(documents, pods, cluster["metadata"].get("namespace", "grassroots"))
        assert any(e.get("port") == port_name for _, e in scrapes), (
            f"{name}: no PodMonitor with {PROMETHEUS_SELECTOR} scrapes port {port_name} "
            f"of the Cluster {cluster['metadata']['name']}"
        )
        for monitor, endpoint in scrapes:
            assert endpoint.get("path", "/metrics") == "/metrics", monitor
            assert endpoint.get("scheme", "http") == ("https" if _metrics_tls(cluster) else "http"), monitor
        admitted = False
        for policy in of_kind(documents, "NetworkPolicy"):
            if not _labels_match(policy["spec"]["podSelector"], pods):
                continue
            for rule in policy["spec"].get("ingress", ()):
                from_monitoring = any(
                    peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    == "monitoring"
                    for peer in rule.get("from", ())
                )
                ports = {p.get("port") for p in rule.get("ports", ())}
                admitted |= from_monitoring and bool(ports & {port_number, port_name})
        assert admitted, f"{name}: no NetworkPolicy admits port {port_number} of the PostgreSQL pods from monitoring"


def _metrics_tls(cluster):
    return bool(cluster["spec"].get("monitoring", {}).get("tls", {}).get("enabled"))


@pytest.mark.parametrize("name", RENDERED)
def test_no_cluster_relies_on_the_deprecated_generated_podmonitor(name):
    """Issue 15, item 6: `spec.monitoring.enablePodMonitor` is deprecated upstream (CloudNativePG
    docs/src/monitoring.md): the PodMonitor grassroots-postgres replaces it."""
    for cluster in of_kind(rendered(name), "Cluster"):
        monitoring = cluster["spec"].get("monitoring", {})
        assert not monitoring.get("enablePodMonitor"), (
            f"{name}: Cluster {cluster['metadata']['name']} sets monitoring.enablePodMonitor"
        )


@pytest.mark.parametrize("name", RENDERED)
def test_every_cnpg_metric_used_is_one_the_exporter_serves(name):
    """The cnpg_* names and labels the rules and dashboards use are in cnpg-metrics.txt (the
    exporter's /metrics); those of the default queries need the Cluster to keep them; the
    cluster they name is the Cluster deployed."""
    _, rows = vendored_metrics(CNPG_METRICS)
    known: dict[str, set[str]] = {}
    for row_name, _kind, labels, _path, _source in rows:
        known.setdefault(row_name, set()).update(labels)
    used = used_metrics("cnpg_")
    assert used, "no cnpg_* metric found in the rules and dashboards"
    missing = sorted(set(used) - set(known))
    assert not missing, f"not served by the CloudNativePG exporter ({CNPG_METRICS}): {missing}"
    assert_labels_known("cnpg_", known)

    (cluster,) = [c for c in of_kind(rendered(name), "Cluster") if c["apiVersion"].startswith("postgresql.cnpg.io/")]
    cluster_name = cluster["metadata"]["name"]
    if any(row[4] == "cnpg-default-monitoring" for row in rows if row[0] in used):
        assert not cluster["spec"].get("monitoring", {}).get("disableDefaultQueries"), (
            f"{name}: the rules use the default queries' metrics, which the Cluster disables"
        )
    assert cluster_name == generate.POSTGRES_CLUSTER
    for where, text in queries(prose=False):
        for metric, matchers in SELECTOR.findall(text):
            if metric.startswith("cnpg_"):
                for value in re.findall(r'\bcluster\s*=\s*"([^"]*)"', matchers):
                    assert value == cluster_name, f"{where}: cluster={value!r}, the Cluster is {cluster_name}"
                for value in re.findall(r'\bpod\s*=~\s*"([^"]*)"', matchers):
                    assert re.fullmatch(value, f"{cluster_name}-1"), f"{where}: pod=~{value!r}"


def test_the_cnpg_metric_list_is_of_the_release_vendored():
    """cnpg-metrics.txt is read from cloudnative-pg at the release whose Cluster CRD is vendored
    (k8s/schemas/SOURCES.md), i.e. the operator installed."""
    repository, tag, _commit = vendored_source(CNPG_METRICS)
    assert repository == "cloudnative-pg/cloudnative-pg"
    with open(SCHEMA_SOURCES, encoding="utf-8") as f:
        table = [line for line in f if line.startswith("|")]
    columns = [c.strip() for c in table[0].strip().strip("|").split("|")]
    release = None
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "`postgresql.cnpg.io/cluster_v1.json`":
            release = cells[columns.index("Release")]
    assert release == tag, f"{CNPG_METRICS} is of {tag}, the Cluster CRD vendored is of {release}"


# --- the lists are what the source says (where a copy of the repositories is at hand) ------------


def _vendor_module():
    path = os.path.join(MONITORING, "vendor_metrics.py")
    spec = importlib.util.spec_from_file_location("monitoring_vendor_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ("rabbitmq", "cnpg"))
def test_vendored_metric_lists_match_their_source(kind):
    """Regenerates the list from the repository at the tag its header names, when a clone is at
    hand: $UPSTREAM_MIRRORS/<owner>+<name>/repo (default /work/.mirror, the fetch tool's)."""
    vendor = _vendor_module()
    path = vendor.OUTPUTS[kind]
    repository, tag, commit = vendored_source(path)
    git_dir = os.path.join(os.environ.get("UPSTREAM_MIRRORS", "/work/.mirror"), repository.replace("/", "+"), "repo")
    if not os.path.isdir(git_dir):
        pytest.skip(f"no clone of {repository} at {git_dir}")
    with open(path, encoding="utf-8") as f:
        assert f.read() == vendor.build(kind, git_dir, tag), f"{path} differs from {repository} {tag}"
    assert vendor.Source(git_dir, tag).commit == commit


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
