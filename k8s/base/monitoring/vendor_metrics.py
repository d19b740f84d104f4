"""Writes the vendored metric lists of this directory from the exporters' source code, at a release tag:

- rabbitmq-metrics.txt: what the rabbitmq_prometheus plugin of rabbitmq/rabbitmq-server exposes;
- cnpg-metrics.txt: what a CloudNativePG instance's exporter (port `metrics`, 9187) exposes.

    # a bare clone or snapshot of the repository (it needs the tag), e.g. the fetch tool's
    # /work/.mirror/rabbitmq+rabbitmq-server/repo
    .venv/bin/python k8s/base/monitoring/vendor_metrics.py rabbitmq <git dir> v4.1.8
    .venv/bin/python k8s/base/monitoring/vendor_metrics.py cnpg <git dir> v1.30.0
    ... --check     # exit 1 when the vendored file differs from what the source gives

Each file's header names the repository, the tag, the commit it points to and the sha256 of every
source file read. tests/deploy/test_monitoring.py checks that every rabbitmq_* and cnpg_* metric
(and every label matched on it) used by rules/grassroots.rules.yaml and dashboards/*.json is listed,
on an endpoint that the PodMonitors scrape, and that the RabbitMQ list is of the image's version.

The lists are read from the source, not captured from a running server: a family with no object
(no queue, no channel...) is listed all the same.
"""

import hashlib
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUTS = {
    "rabbitmq": os.path.join(HERE, "rabbitmq-metrics.txt"),
    "cnpg": os.path.join(HERE, "cnpg-metrics.txt"),
}
REPOSITORIES = {"rabbitmq": "rabbitmq/rabbitmq-server", "cnpg": "cloudnative-pg/cloudnative-pg"}


class Source:
    """Files of one repository at one tag, read with `git show` (works on bare repositories)."""

    def __init__(self, git_dir, tag):
        self.git_dir, self.tag = git_dir, tag
        self.commit = self._git("rev-parse", f"{tag}^{{commit}}").strip()
        self.read = {}  # path -> sha256, in reading order

    def _git(self, *args):
        return subprocess.run(
            ["git", "--git-dir", self.git_dir, *args], check=True, capture_output=True, text=True
        ).stdout

    def __call__(self, path):
        data = subprocess.run(
            ["git", "--git-dir", self.git_dir, "show", f"{self.commit}:{path}"], check=True, capture_output=True
        ).stdout
        self.read[path] = hashlib.sha256(data).hexdigest()
        return data.decode("utf-8")

    def provenance(self, repository):
        lines = [f"# Source: {repository} {self.tag} (commit {self.commit}), files read (sha256):"]
        lines += [f"#   {path} {digest}" for path, digest in self.read.items()]
        return lines


def _find(pattern, text, flags=0):
    """The first group of the pattern's first match in text; stops the script when there is none."""
    match = re.search(pattern, text, flags)
    if match is None:
        raise SystemExit(f"not found in the source: {pattern} (update vendor_metrics.py)")
    return match.group(1)


def _define(text, name):
    """The body of the Erlang macro `-define(NAME, <body>).`, strings and nesting respected."""
    start = text.index(f"-define({name},") + len(f"-define({name},")
    depth, i, in_string = 1, start, False
    while depth:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "%":  # a comment, to the end of the line
            i = text.index("\n", i)
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return text[start : i - 1]


def _define_string(text, name):
    return _find(rf"-define\({name},\s*<<\"([a-z_]+)\">>\)", text)


FAMILY = re.compile(r"^\s*\{(\w+),\s*\[\s*$")
# {Index, Conversion, name, type, "help"[, key]} in the core collector's metric tables
CORE_METRIC = re.compile(r"^\s*\{\s*\d+,\s*(?:undefined|\?\w+),\s*(\w+),\s*(\w+),\s*\"")


def _families(block):
    """{family: [(name, type)]} of one of the core collector's tables."""
    families: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.strip().startswith("%"):
            continue
        match = FAMILY.match(line)
        if match:
            current = families.setdefault(match.group(1), [])
            continue
        match = CORE_METRIC.match(line)
        if match:
            name, kind = match.groups()
            current.append((name, "untyped" if kind == "boolean" else kind))  # catch_boolean/1
    return families


