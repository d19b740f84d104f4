"""The operator releases the deployment runs on: recorded once, in k8s/schemas/SOURCES.md (one
release per project, the tag's commit, the file each vendored CRD schema was taken from), fit for
what is deployed (a RabbitMQ cluster operator whose preStop hook drains RabbitMQ 4 nodes, a
CloudNativePG minor still supported), named the same in docs/deployment.md and README.md, and
providing a vendored schema, at that release, for every custom resource kind the overlays use.

With git copies of the projects' repositories at hand (UPSTREAM_MIRRORS=DIR, laid out as
k8s/schemas/vendor_crd.py --sources expects), two more checks read upstream itself: each vendored
file is the schema of its row's file at its row's tag, and the cluster operator's preStop hook at
the recorded tag reaches `rabbitmq-upgrade drain` when `await_online_synchronized_mirror` fails.
"""

import datetime
import importlib.util
import os
import re
import subprocess
import tempfile

import pytest

from tests.deploy import crd_validation as cv
from tests.deploy.conftest import ROOT, of_kind

SOURCES = os.path.join(cv.SCHEMAS, "SOURCES.md")
DEPLOYMENT_DOC = os.path.join(ROOT, "docs", "deployment.md")
README = os.path.join(ROOT, "README.md")
MIRRORS = os.environ.get("UPSTREAM_MIRRORS", "")

# The projects whose CRDs the deployment uses, with the name the docs give each.
PROJECTS = {
    "rabbitmq/cluster-operator": "RabbitMQ Cluster Operator",
    "rabbitmq/messaging-topology-operator": "Messaging Topology Operator",
    "cloudnative-pg/cloudnative-pg": "CloudNativePG",
    "cloudnative-pg/plugin-barman-cloud": "Barman Cloud plugin",
    "prometheus-operator/prometheus-operator": "Prometheus Operator",
    "kedacore/keda": "KEDA",
}

# Every custom resource kind the overlays use or are meant to use (backups, scaling, monitoring),
# whether or not the overlay rendered today has one: (apiVersion, kind) -> project.
KINDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq/cluster-operator",
    ("rabbitmq.com/v1beta1", "User"): "rabbitmq/messaging-topology-operator",
    ("rabbitmq.com/v1beta1", "Permission"): "rabbitmq/messaging-topology-operator",
    ("rabbitmq.com/v1beta1", "Vhost"): "rabbitmq/messaging-topology-operator",
    ("rabbitmq.com/v1beta1", "TopicPermission"): "rabbitmq/messaging-topology-operator",
    ("postgresql.cnpg.io/v1", "Cluster"): "cloudnative-pg/cloudnative-pg",
    ("postgresql.cnpg.io/v1", "Database"): "cloudnative-pg/cloudnative-pg",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "cloudnative-pg/cloudnative-pg",
    ("postgresql.cnpg.io/v1", "Backup"): "cloudnative-pg/cloudnative-pg",
    ("barmancloud.cnpg.io/v1", "ObjectStore"): "cloudnative-pg/plugin-barman-cloud",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator/prometheus-operator",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/prometheus-operator",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator/prometheus-operator",
    ("keda.sh/v1alpha1", "ScaledObject"): "kedacore/keda",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "kedacore/keda",
}

# rabbitmq/cluster-operator, internal/resource/statefulset.go: up to v2.10.0 the preStop hook is
# `await_online_quorum_plus_one -t N && await_online_synchronized_mirror -t N && drain -t N`;
# RabbitMQ 4.0 has no await_online_synchronized_mirror, so the chain ends before `drain`. Commit
# aa72d5da824a2329b538eab7f45706df055a2f66 ("Ignore mirroring related shutdown errors (#1740)",
# 2024-10-08), first released in v2.11.0, made it `... await_online_synchronized_mirror -t N
# || true && drain -t N`.
CLUSTER_OPERATOR_MIN_FOR_RABBITMQ_4 = (2, 11, 0)
# `default_queue_type` (in the RabbitmqCluster's additionalConfig) needs RabbitMQ 3.13.3.
RABBITMQ_MIN = (3, 13, 3)

