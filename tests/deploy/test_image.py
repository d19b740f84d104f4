"""The container image, without building it (no Docker engine here): the Dockerfile's properties,
what its build context keeps, that the runtime pins alone carry the services, and the launcher
it runs (`python -m services.launch run|migrate <service>`) — its argv, its refusals, the credentials
it percent-encodes, and advisory-locked migrations against a real PostgreSQL."""

import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from sqlalchemy import create_engine, text

from services import launch, registry
from shared import migrate
from tests.deploy.conftest import ROOT, SERVICES

PYTHON = sys.executable


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as source:
        return source.read()


def pins(name):
    """{normalised distribution name: version} of a requirements file (without -r includes)."""
    found = {}
    for line in read(name).splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            dist, _, version = line.partition("==")
            found[re.sub(r"[-_.]+", "-", dist).lower()] = version
    return found


# --- the Dockerfile -----------------------------------------------------------------------------


def dockerfile_problems(dockerfile):
    """What is wrong with a Dockerfile against the image's rules (an empty list: nothing)."""
    problems = []
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", "\n".join(instructions), re.M))
    stages = [line for line in instructions if line.upper().startswith("FROM ")]
    aliases = {s.split()[-1] for s in stages if len(s.split()) == 4 and s.split()[2].upper() == "AS"}
    if len(stages) < 2:
        problems.append("not multi-stage")
    for stage in stages:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), stage.split()[1])
        if image in aliases:  # FROM an earlier stage
            continue
        if not re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image):
            problems.append(f"base not pinned to an exact version: {image}")
    final = instructions[instructions.index(stages[-1]) :] if stages else instructions
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append("the final stage does not run as a numeric non-root USER")
    if "requirements-dev" in "\n".join(instructions):
        problems.append("development requirements in the image")
    env = " ".join(line for line in final if line.upper().startswith("ENV "))
    for variable in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        if variable not in env:
            problems.append(f"no {variable}")
    entrypoints = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    if not entrypoints or entrypoints[-1] != 'ENTRYPOINT ["python", "-m", "services.launch"]':
        problems.append("the entrypoint is not the launcher")
    builder = instructions[instructions.index(stages[0]) : instructions.index(stages[-1])] if len(stages) > 1 else []
    if not any(re.search(r"pip wheel .*-r requirements\.txt", line) for line in builder):
        problems.append("the builder does not build wheels of requirements.txt")
    if not any(re.search(r"pip install .*--no-index .*-r \S*requirements\.txt", line) for line in final):
        problems.append("the runtime does not install the builder's wheels (offline)")
    return problems


def test_dockerfile_properties():
    assert dockerfile_problems(read("Dockerfile")) == []


def test_dockerfile_check_can_fail():
    bad = 'FROM python:3.11-slim\nRUN pip install -r requirements-dev.txt\nUSER root\nENTRYPOINT ["nameko", "run"]\n'
    assert set(dockerfile_problems(bad)) == {
        "not multi-stage",
        "base not pinned to an exact version: python:3.11-slim",
        "the final stage does not run as a numeric non-root USER",
        "development requirements in the image",
        "no PYTHONDONTWRITEBYTECODE=1",
        "no PYTHONUNBUFFERED=1",
        "the entrypoint is not the launcher",
        "the builder does not build wheels of requirements.txt",
        "the runtime does not install the builder's wheels (offline)",
    }
    assert "the final stage does not run as a numeric non-root USER" in dockerfile_problems(
        read("Dockerfile").replace("USER 10001:10001", "USER grassroots")
    )


def test_base_image_is_the_python_the_pins_are_tested_on():
    version = re.search(r"python:(\d+)\.(\d+)\.\d+-slim", read("Dockerfile"))
    assert version is not None, "the Dockerfile names no python:X.Y.Z-slim base"
    assert (int(version.group(1)), int(version.group(2))) == sys.version_info[:2]