# The labels of the per-object series of each family of ?METRICS_RAW, from how label/1 of
# prometheus_rabbitmq_core_metrics_collector.erl renders the ETS key of its table: a queue
# #resource{} -> vhost, queue; an exchange -> vhost, exchange; a channel or connection pid ->
# channel; {ChannelPid, Resource} -> both; {ChPid, {Queue, Exchange}} -> channel, queue_vhost, queue,
# exchange_vhost, exchange; {Queue, Exchange} -> vhost, exchange, queue; a protocol atom ->
# protocol; {RemoteAddress, Username, Protocol} -> remote_address, username, protocol; a node name
# (node_* and churn tables) -> none; ra_metrics: a quorum queue (vhost, queue) or another Ra
# cluster (raft_cluster). The script stops when the source has a family not listed here.
PER_OBJECT_LABELS = {
    "connection_churn_metrics": (),
    "node_coarse_metrics": (),
    "node_metrics": (),
    "node_persister_metrics": (),
    "ra_metrics": ("vhost", "queue", "raft_cluster"),
    "auth_attempt_metrics": ("protocol",),
    "auth_attempt_detailed_metrics": ("remote_address", "username", "protocol"),
    "queue_coarse_metrics": ("vhost", "queue"),
    "queue_consumer_count": ("vhost", "queue"),
    "queue_metrics": ("vhost", "queue"),
    "channel_metrics": ("channel",),
    "channel_exchange_metrics": ("channel", "vhost", "exchange"),
    "channel_process_metrics": ("channel",),
    "channel_queue_metrics": ("channel", "vhost", "queue"),
    "connection_coarse_metrics": ("channel",),
    "stream_consumer_metrics": ("vhost", "queue"),
    "connection_metrics": ("channel",),
    "channel_queue_exchange_metrics": ("channel", "queue_vhost", "queue", "exchange_vhost", "exchange"),
    "exchange_metrics": ("vhost", "exchange"),
    "queue_delivery_metrics": ("vhost", "queue"),
    "queue_exchange_metrics": ("vhost", "exchange", "queue"),
}
# Aggregated (/metrics by default): one row per table, no object labels — except the auth attempt
# table, keyed by protocol also when aggregated; the detailed auth table is not aggregated at all
# (mutually_exclusive_mf/3).
AGGREGATED_LABELS = {"auth_attempt_metrics": ("protocol",)}
NOT_AGGREGATED = {"auth_attempt_detailed_metrics"}
# ?METRICS_CLUSTER (/metrics/detailed only, prefix rabbitmq_cluster_): get_data/3 labels them with
# a map (vhost) or a binary (vhost, exchange, type).
CLUSTER_LABELS = {
    "vhost_status": ("vhost",),
    "exchange_bindings": ("vhost", "exchange", "type"),
    "exchange_names": ("vhost", "exchange", "type"),
}
# Series emitted by functions of the core collector rather than by its tables: name -> labels.
# Each label is checked to appear, as `{label,` in the function that emits it.
QUEUE_INFO = (
    "queue_info",
    ("vhost", "queue", "queue_type", "membership"),
    "emit_queue_info(Prefix, VHostsFilter, Callback) ->",
)
BUILD_INFO = (
    "build_info",
    ("rabbitmq_version", "prometheus_plugin_version", "prometheus_client_version", "erlang_version")
    + ("product_version", "product_name"),
    "build_info() ->",
)
IDENTITY_INFO = (
    "identity_info",
    ("rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id", "rabbitmq_endpoint"),
    "identity_info(Endpoint) ->",
)

PATHS = ("/metrics", "/metrics/per-object", "/metrics/detailed", "/metrics/memory-breakdown")
PLUGIN = "deps/rabbitmq_prometheus/src"


def _function(text, head):
    start = text.index(head)
    end = text.find("\n\n", start)
    return text[start:end]


def _check_labels(text, emitter, labels):
    body = _function(text, emitter)
    for label in labels:
        if not re.search(r"\{\s*" + label + r"\s*,", body):
            raise SystemExit(f"label {label} not found in {emitter}: update vendor_metrics.py")