# cloudnative-pg/cloudnative-pg docs/src/supported_releases.md, the same at tag v1.30.0 and at main
# a95a534dbe0854495b863bbc1b7651f74d310916 (2026-08-21): the tables "Support status of
# CloudNativePG releases" and "Old releases", minor -> (release date, end of life). The end of
# life of 1.30, given as "~  Dec 2026", is taken as the last day of that month. Only the last patch
# of a supported minor is supported; a minor is supported until three months after the next one.
CNPG_SUPPORT_SOURCE = (
    "cloudnative-pg/cloudnative-pg@a95a534dbe0854495b863bbc1b7651f74d310916 docs/src/supported_releases.md"
)
CNPG_SUPPORT = {
    "1.30": ("2026-06-29", "2026-12-31"),
    "1.29": ("2026-03-31", "2026-09-29"),
    "1.28": ("2025-12-09", "2026-06-30"),
    "1.27": ("2025-08-12", "2026-03-09"),
    "1.26": ("2025-05-23", "2025-11-12"),
    "1.25": ("2024-12-23", "2025-08-22"),
    "1.24": ("2024-08-22", "2025-05-23"),
    "1.23": ("2024-04-24", "2024-11-24"),
}
# cloudnative-pg/plugin-barman-cloud web/docs/intro.md at v0.14.0: "CloudNativePG version 1.26 or later".
BARMAN_PLUGIN_MIN_CNPG = (1, 26)