def ignored(path, patterns):
    """Whether .dockerignore's patterns leave ``path`` (relative, '/'-separated) out of the context."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(
            fnmatch.fnmatch(p, pattern)
            or fnmatch.fnmatch(p, pattern.replace("**/", "*/"))
            or (
                pattern.startswith("**/") and fnmatch.fnmatch(parts[-1] if p == path else p.split("/")[-1], pattern[3:])
            )
            for p in prefixes
        ):
            keep = negate
    return not keep


def dockerignore():
    return [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]


def test_build_context_keeps_the_services_and_drops_the_rest():
    patterns = dockerignore()
    for service in SERVICES:
        for path in (
            f"services/{service}/service.py",
            f"services/{service}/config.yml",
            f"services/{service}/migrations/env.py",
        ):
            assert not ignored(path, patterns), path
    for path in ("requirements.txt", "services/launch.py", "shared/migrate.py", "shared/web.py"):
        assert not ignored(path, patterns), path
    for path in (
        "requirements-dev.txt",
        "tests/support.py",
        "k8s/base/kustomization.yaml",
        ".venv/bin/python",
        "var/grid.db",
        "tools/cli/__main__.py",
        "tools/seeds/grid.py",
        "tools/demo.py",
        "shared/__pycache__/db.cpython-311.pyc",
    ):
        assert ignored(path, patterns), path


RUNTIME_PROBE = """
import importlib.abc, json, sys

class Absent(importlib.abc.MetaPathFinder):  # what requirements-dev.txt adds is not in the image
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, Absent())
import services.launch, shared.migrate, nameko.cli.main, nameko.cli.run
for service in {services!r}:
    __import__(f"services.{{service}}.service")
    __import__(f"services.{{service}}.models")