def rabbitmq_rows(src):
    """[(name, type, labels, path, family)] for rabbitmq-server's rabbitmq_prometheus plugin."""
    rows = []

    def add(name, kind, labels, paths, family="-"):
        for path in paths:
            rows.append((name, kind, tuple(labels), path, family))

    dispatcher = src(f"{PLUGIN}/rabbit_prometheus_dispatcher.erl")
    core = src(f"{PLUGIN}/collectors/prometheus_rabbitmq_core_metrics_collector.erl")
    prefix = _define_string(core, "METRIC_NAME_PREFIX")
    detailed = _define_string(core, "DETAILED_METRIC_NAME_PREFIX")
    cluster = _define_string(core, "CLUSTER_METRIC_NAME_PREFIX")
    assert (prefix, detailed, cluster) == ("rabbitmq_", "rabbitmq_detailed_", "rabbitmq_cluster_")

    # Which collectors each registry (path) holds: rabbit_prometheus_dispatcher:build_dispatcher/0.
    registries = {}
    for registry, body in re.findall(r"register_collectors\((?:'([a-z-]+)',\s*)?\[([^\]]*)\]", dispatcher):
        path = "/metrics" + (f"/{registry}" if registry else "")
        registries[path] = set(re.findall(r"\w+", body))
    assert set(registries) == set(PATHS), registries

    def paths_of(collector):
        return [path for path in PATHS if collector in registries[path]]

    raw = _families(_define(core, "METRICS_RAW"))
    unknown = set(raw) ^ set(PER_OBJECT_LABELS)
    if unknown:
        raise SystemExit(f"families without a label rule (PER_OBJECT_LABELS): {sorted(unknown)}")
    for family, metrics in raw.items():
        for name, kind in metrics:
            if family not in NOT_AGGREGATED:
                add(prefix + name, kind, AGGREGATED_LABELS.get(family, ()), ["/metrics"])
            add(prefix + name, kind, PER_OBJECT_LABELS[family], ["/metrics/per-object"])
            add(detailed + name, kind, PER_OBJECT_LABELS[family], ["/metrics/detailed"], family)
    cluster_families = _families(_define(core, "METRICS_CLUSTER"))
    assert set(cluster_families) == set(CLUSTER_LABELS), cluster_families
    for family, metrics in cluster_families.items():
        for name, kind in metrics:
            add(cluster + name, kind, CLUSTER_LABELS[family], ["/metrics/detailed"], family)
    for metrics in _families(_define(core, "METRICS_MEMORY_BREAKDOWN")).values():
        for name, kind in metrics:
            add(prefix + name, kind, (), ["/metrics/memory-breakdown"])
    # ?TOTALS: {Table, Name, Type, Help}, from totals/1 on /metrics and /metrics/per-object.
    for name, kind in re.findall(r"\{\w+,\s*(\w+),\s*(gauge|counter),\s*\"", _define(core, "TOTALS")):
        add(prefix + name, kind, (), ["/metrics", "/metrics/per-object"])
    labels: tuple[str, ...]
    name, labels, emitter = QUEUE_INFO
    _check_labels(core, emitter, labels)
    add(prefix + name, "gauge", labels, ["/metrics/per-object"])
    # /metrics/detailed emits <detailed>queue_info only when a queue family is asked for.
    queue_families = "queue_coarse_metrics|queue_consumer_count|queue_metrics"
    add(detailed + name, "gauge", labels, ["/metrics/detailed"], queue_families)
    for name, labels, emitter in (BUILD_INFO, IDENTITY_INFO):
        _check_labels(core, emitter, labels)
        add(prefix + name, "untyped", labels, paths_of("prometheus_rabbitmq_core_metrics_collector"))

    alarms = src(f"{PLUGIN}/collectors/prometheus_rabbitmq_alarm_metrics_collector.erl")
    alarm_prefix = _find(r'-define\(METRIC_NAME_PREFIX, "(\w+)"\)', alarms)
    for name in re.findall(r'\?METRIC_NAME\(<<"(\w+)">>\)', alarms):
        add(alarm_prefix + name, "untyped", (), paths_of("prometheus_rabbitmq_alarm_metrics_collector"))

    dynamic = src(f"{PLUGIN}/collectors/prometheus_rabbitmq_dynamic_collector.erl")
    dynamic_prefix = _find(r'-define\(METRIC_NAME_PREFIX, "(\w+)"\)', dynamic)
    for name, kind in re.findall(r"\{(\w+),\s*(gauge|counter),\s*\"", _define(dynamic, "METRICS")):
        add(dynamic_prefix + name, kind, (), paths_of("prometheus_rabbitmq_dynamic_collector"))

    process = src(f"{PLUGIN}/collectors/prometheus_process_collector.erl")
    for name, kind in re.findall(r"\{(\w+),\s*(gauge|counter),\s*\"", _define(process, "METRICS")):
        add(name, kind, (), paths_of("prometheus_process_collector"))

    # rabbitmq_global_*: the counters rabbit_global_counters registers (seshat) in the broker
    # core: per protocol, per protocol and queue type, and dead-letter counters per queue type and
    # strategy (boot_step/0). Plugins' extra counters (stream, MQTT) are not listed.
    glob = src(f"{PLUGIN}/collectors/prometheus_rabbitmq_global_metrics_collector.erl")
    global_prefix = _find(r'-define\(METRIC_NAME_PREFIX, "(\w+)"\)', glob)
    counters = src("deps/rabbit/src/rabbit_global_counters.erl")
    counters_hrl = src("deps/rabbit/include/rabbit_global_counters.hrl")
    counter = re.compile(r"\{\s*(\w+),\s*\?\w+,\s*(counter|gauge),", re.S)
    global_paths = paths_of("prometheus_rabbitmq_global_metrics_collector")
    for name, kind in counter.findall(_define(counters, "PROTOCOL_COUNTERS")):
        add(global_prefix + name, kind, ("protocol",), global_paths)
    for name, kind in counter.findall(_define(counters, "PROTOCOL_QUEUE_TYPE_COUNTERS")):
        add(global_prefix + name, kind, ("protocol", "queue_type"), global_paths)
    for macro in re.findall(r"-define\((MESSAGES_DEAD_LETTERED_\w+_COUNTER),", counters_hrl):
        for name, kind in counter.findall(_define(counters_hrl, macro)):
            add(global_prefix + name, kind, ("queue_type", "dead_letter_strategy"), global_paths)

    # rabbitmq_message_size_bytes: a histogram per protocol (rabbit_msg_size_metrics).
    sizes = src(f"{PLUGIN}/collectors/prometheus_rabbitmq_message_size_metrics_collector.erl")
    size_prefix = _find(r'-define\(METRIC_NAME_PREFIX, "(\w+)"\)', sizes)
    msg_size = src("deps/rabbit/src/rabbit_msg_size_metrics.erl")
    size_paths = paths_of("prometheus_rabbitmq_message_size_metrics_collector")
    for name in re.findall(r"#\{(\w+) => #\{type => histogram", msg_size):
        for suffix, labels in (("_bucket", ("protocol", "le")), ("_sum", ("protocol",)), ("_count", ("protocol",))):
            add(size_prefix + name + suffix, "histogram", labels, size_paths)

    # The handler's own summaries, declared in every registry it serves (setup/0).
    handler = src(f"{PLUGIN}/rabbit_prometheus_handler.erl")
    for macro, name in re.findall(r"-define\((SCRAPE_\w+), (\w+)\)", handler):
        declared = _find(r"\?" + macro + r"\},\s*\{help, \"[^\"]*\"\},\s*\{labels, \[([^\]]*)\]\}", handler)
        labels = tuple(re.findall(r'"(\w+)"', declared))
        for suffix in ("_sum", "_count"):
            add(name + suffix, "summary", labels, PATHS)
    return rows