def _vendor_crd():
    spec = importlib.util.spec_from_file_location("vendor_crd", os.path.join(cv.SCHEMAS, "vendor_crd.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version(text):
    """(2, 22, 3) for "v2.22.3" or "2.22.3"; None for anything else (a pre-release, a name)."""
    m = re.fullmatch(r"v?(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _rows():
    return _vendor_crd().read_sources(SOURCES)


def _releases():
    """{project: {releases recorded for it}}."""
    out: dict[str, set[str]] = {}
    for row in _rows():
        out.setdefault(row["project"], set()).add(row["release"])
    return out


def _release(project):
    """The one release recorded for the project, as a version tuple (the test fails otherwise)."""
    found = _releases().get(project, set())
    assert len(found) == 1, f"SOURCES.md: {project} must have exactly one release, has {sorted(found) or 'none'}"
    (release,) = found
    version = _version(release)
    assert version is not None, f"SOURCES.md: {project} release {release!r} is not a stable version tag"
    return version


def _retrieved():
    m = re.search(r"Retrieved (\d{4}-\d{2}-\d{2})", _read(SOURCES))
    assert m, "SOURCES.md: no 'Retrieved YYYY-MM-DD' date"
    return datetime.date.fromisoformat(m.group(1))


def _alongside():
    """SOURCES.md's table of components installed with no schema vendored: {name: release text}."""
    out = {}
    for line in _read(SOURCES).splitlines():
        m = re.match(r"^\|\s*([\w./-]+)(?:\s*`([\w.-]+)`)?\s*\|\s*([^|]+?)\s*\|\s*[0-9a-f]{40}\s*\|", line)
        if m:
            out[m.group(2) or m.group(1)] = m.group(3)
    return out


# --- SOURCES.md ----------------------------------------------------------------------------------


def test_sources_record_one_stable_release_and_commit_per_project():
    rows = _rows()
    assert rows, "SOURCES.md: no file row | `file` | kind | owner/name | vX.Y.Z | `path` | commit | sha256 |"
    problems = []
    for project in PROJECTS:
        if project not in {r["project"] for r in rows}:
            problems.append(f"{project}: no vendored schema recorded")
    for project in sorted({r["project"] for r in rows}):
        mine = [r for r in rows if r["project"] == project]
        releases = {r["release"] for r in mine}
        commits = {r["commit"] for r in mine}
        if len(releases) != 1:
            problems.append(f"{project}: schemas from several releases {sorted(releases)} (one operator runs)")
        elif _version(next(iter(releases))) is None:
            problems.append(f"{project}: release {releases} is not a stable version tag")
        if len(commits) != 1:
            problems.append(f"{project}: several tag commits {sorted(commits)}")
    files = [r["file"] for r in rows]
    problems += [f"{f}: more than one row" for f in sorted({f for f in files if files.count(f) > 1})]
    assert not problems, "\n".join(problems)


# --- fit for what is deployed --------------------------------------------------------------------


def _rabbitmq_version(documents):
    (cluster,) = of_kind(documents, "RabbitmqCluster")
    image = cluster["spec"]["image"]
    m = re.fullmatch(r"(?:[\w.-]+(?::\d+)?/)*rabbitmq:(\d+\.\d+\.\d+)(?:-management)?(?:@sha256:[0-9a-f]{64})?", image)
    assert m, f"RabbitmqCluster image {image!r}: pin a rabbitmq:X.Y.Z tag"
    return tuple(int(p) for p in m.group(1).split(".")), image


def test_cluster_operator_release_drains_the_rabbitmq_deployed(overlay):
    name, documents = overlay
    version, image = _rabbitmq_version(documents)
    assert version >= RABBITMQ_MIN, f"overlay {name}: {image}: default_queue_type needs RabbitMQ >= 3.13.3"
    operator = _release("rabbitmq/cluster-operator")
    if version >= (4,):
        assert operator >= CLUSTER_OPERATOR_MIN_FOR_RABBITMQ_4, (
            f"overlay {name} deploys {image}, but cluster-operator {'.'.join(map(str, operator))}'s preStop hook "
            "stops at `rabbitmq-upgrade await_online_synchronized_mirror` (gone in RabbitMQ 4) and never runs "
            "`drain`: RabbitMQ 4 needs cluster-operator >= 2.11.0"
        )


def _override_forbidden(cluster):
    """What the cluster operator's validating webhook (from v2.22.0: validatePodSpecOverride in
    internal/webhook/v1beta1/rabbitmqcluster_webhook.go) refuses in a RabbitmqCluster's override."""
    spec = (((cluster["spec"].get("override") or {}).get("statefulSet") or {}).get("spec") or {}).get("template") or {}
    pod = spec.get("spec") or {}
    where = "spec.override.statefulSet.spec.template.spec"
    out = [f"{where}.{k}" for k in ("hostPID", "hostNetwork", "hostIPC") if pod.get(k)]
    if pod.get("serviceAccountName"):
        out.append(f"{where}.serviceAccountName")
    out += [f"{where}.volumes[{i}].hostPath" for i, v in enumerate(pod.get("volumes") or []) if v.get("hostPath")]
    for field in ("containers", "initContainers"):
        for i, c in enumerate(pod.get(field) or []):
            sc = c.get("securityContext") or {}
            if sc.get("privileged") or sc.get("allowPrivilegeEscalation"):
                out.append(f"{where}.{field}[{i}].securityContext: privileged or allowPrivilegeEscalation")
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                out.append(f"{where}.{field}[{i}].securityContext: root")
            if (sc.get("capabilities") or {}).get("add") is not None:
                out.append(f"{where}.{field}[{i}].securityContext.capabilities.add")
    return out


def test_rabbitmq_override_passes_the_cluster_operator_webhook(overlay):
    name, documents = overlay
    if _release("rabbitmq/cluster-operator") < (2, 22, 0):
        return
    for cluster in of_kind(documents, "RabbitmqCluster"):
        assert not _override_forbidden(cluster), (
            f"overlay {name}: the operator's webhook refuses {_override_forbidden(cluster)}"
        )


def test_the_webhook_check_knows_what_the_webhook_refuses():
    pod = {"hostNetwork": True, "containers": [{"name": "rabbitmq", "securityContext": {"runAsUser": 0}}]}
    cluster = {"spec": {"override": {"statefulSet": {"spec": {"template": {"spec": pod}}}}}}
    assert len(_override_forbidden(cluster)) == 2
    assert _override_forbidden({"spec": {}}) == []


def test_cnpg_release_is_a_supported_minor():
    version = _release("cloudnative-pg/cloudnative-pg")
    minor = ".".join(map(str, version[:2]))
    retrieved = _retrieved()
    assert minor in CNPG_SUPPORT, f"CloudNativePG {minor} is not in the support table read ({CNPG_SUPPORT_SOURCE})"
    released, end_of_life = (datetime.date.fromisoformat(d) for d in CNPG_SUPPORT[minor])
    assert released <= retrieved <= end_of_life, (
        f"CloudNativePG {minor}: released {released}, end of life {end_of_life} ({CNPG_SUPPORT_SOURCE}); "
        f"not supported on {retrieved}, when SOURCES.md was retrieved"
    )
    if "cloudnative-pg/plugin-barman-cloud" in _releases():
        assert version[:2] >= BARMAN_PLUGIN_MIN_CNPG, "the Barman Cloud plugin needs CloudNativePG >= 1.26"


def test_the_support_table_constant_is_the_one_read():
    # 1.25 reached its end of life on 2025-08-22 (issue 15): the table must say so
    assert CNPG_SUPPORT["1.25"][1] == "2025-08-22"
    for released, end_of_life in CNPG_SUPPORT.values():
        assert datetime.date.fromisoformat(released) < datetime.date.fromisoformat(end_of_life)


# --- the docs name the same releases -------------------------------------------------------------

_CMP = r"(?P<cmp>(?:[≥≤<>]=?|>=|<=|~)\s*)?"


def _mentions(text, project):
    """[(kind, comparator, version text)] of the project's releases named in the text: download URLs
    of the GitHub release, CNPG's release manifest, and "<Name> [≥] X.Y[.Z]" in prose or a table."""
    owner, name = project.split("/")
    found = []
    for m in re.finditer(rf"github\.com/{re.escape(owner)}/{re.escape(name)}/releases/download/v([^/\s]+)/(\S*)", text):
        found.append(("url", "", m.group(1)))
        asset = re.search(r"-(\d+\.\d+\.\d+)\.ya?ml", m.group(2))  # keda-2.20.2.yaml
        if asset:
            found.append(("url", "", asset.group(1)))
    for m in re.finditer(
        rf"githubusercontent\.com/{re.escape(owner)}/{re.escape(name)}/release-(\d+\.\d+)/releases/cnpg-([^/\s]+?)\.yaml",
        text,
    ):
        found.append(("url", "", m.group(2)))
        found.append(("minor", "", m.group(1)))
    display = re.escape(PROJECTS[project])
    for m in re.finditer(rf"{display}\**\s*(?:\|\s*)?{_CMP}v?(?P<v>\d+(?:\.\d+)+)", text):
        found.append(("prose", (m.group("cmp") or "").strip(), m.group("v")))
    return found


def _disagreements(text, project, release):
    out = []
    for kind, cmp, named in _mentions(text, project):
        version = _version(named)
        if version is None:
            out.append(f"{kind} names {named!r}")
        elif cmp:
            ok = {"≥": release >= version, ">=": release >= version, ">": release > version, "≤": release <= version}
            if not ok.get(cmp, False):
                out.append(f"'{cmp} {named}' does not hold for {'.'.join(map(str, release))}")
        elif release[: len(version)] != version:
            out.append(f"{kind} names {named}")
    return out


def _exact(text, project):
    return [v for kind, cmp, v in _mentions(text, project) if not cmp and len(_version(v) or ()) == 3]


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_the_deployment_doc_installs_the_recorded_release(project):
    release = _release(project)
    text = _read(DEPLOYMENT_DOC)
    assert _exact(text, project), (
        f"docs/deployment.md names no exact release of {PROJECTS[project]} ({project}); "
        f"SOURCES.md records {'.'.join(map(str, release))}"
    )
    wrong = _disagreements(text, project, release)
    assert not wrong, f"docs/deployment.md vs SOURCES.md ({'.'.join(map(str, release))}) for {project}: {wrong}"


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_the_readme_names_no_other_release(project):
    release = _release(project)
    wrong = _disagreements(_read(README), project, release)
    assert not wrong, f"README.md vs SOURCES.md ({'.'.join(map(str, release))}) for {project}: {wrong}"


def test_the_deployment_doc_installs_the_recorded_cert_manager_and_chart():
    alongside = _alongside()
    text = _read(DEPLOYMENT_DOC)
    cert_manager = alongside.get("cert-manager/cert-manager", "")
    assert _version(cert_manager), f"SOURCES.md: cert-manager release {cert_manager!r}"
    named = set(re.findall(r"github\.com/cert-manager/cert-manager/releases/download/v([^/\s]+)/", text))
    assert named == {cert_manager.lstrip("v")}, f"docs/deployment.md: cert-manager {named}, SOURCES.md: {cert_manager}"

    row = alongside.get("kube-prometheus-stack", "")
    chart = re.fullmatch(r"chart (\S+) \(tag `kube-prometheus-stack-\1`, appVersion (v\S+)\)", row)
    assert chart, f"SOURCES.md: kube-prometheus-stack row {row!r}"
    operator = "v" + ".".join(map(str, _release("prometheus-operator/prometheus-operator")))
    assert chart.group(2) == operator, f"kube-prometheus-stack {chart.group(1)} ships {chart.group(2)}, not {operator}"
    named = set(re.findall(r"prometheus-community/kube-prometheus-stack\s+--version\s+(\S+)", text))
    assert named == {chart.group(1)}, f"docs/deployment.md: kube-prometheus-stack {named}, SOURCES.md: {chart.group(1)}"


# --- every kind, vendored at the recorded release -----------------------------------------------


def _row_of(rel):
    return next((r for r in _rows() if r["file"] == rel), None)


def _at_recorded_release(api_version, kind, project=None):
    """Problems with the vendored schema of a kind: missing, unrecorded, or from another release."""
    doc = {"apiVersion": api_version, "kind": kind}
    rel = os.path.relpath(cv.schema_file(doc), cv.SCHEMAS)
    if not os.path.exists(cv.schema_file(doc)):
        return [f"{kind} ({api_version}): no vendored schema {rel}"]
    row = _row_of(rel)
    if row is None:
        return [f"{kind} ({api_version}): {rel} has no row in SOURCES.md"]
    problems = []
    if project and row["project"] != project:
        problems.append(f"{kind}: {rel} comes from {row['project']}, not {project}")
    releases = _releases()[row["project"]]
    if releases != {row["release"]}:
        problems.append(f"{kind}: {rel} is from {row['project']} {row['release']}, the project has {sorted(releases)}")
    return problems


def test_every_kind_the_deployment_uses_is_vendored_at_the_recorded_release():
    problems = []
    for (api_version, kind), project in KINDS.items():
        problems += _at_recorded_release(api_version, kind, project)
    assert not problems, "\n".join(problems)


def test_every_custom_resource_in_the_overlay_is_vendored_at_the_recorded_release(overlay):
    name, documents = overlay
    kinds = sorted({(d["apiVersion"], d["kind"]) for d in documents if not cv.is_builtin(d)})
    problems = []
    for api_version, kind in kinds:
        if (api_version, kind) not in KINDS:
            problems.append(f"{kind} ({api_version}): not in this test's KINDS (add it with its project)")
        problems += _at_recorded_release(api_version, kind, KINDS.get((api_version, kind)))
    assert not problems, f"overlay {name}:\n" + "\n".join(problems)


# --- against upstream itself (git copies of the repositories) ------------------------------------

needs_mirrors = pytest.mark.skipif(
    not (MIRRORS and os.path.isdir(MIRRORS)), reason="set UPSTREAM_MIRRORS to a directory of git copies of the projects"
)


def _git_dir(project):
    git_dir = _vendor_crd().find_git_dir(MIRRORS, project)
    if git_dir is None:
        pytest.skip(f"no git copy of {project} under {MIRRORS}")
    return git_dir


@needs_mirrors
def test_vendored_files_are_the_upstream_files_at_the_recorded_tags():
    vendor_crd = _vendor_crd()
    problems = []
    for row in _rows():
        git_dir = _git_dir(row["project"])
        try:
            data = vendor_crd.upstream_file(git_dir, row["release"], row["path"], row["commit"])
        except (subprocess.CalledProcessError, ValueError) as e:
            problems.append(f"{row['file']}: {e}")
            continue
        with tempfile.NamedTemporaryFile(suffix=".yaml") as tmp:
            tmp.write(data)
            tmp.flush()
            upstream = dict(vendor_crd.schemas_of(tmp.name)).get(row["file"])
        with open(os.path.join(cv.SCHEMAS, row["file"]), "rb") as f:
            if upstream != f.read():
                problems.append(f"{row['file']}: not the schema of {row['project']}@{row['release']}:{row['path']}")
    assert not problems, "\n".join(problems)


def prestop_reaches_drain(statefulset_go):
    """Whether the preStop command built in internal/resource/statefulset.go runs `drain` even when
    `await_online_synchronized_mirror` fails (RabbitMQ 4 has no such command)."""
    m = re.search(r"PreStop:.*?Command:(.*?)\n\s*\},\n", statefulset_go, re.S)
    assert m, "no preStop command found in statefulset.go"
    command = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
    assert "rabbitmq-upgrade drain" in command, command
    if "await_online_synchronized_mirror" not in command:
        return True
    between = command.split("await_online_synchronized_mirror", 1)[1].split("rabbitmq-upgrade drain", 1)[0]
    return "|| true" in between


@needs_mirrors
def test_cluster_operator_prestop_hook_at_the_recorded_tag_reaches_drain():
    row = next(r for r in _rows() if r["project"] == "rabbitmq/cluster-operator")
    git_dir = _git_dir(row["project"])
    source = _vendor_crd().upstream_file(git_dir, row["release"], "internal/resource/statefulset.go", row["commit"])
    assert prestop_reaches_drain(source.decode()), (
        f"cluster-operator {row['release']}: the preStop hook stops before `drain` when "
        "await_online_synchronized_mirror fails, as it does on RabbitMQ 4"
    )
