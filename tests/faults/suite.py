"""The four services as real OS processes, for fault injection from outside.

The integration tests run services as in-process nameko containers: nothing there can be
SIGKILLed, SIGSTOPped or cut off from the broker on its own. Here each replica is
``python -m shared.runner`` (``services.launch.run_argv``), started with the environment its
config.yml reads, on a broker URI the caller gives (a private vhost of the machine's broker, or a
private RabbitMQ node) and on scratch PostgreSQL databases cloned from the migrated templates::

    with Suite(amqp_uri, services=("grid", "notices"), replicas={"notices": 2}, env=..., templates=...) as suite:
        suite.kill("notices", index=1)      # SIGKILL, as a node failure would
        suite.restart("notices", index=1)   # a fresh process on the same port and databases
        suite.pause("grid"); suite.resume("grid")
        suite.wait_answering("grid", timeout=30)

Every replica logs JSON lines to ``<log_dir>/<service>-<index>.log`` (appended across restarts).
"""

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from nameko.standalone.rpc import ClusterRpcProxy

from services import launch, registry
from shared.auth import mint_token
from tests.support import JWT_SECRET, PII_KEY, database_url, free_port, scratch_database

SERVICES = registry.NAMES  # grid first: the others call it
# What every replica gets unless the caller's env says otherwise. Pools stay small: the machine's
# PostgreSQL has 100 connections for every test run at once (a pool may double under load).
BASE_ENV = {
    "GRASSROOTS_JWT_SECRET": JWT_SECRET,
    "GRASSROOTS_PII_KEY": PII_KEY,
    "GRASSROOTS_STOP_TIMEOUT": "10",
    "LOG_LEVEL": "INFO",
}
# A pool may grow to twice its size (shared.db): 6 connections for 6 workers, ~40 for a whole suite.
PER_SERVICE_DEFAULTS = {"DB_POOL_SIZE": "3", "MAX_WORKERS": "6", "TIMEZONE": "Asia/Shanghai"}
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def admin_token(ttl=6 * 3600):
    return mint_token(JWT_SECRET, "faults", ["admin"], ttl=ttl)


@dataclass
class Replica:
    service: str
    index: int
    port: int
    log_path: str
    process: subprocess.Popen | None = None
    starts: int = 0
    exits: list = field(default_factory=list)  # return codes of the processes that ended, in order
    paused: bool = False
    stopped: bool = False  # ended on purpose (kill, terminate, stop), not by itself

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def crashed(self):
        """Ended by itself: nobody here killed or stopped it."""
        return self.process is not None and not self.stopped and self.process.poll() is not None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