RABBITMQ_HEADER = """\
# Metrics of the rabbitmq_prometheus plugin, one a line: `<name> <type> <labels> <path> <family>`.
# WRITTEN by vendor_metrics.py from the plugin's source (see its docstring to regenerate).
#   labels: the label names of its series (`-`: none; per-object labels on every path serving
#           objects, a union where series differ, e.g. ra_metrics' queues and Ra clusters);
#   path:   where it is served — /metrics (aggregated: the default, i.e. without
#           prometheus.return_per_object_metrics), /metrics/per-object (what /metrics serves with
#           that setting), /metrics/detailed (only the `family=` asked for; queue families only for
#           the `vhost=` given), /metrics/memory-breakdown;
#   family: the /metrics/detailed `family=` parameter value that returns it (`-` elsewhere).
# Not listed: the prometheus.erl library's own collectors (erlang_vm_*, erlang_mnesia_*...: on
# /metrics as the library's `default` set, which deps/rabbit/src/rabbit.erl selects, and registered
# on /metrics/per-object by the plugin), counters that plugins (stream, MQTT) add to rabbitmq_global_*.
# tests/deploy/test_monitoring.py checks that every rabbitmq_* name, and every label matched on
# it, used by rules/grassroots.rules.yaml and dashboards/*.json is served on a path (and family)
# the PodMonitors scrape, and that this list is of the RabbitMQ version the RabbitmqCluster runs.
"""