print(json.dumps({{name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}}))
"""


def test_runtime_imports_only_runtime_pins_and_files_in_the_image():
    """What the services import at run time comes from requirements.txt's distributions and from
    files the build context keeps: the image, without requirements-dev.txt, can run them."""
    import importlib.metadata
    import json

    # pkg_resources (imported by any earlier test that loads nameko's CLI) puts setuptools' _vendor folder
    # on sys.path: its dist-infos are setuptools' own vendored copies, not distributions to pin.
    saved_path = sys.path[:]
    sys.path[:] = [p for p in sys.path if f"{os.sep}_vendor" not in p]
    try:
        owners = importlib.metadata.packages_distributions()
    finally:
        sys.path[:] = saved_path
    runtime = pins("requirements.txt")
    dev_only = set(pins("requirements-dev.txt")) - set(runtime)
    blocked = sorted(
        top for top, dists in owners.items() if {re.sub(r"[-_.]+", "-", d).lower() for d in dists} <= dev_only
    )
    assert {"pytest", "hypothesis", "rich", "pygments", "kubernetes_validate"} <= set(blocked)
    probe = RUNTIME_PROBE.format(services=SERVICES, blocked=set(blocked))
    out = subprocess.run(
        [PYTHON, "-W", "ignore", "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    used = set()
    for name, path in modules.items():
        top = name.split(".")[0]
        for dist in owners.get(top, []):
            used.add(re.sub(r"[-_.]+", "-", dist).lower())
        if path and path.startswith(ROOT + os.sep) and "site-packages" not in path:
            relative = os.path.relpath(path, ROOT).replace(os.sep, "/")
            assert not ignored(relative, dockerignore()), f"{name} ({relative}) is not in the image"
    missing = sorted(used - set(runtime) - {"grassroots"})
    assert missing == [], f"imported at run time but not pinned in requirements.txt: {missing}"
    assert {"nameko", "mock", "path-py", "setuptools"} <= set(runtime)


def test_requirements_split():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert read("requirements-dev.txt").count("-r requirements.txt") == 1
    assert not set(runtime) & set(dev), "a pin in both files"
    for tool in ("pytest", "pytest-eventlet", "hypothesis", "kubernetes-validate", "jsonschema", "rich", "tqdm"):
        assert tool in dev and tool not in runtime, tool
    assert runtime["setuptools"].split(".")[0] < "82"  # the nameko CLI imports pkg_resources
    assert all(version for version in {**runtime, **dev}.values()), "every requirement pinned"


# --- the launcher -------------------------------------------------------------------------------


def test_run_builds_the_runner_command_line_of_each_service():
    for service in SERVICES:
        argv = launch.run_argv(service)
        assert argv[0] == PYTHON and os.access(argv[0], os.X_OK)
        assert argv[1:] == [
            "-m",
            "shared.runner",
            "--config",
            os.path.join(ROOT, "services", service, "config.yml"),
            f"services.{service}.service:{service.capitalize()}Service",
        ]


@pytest.mark.parametrize("command", ["run", "migrate"])
def test_unknown_services_are_refused_clearly(command):
    result = subprocess.run(
        [PYTHON, "-W", "ignore", "-m", "services.launch", command, "gird"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 2
    assert "unknown service 'gird': choose one of grid, notices, legal, volunteer" in result.stderr
    with pytest.raises(SystemExit):
        launch.main([command, "../grid"])


def test_credentials_pasted_by_kubernetes_are_percent_encoded():
    from kombu.utils.url import url_to_parts
    from sqlalchemy.engine import make_url

    user, password = "Zm9v/YmFy+cXV4", "cGFz/c3dv+cmQ="  # base64, as the topology operator makes them
    pasted = {  # what `$(AMQP_USERNAME)`-style interpolation gives nameko
        "AMQP_USERNAME": user,
        "AMQP_PASSWORD": password,
        "AMQP_URI": f"amqp://{user}:{password}@grassroots-rabbitmq.grassroots.svc:5672/grassroots",
        "DB_USERNAME": "grid",
        "DB_PASSWORD": "p@ss/w:rd#1",
        "GRID_DATABASE_URL": "postgresql://grid:p@ss/w:rd#1@grassroots-pg-rw.grassroots.svc:5432/grid",
    }
    assert url_to_parts(pasted["AMQP_URI"]).hostname != "grassroots-rabbitmq.grassroots.svc"  # broken as pasted
    env = launch.quote_credentials(pasted, "grid")
    amqp = url_to_parts(env["AMQP_URI"])
    assert (amqp.username, amqp.password, amqp.hostname, amqp.port, amqp.path) == (
        user,
        password,
        "grassroots-rabbitmq.grassroots.svc",
        5672,
        "grassroots",
    )
    db = make_url(env["GRID_DATABASE_URL"])
    assert (db.username, db.password, db.host, db.database) == (
        "grid",
        "p@ss/w:rd#1",
        "grassroots-pg-rw.grassroots.svc",
        "grid",
    )
    # A URL the operator wrote by hand (not starting with those credentials) is left alone.
    own = {"AMQP_USERNAME": "a", "AMQP_PASSWORD": "b", "AMQP_URI": "amqp://guest:guest@localhost:5672/"}
    assert launch.quote_credentials(own, "grid")["AMQP_URI"] == own["AMQP_URI"]
    assert launch.run_env("grid", pasted)["AMQP_URI"] == env["AMQP_URI"]


@pytest.fixture
def login_role():
    """A PostgreSQL login role whose password has '/', '@', ':' and '+' in it (dropped afterwards)."""
    from tests.support import admin_engine

    name, password = f"mig_{os.urandom(4).hex()}", "p/w@x:1+2"
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"))
    yield name, password
    with engine.connect() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    engine.dispose()


def migrate_env(database, user, password):
    """The migration initContainer's environment, as Kubernetes builds it (nothing else: no secrets)."""
    from tests.support import database_url

    address = database_url(database).split("@", 1)[1]
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": ROOT,
        "PYTHONWARNINGS": "ignore",
        "DB_USERNAME": user,
        "DB_PASSWORD": password,
        "GRID_DATABASE_URL": f"postgresql://{user}:{password}@{address}",
    }


def admin_credentials():
    """The test PostgreSQL's admin user and password (TEST_POSTGRES_URL)."""
    from sqlalchemy.engine import make_url

    from tests.support import POSTGRES_ADMIN_URL

    url = make_url(POSTGRES_ADMIN_URL)
    return url.username or "", url.password or ""