class Suite:
    """Replicas of the services as processes; see the module docstring.

    ``env`` is added to every replica's environment (e.g. ``NOTICES_SMS_GATEWAY_URL``); keys in
    ``service_env[service]`` only to that service's. ``databases`` maps a service to a database URL
    to use as it is; the others get a scratch database, cloned from ``templates[service]`` (a
    migrated database's name) when given, else created and migrated, and dropped by ``stop()``.
    """

    def __init__(
        self,
        amqp_uri,
        services=SERVICES,
        replicas=None,
        env=None,
        service_env=None,
        databases=None,
        templates=None,
        log_dir=None,
    ):
        self.amqp_uri = amqp_uri
        self.services = tuple(services)
        self.env = dict(env or {})
        self.service_env = {name: dict(values) for name, values in (service_env or {}).items()}
        self.database_urls = dict(databases or {})
        self.templates = dict(templates or {})
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="grassroots-faults-")
        self.replicas = {
            name: [
                Replica(name, i, free_port(), os.path.join(self.log_dir, f"{name}-{i}.log"))
                for i in range((replicas or {}).get(name, 1))
            ]
            for name in self.services
        }
        self._cleanup = contextlib.ExitStack()
        self._supervisor = None
        self.supervised_restarts = 0

    # ---- lifecycle --------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self, timeout=120):
        """Databases, then every replica; returns once each answers RPC."""
        try:
            self._prepare_databases()
            for name in self.services:
                for replica in self.replicas[name]:
                    self._spawn(replica)
            for name in self.services:
                self.wait_answering(name, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout=20):
        """SIGTERM every replica (SIGCONT first for a paused one), SIGKILL what is left after
        ``timeout`` s, then drop the scratch databases."""
        self.stop_supervisor()
        for replica in self.all_replicas():
            replica.stopped = True
            if replica.alive():
                if replica.paused:
                    replica.process.send_signal(signal.SIGCONT)
                    replica.paused = False
                replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for replica in self.all_replicas():
            if replica.process is None:
                continue
            try:
                replica.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        self._cleanup.close()

    def _prepare_databases(self):
        for name in self.services:
            if name in self.database_urls:
                continue
            template = self.templates.get(name)
            db_name = self._cleanup.enter_context(scratch_database(f"grassroots_faults_{name}", template=template))
            url = database_url(db_name)
            if template is None:
                registry.get(name).migrate(url)
            self.database_urls[name] = url

    # ---- one replica --------------------------------------------------------

    def replica(self, name, index=0):
        return self.replicas[name][index]

    def all_replicas(self):
        return [replica for name in self.services for replica in self.replicas[name]]

    def replica_env(self, replica):
        name = replica.service
        env = {key: os.environ[key] for key in INHERITED if key in os.environ}
        env.update(BASE_ENV)
        env.update({f"{name.upper()}_{key}": value for key, value in PER_SERVICE_DEFAULTS.items()})
        env.update(
            {
                "AMQP_URI": self.amqp_uri,
                f"{name.upper()}_DATABASE_URL": self.database_urls[name],
                "WEB_SERVER_ADDRESS": f"127.0.0.1:{replica.port}",
            }
        )
        env.update({key: str(value) for key, value in self.env.items()})
        env.update({key: str(value) for key, value in self.service_env.get(name, {}).items()})
        return launch.run_env(name, env)

    def _spawn(self, replica):
        with open(replica.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f'{{"faults": "start {replica.starts + 1} of {replica.service}-{replica.index}"}}\n'.encode())
            log.flush()
            replica.process = subprocess.Popen(
                launch.run_argv(replica.service),
                cwd=launch.ROOT,
                env=self.replica_env(replica),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest reaches pytest only; stop() ends them
            )
        replica.starts += 1
        replica.paused = replica.stopped = False
        return replica

    def _reap(self, replica, timeout=30):
        code = replica.process.wait(timeout=timeout)
        replica.exits.append(code)
        return code

    def kill(self, name, index=0):
        """SIGKILL the replica (a crash, an OOM kill, a node lost) and wait until it is gone."""
        replica = self.replica(name, index)
        if not replica.alive():
            return None
        replica.stopped = True
        replica.process.send_signal(signal.SIGKILL)
        replica.paused = False
        return self._reap(replica)

    def terminate(self, name, index=0, timeout=60):
        """SIGTERM (a graceful stop, as Kubernetes does) and wait for the exit."""
        replica = self.replica(name, index)
        if not replica.alive():
            return None
        if replica.paused:
            self.resume(name, index)
        replica.stopped = True
        replica.process.send_signal(signal.SIGTERM)
        return self._reap(replica, timeout)

    def start_replica(self, name, index=0):
        """Start the replica again if it is not running (same port, databases and environment)."""
        replica = self.replica(name, index)
        if replica.alive():
            return replica
        if replica.crashed():
            replica.exits.append(replica.process.returncode)
        return self._spawn(replica)

    def restart(self, name, index=0):
        """SIGKILL the replica if it runs, then start it afresh; does not wait for it to answer."""
        self.kill(name, index)
        return self.start_replica(name, index)

    def pause(self, name, index=0):
        """SIGSTOP: the process holds its connections and unacknowledged messages but does nothing."""
        replica = self.replica(name, index)
        replica.process.send_signal(signal.SIGSTOP)
        replica.paused = True

    def resume(self, name, index=0):
        replica = self.replica(name, index)
        replica.process.send_signal(signal.SIGCONT)
        replica.paused = False

    def alive(self, name, index=0):
        return self.replica(name, index).alive()

    def unexpected_exits(self):
        """{"service-index": return code} of replicas that ended although nobody stopped them."""
        return {f"{r.service}-{r.index}": r.process.returncode for r in self.all_replicas() if r.crashed()}

    # ---- supervision (a restart loop, as Kubernetes would) -------------------

    def start_supervisor(self, delay=1.0):
        """Restart any replica whose process ended by itself, ``delay`` s after noticing."""
        import eventlet

        def loop():
            while True:
                for replica in self.all_replicas():
                    if replica.crashed():
                        replica.exits.append(replica.process.returncode)
                        self.supervised_restarts += 1
                        eventlet.sleep(delay)
                        self._spawn(replica)
                eventlet.sleep(0.2)

        self.stop_supervisor()
        self._supervisor = eventlet.spawn(loop)

    def stop_supervisor(self):
        if self._supervisor is not None:
            self._supervisor.kill()
            self._supervisor = None

    # ---- probes -----------------------------------------------------------

    def http_get(self, name, path, index=0, timeout=3):
        """(status, body) of a GET on the replica's web port; status None if nothing answered."""
        try:
            with urllib.request.urlopen(self.replica(name, index).url(path), timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return None, ""

    def ready(self, name, index=0):
        return self.http_get(name, "/readyz", index)[0] == 200

    def metrics(self, name, index=0):
        return self.http_get(name, "/metrics", index, timeout=10)[1]

    def answers_rpc(self, name, timeout=5):
        """True when some replica of ``name`` answers an RPC: an unknown method's typed NotFound is
        an answer (it runs nothing, needs no token and leaves nothing behind)."""
        from shared.errors import NotFound

        try:
            with ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=timeout) as rpc:
                getattr(rpc, name).faults_probe()
        except NotFound:
            return True
        except Exception:
            return False
        return True

    def wait_answering(self, name, timeout=60, index=None):
        """Seconds until every running, unpaused replica of ``name`` (or only ``index``) is ready on
        /readyz and the service answers an RPC; AssertionError with the log's tail past ``timeout``."""
        started = time.monotonic()
        indexes = [index] if index is not None else range(len(self.replicas[name]))
        while True:
            replicas = [self.replica(name, i) for i in indexes]
            dead = [r for r in replicas if r.crashed()] if self._supervisor is None else []
            if dead:
                raise AssertionError(
                    f"{name}-{dead[0].index} exited ({dead[0].process.returncode}):\n{self.tail(dead[0])}"
                )
            live = [r for r in replicas if r.alive() and not r.paused]
            if live and all(self.ready(name, r.index) for r in live) and self.answers_rpc(name):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name} did not answer within {timeout} s:\n{self.tail(replicas[0])}")
            time.sleep(0.5)

    def tail(self, replica, lines=30):
        try:
            with open(replica.log_path, "rb") as log:
                return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def log_entries(self, name, index=0):
        """The replica's JSON log lines (across its restarts) as dicts; other lines are skipped."""
        entries = []
        with open(self.replica(name, index).log_path, encoding="utf-8", errors="replace") as log:
            for line in log:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    # ---- calling the services -------------------------------------------------

    def rpc(self, token=None, timeout=30):
        """A started ClusterRpcProxy (admin token by default); use it as a context manager."""
        return ClusterRpcProxy(
            {"AMQP_URI": self.amqp_uri}, context_data={"auth_token": token or admin_token()}, timeout=timeout
        )