def _format(rows, header, provenance):
    lines = header.splitlines() + provenance
    for name, kind, labels, *rest in sorted(set(rows)):
        lines.append(" ".join([name, kind, ",".join(labels) or "-", *rest]))
    return "\n".join(lines) + "\n"


# --- CloudNativePG ------------------------------------------------------------------------------

GO_METRIC = re.compile(
    r"prometheus\.New(Counter|Gauge)(?:Vec)?\(prometheus\.(?:Counter|Gauge)Opts\{\s*"
    r"Namespace:\s*(\w+),\s*(?:Subsystem:\s*(\w+),\s*)?Name:\s*\"(\w+)\",.*?\}(?:,\s*\[\]string\{([^}]*)\})?\)",
    re.S,
)
CNPG_EXPORTER = "pkg/management/postgres/webserver/metricserver/pg_collector.go"
CNPG_QUERIES_COLLECTOR = "pkg/management/postgres/metrics/collector.go"
CNPG_INSTANCE_CONTROLLER = "internal/management/controller/instance_controller.go"
CNPG_DEFAULT_QUERIES = "config/manager/default-monitoring.yaml"
CNPG_PORTS = "pkg/specs/pods.go"
CNPG_PORT_NUMBER = "pkg/management/url/url.go"


def _go_metrics(text, namespaces):
    rows = []
    for kind, namespace, subsystem, name, labels in GO_METRIC.findall(text):
        parts = [namespaces[namespace]] + ([namespaces[subsystem]] if subsystem else []) + [name]
        rows.append(("_".join(parts), kind.lower(), tuple(re.findall(r'"(\w+)"', labels or ""))))
    return rows


def cnpg_metrics_port(src):
    """(name, number) of the instance pods' exporter port, from the pod spec and the url package."""
    pods, url = src(CNPG_PORTS), src(CNPG_PORT_NUMBER)
    name = _find(r'Name:\s*"(\w+)",\s*ContainerPort:\s*url\.PostgresMetricsPort', pods)
    number = int(_find(r"PostgresMetricsPort\s+int32\s*=\s*(\d+)", url))
    return name, number


def cnpg_rows(src):
    """[(name, type, labels, path, source)] of a CloudNativePG instance's exporter."""
    rows = []
    exporter = src(CNPG_EXPORTER)
    namespace = _find(r'PrometheusNamespace = "(\w+)"', exporter)
    subsystem = _find(r'subsystem := "(\w+)"', exporter)
    for name, kind, labels in _go_metrics(exporter, {"PrometheusNamespace": namespace, "subsystem": subsystem}):
        rows.append((name, kind, labels, "/metrics", "exporter"))

    # The queries collector is created as NewQueriesCollector("cnpg", ...) by the instance manager.
    controller = src(CNPG_INSTANCE_CONTROLLER)
    collector_name = _find(r'metrics\.NewQueriesCollector\("(\w+)"', controller)
    collector = src(CNPG_QUERIES_COLLECTOR)
    body = collector[collector.index("func NewQueriesCollector(") :]
    body = body[: body.index("\n}\n")]
    for name, kind, labels in _go_metrics(body, {"name": collector_name}):
        rows.append((name, kind, labels, "/metrics", "queries-collector"))

    # Queries: cnpg_<query name, or its `name:`>_<column, or its `name:`> (mappings.go), labels =
    # the query's LABEL columns. DefaultQueries in pg_collector.go (Go) and the operator's
    # cnpg-default-monitoring ConfigMap (config/manager/default-monitoring.yaml), which every
    # Cluster uses unless spec.monitoring.disableDefaultQueries is true.
    go_defaults = exporter[exporter.index("var DefaultQueries") :]
    for query, block in re.findall(r'"(\w+)":\s*m\.UserQuery\{(.*?)\n\t\},', go_defaults, re.S):
        columns = re.findall(r'"(\w+)":\s*m\.ColumnMapping\{\s*Usage:\s*m\.(\w+)', block)
        rows += _query_rows(collector_name, query, {}, [{c: {"usage": u} for c, u in columns}], "default-queries")
    configmap = yaml.safe_load(src(CNPG_DEFAULT_QUERIES))
    for query, spec in yaml.safe_load(configmap["data"]["queries"]).items():
        rows += _query_rows(collector_name, query, spec, spec["metrics"], "cnpg-default-monitoring")

    # Same name from two variants of a query (runonserver): one line, the labels' union.
    merged: dict[tuple[str, str, str, str], tuple[str, ...]] = {}
    for name, kind, labels, path, source in rows:
        key = (name, kind, path, source)
        merged[key] = tuple(sorted(set(merged.get(key, ())) | set(labels)))
    return [(name, kind, labels, path, source) for (name, kind, path, source), labels in merged.items()]