def alembic_head(database):
    from tests.support import database_url

    engine = create_engine(database_url(database).replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
        heads = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() if exists else None
    engine.dispose()
    return heads


def expected_heads(service):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(
        migrate.alembic_config(service, None, registry.get(service).migrations, "sqlite://")
    ).get_heads()


def test_migrate_upgrades_a_database_to_head_with_pasted_credentials(login_role):
    from tests.support import scratch_database

    user, password = login_role
    with scratch_database("grassroots_launch") as database:
        from tests.support import admin_engine

        engine = admin_engine()
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" OWNER TO "{user}"'))
        engine.dispose()
        result = subprocess.run(
            [PYTHON, "-m", "services.launch", "migrate", "grid"],
            cwd="/",
            env=migrate_env(database, user, password),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "grid: migrated to head" in result.stdout
        assert alembic_head(database) == list(expected_heads("grid"))


def test_replicas_migrating_at_once_take_turns():
    """Three initContainers starting together: all succeed, the database ends at head once (without
    the lock, concurrent alembic upgrades of an empty database collide on CREATE TABLE)."""
    from tests.support import scratch_database

    with scratch_database("grassroots_launch") as database:
        env = migrate_env(database, *admin_credentials())
        processes = [
            subprocess.Popen(
                [PYTHON, "-m", "services.launch", "migrate", "grid"],
                cwd="/",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        errors = [p.communicate(timeout=120)[1] for p in processes]
        results = [(p.returncode, err) for p, err in zip(processes, errors, strict=True)]
        assert [status for status, _ in results] == [0, 0, 0], results
        assert alembic_head(database) == list(expected_heads("grid"))


def test_a_migration_waits_for_the_advisory_lock():
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_launch") as database:
        holder = create_engine(
            database_url(database).replace("postgresql://", "postgresql+psycopg2://", 1), isolation_level="AUTOCOMMIT"
        )
        with holder.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": migrate.lock_key("grid")})
            process = subprocess.Popen(
                [PYTHON, "-m", "services.launch", "migrate", "grid"],
                cwd="/",
                env=migrate_env(database, *admin_credentials()),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert process.stderr is not None
            try:
                time.sleep(4)
                assert process.poll() is None, process.stderr.read()
                assert alembic_head(database) is None  # nothing migrated while another holds the lock
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": migrate.lock_key("grid")})
            assert process.wait(timeout=120) == 0, process.stderr.read()
            process.stderr.close()
        holder.dispose()
        assert alembic_head(database) == list(expected_heads("grid"))
    assert migrate.lock_key("grid") != migrate.lock_key("notices")


def launched_grid(rabbit_config, database):
    """`python -m services.launch run grid` as the container runs it (cwd /, only its own settings)."""
    from tests.support import JWT_SECRET, PII_KEY, free_port

    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": ROOT,
        "AMQP_URI": rabbit_config["AMQP_URI"],
        "GRID_DATABASE_URL": database,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "GRASSROOTS_JWT_SECRET": JWT_SECRET,
        "GRASSROOTS_PII_KEY": PII_KEY,
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [PYTHON, "-m", "services.launch", "run", "grid"],
        cwd="/",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, port


def ready(process, port):
    assert process.stderr is not None
    assert process.poll() is None, process.stderr.read()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ended(process):
    assert process.stderr is not None
    if process.poll() is None:
        process.kill()
        process.wait()
    process.stderr.close()


def test_run_execs_the_runner_which_stops_a_busy_grid_gracefully_and_answers_every_call(rabbit_config, grid_db):
    """`python -m services.launch run grid` becomes the service process itself (exec: it receives
    SIGTERM directly, as the container's main process would). Stopped while callers keep it busy,
    it finishes what it took and exits 0; what it had not taken waits in its queue for the next
    grid, which answers it: every call gets exactly one answer."""
    from nameko.standalone.rpc import ClusterRpcProxy

    from tests.support import token, wait_until

    first, port = launched_grid(rabbit_config, grid_db)
    second = None
    try:
        wait_until(lambda: ready(first, port), timeout=120, message="grid ready")
        with open(f"/proc/{first.pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        assert argv[1:3] == [b"-m", b"shared.runner"] and b"services.grid.service:GridService" in argv
        context = {"auth_token": token("admin")}
        with ClusterRpcProxy(rabbit_config, context_data=context, timeout=120) as rpc:
            root = rpc.grid.create_unit(parent_id=None, level="district", name="Stop test", code="999999")
            # A backlog far beyond what one grid takes at once (prefetch = 20 workers).
            calls = [rpc.grid.get_unit.call_async(unit_id=root["id"]) for _ in range(300)]
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=120) == 0, "the graceful stop finished within its bound"
            second, port = launched_grid(rabbit_config, grid_db)
            answers = [call.result() for call in calls]
        assert [answer["name"] for answer in answers] == ["Stop test"] * len(calls)
        # The first may have answered every call before it stopped: the second is stopped once it has
        # started (a SIGTERM before the runner installs its handler ends an interpreter still importing).
        wait_until(lambda: ready(second, port), timeout=120, message="second grid ready")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == 0
    finally:
        ended(first)
        if second is not None:
            ended(second)