def unique(prefix="faults"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---- a private vhost on a broker ------------------------------------------------------------------


class Vhost:
    """A vhost made for one scenario on a running broker, deleted by ``delete()``.

    Through the management API (``ctl_uri``, e.g. http://guest:guest@localhost:15672) when it
    answers, else through ``rabbitmqctl`` on this machine (a broker without the management plugin:
    adding a vhost changes no broker setting). ``queues()`` reads queue depths the same way.
    """

    def __init__(self, amqp_base_uri, ctl_uri=None, name=None):
        parts = urlsplit(amqp_base_uri)
        self.name = name or unique("grassroots_faults").replace("-", "_")
        self.user = unquote(parts.username or "guest")
        self.ctl_uri = ctl_uri
        self.uri = urlunsplit((parts.scheme, parts.netloc, "/" + quote(self.name, safe=""), "", ""))
        self.api = ctl_uri is not None and self._api_up()
        if self.api:
            self._api("PUT", f"/api/vhosts/{quote(self.name, safe='')}")
            self._api(
                "PUT",
                f"/api/permissions/{quote(self.name, safe='')}/{quote(self.user, safe='')}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
        else:
            self._ctl("add_vhost", self.name)
            self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def _api_up(self):
        try:
            self._api("GET", "/api/overview")
            return True
        except OSError:
            return False

    def _api(self, method, path, body=None):
        import base64

        parts = urlsplit(self.ctl_uri)
        request = urllib.request.Request(
            f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        auth = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
        with urllib.request.urlopen(request, timeout=15) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    @staticmethod
    def _ctl(*args):
        return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60)

    def queues(self):
        """{queue name: (ready, unacknowledged, consumers)}; the management API's figures lag by a
        few seconds, rabbitmqctl's do not."""
        if self.api:
            columns = "name,messages_ready,messages_unacknowledged,consumers"
            rows = self._api("GET", f"/api/queues/{quote(self.name, safe='')}?columns={columns}")
        else:
            out = self._ctl(
                "list_queues",
                "-p",
                self.name,
                "--formatter",
                "json",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ).stdout
            rows = json.loads(out or "[]")
        return {
            row["name"]: (
                int(row.get("messages_ready") or 0),
                int(row.get("messages_unacknowledged") or 0),
                int(row.get("consumers") or 0),
            )
            for row in rows
        }

    def delete(self):
        if self.api:
            self._api("DELETE", f"/api/vhosts/{quote(self.name, safe='')}")
        else:
            self._ctl("delete_vhost", self.name)