def _query_rows(collector_name, query, spec, metrics, source):
    prefix = f"{collector_name}_{spec.get('name') or query}"
    columns = [(column, mapping) for item in metrics for column, mapping in item.items()]
    labels = tuple(column for column, mapping in columns if mapping["usage"].upper() == "LABEL")
    rows = []
    for column, mapping in columns:
        usage = mapping["usage"].upper()
        name = f"{prefix}_{mapping.get('name') or column}"
        if usage in ("LABEL", "DISCARD"):
            continue
        if usage in ("COUNTER", "GAUGE", "MAPPEDMETRIC"):
            rows.append((name, "counter" if usage == "COUNTER" else "gauge", labels, "/metrics", source))
        elif usage == "DURATION":
            rows.append((name + "_milliseconds", "gauge", labels, "/metrics", source))
        elif usage == "HISTOGRAM":
            for suffix, extra in (("_bucket", ("le",)), ("_sum", ()), ("_count", ())):
                rows.append((name + suffix, "histogram", labels + extra, "/metrics", source))
        else:
            raise SystemExit(f"{query}.{column}: unknown usage {usage}")
    return rows


CNPG_HEADER = """\
# Metrics of a CloudNativePG instance's exporter, one a line: `<name> <type> <labels> <path> <source>`.
# WRITTEN by vendor_metrics.py from the operator's source (see its docstring to regenerate).
#   labels: the label names of its series (`-`: none) — Prometheus adds namespace, pod, job...;
#   path:   /metrics on the instance pods' port `{port_name}` ({port_number});
#   source: exporter (the instance manager's own collector), queries-collector (its bookkeeping),
#           default-queries (built in), cnpg-default-monitoring (the operator's default queries
#           ConfigMap: present unless the Cluster sets spec.monitoring.disableDefaultQueries).
# Not listed: go_* (the Go client's runtime collector), metrics of plugins (e.g. Barman Cloud),
# user-defined queries. tests/deploy/test_monitoring.py checks that every cnpg_* name, and every
# label matched on it, used by rules/grassroots.rules.yaml and dashboards/*.json is listed here.
"""


def build(kind, git_dir, tag):
    src = Source(git_dir, tag)
    if kind == "rabbitmq":
        rows = rabbitmq_rows(src)
        header = RABBITMQ_HEADER
    else:
        rows = cnpg_rows(src)
        port_name, port_number = cnpg_metrics_port(src)
        header = CNPG_HEADER.format(port_name=port_name, port_number=port_number)
    return _format(rows, header, src.provenance(REPOSITORIES[kind]))


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    if len(args) != 3 or args[0] not in OUTPUTS:
        print(__doc__)
        return 2
    kind, git_dir, tag = args
    text = build(kind, git_dir, tag)
    path = OUTPUTS[kind]
    if check:
        with open(path, encoding="utf-8") as f:
            same = f.read() == text
        print(f"{'same' if same else 'DIFFERENT'}: {os.path.relpath(path)} vs {REPOSITORIES[kind]} {tag}")
        return 0 if same else 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(path)} ({text.count(chr(10)) - text.count(chr(10) + '#')} lines of metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
