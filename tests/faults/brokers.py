"""Private RabbitMQ nodes for the fault tests: one node, or a cluster of three, on loopback.

The fault tests stop, kill and restart brokers; the machine's own node (5672) must never be one
of them. Each node here is the machine's rabbitmq-server run from a temp folder with its own node
name (``gr-fault-<uuid>-<n>@localhost``), AMQP, distribution and management ports, data, log,
config and plugin files, and its own Erlang cookie (``HOME`` is the folder). Every CLI call names
its node (``rabbitmqctl -n``), and none reads /etc/rabbitmq: the env file, the config file and the
enabled-plugins file are the folder's own.

    with private_node() as node:          # started, ready, stopped and removed on exit
        node.amqp_uri                     # amqp://guest:guest@127.0.0.1:<port>/
        node.stop(); node.start()         # a graceful stop; a start waits until it takes logins
        node.kill()                       # SIGKILL (the whole process group it was started in)

    with private_cluster(3) as cluster:   # three nodes joined to the first
        cluster.amqp_uri                  # a kombu failover list: amqp://…:p1/;amqp://…:p2/;…

Readiness is polled (``rabbitmqctl await_startup`` and an AMQP login), never waited for by sleeping.
"""

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from urllib.parse import quote

# The Debian package's scripts: /usr/sbin/rabbitmq-server switches to the rabbitmq user and its
# cookie, and reads /etc/rabbitmq; these run as the caller with the environment given here.
SCRIPTS_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
CTL_TIMEOUT = 60.0


class BrokerError(RuntimeError):
    """A private node did not do what it was asked in time; the message ends with its log's tail."""


def scripts_dir():
    """Where rabbitmq-server and rabbitmqctl are, or None when RabbitMQ is not installed here."""
    for folder in SCRIPTS_DIRS:
        if os.access(os.path.join(folder, "rabbitmq-server"), os.X_OK):
            return folder
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def amqp_login(uri, timeout=3.0):
    """True when an AMQP login at ``uri`` (one node) works now."""
    from kombu import Connection

    try:
        with Connection(uri, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=0, timeout=timeout)
        return True
    except Exception:
        return False


class RabbitNode:
    """One private node under ``base`` (its folder: data, logs, config); see the module docstring."""

    def __init__(self, base, name, cookie, user="guest", password="guest"):
        self.base = base
        self.name = name  # the full node name, name@localhost
        self.cookie = cookie
        self.user, self.password = user, password
        self.port = free_port()
        self.dist_port = free_port()
        self.management_port = free_port()
        self.folder = os.path.join(base, name.partition("@")[0])
        self.process: subprocess.Popen | None = None
        self.scripts = scripts_dir()
        if self.scripts is None:
            raise BrokerError("rabbitmq-server is not installed here")
        self._write_files()

    # ---- addresses ------------------------------------------------------------------------------

    @property
    def amqp_uri(self):
        return f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/"

    @property
    def management_uri(self):
        return f"http://{quote(self.user, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.management_port}"

    # ---- files and environment ------------------------------------------------------------------

    def _path(self, *parts):
        return os.path.join(self.folder, *parts)

    def _write_files(self):
        for sub in ("mnesia", "log"):
            os.makedirs(self._path(sub), exist_ok=True)
        cookie = os.path.join(self.base, ".erlang.cookie")  # HOME is the base: one cookie per cluster
        if not os.path.exists(cookie):
            with open(cookie, "w") as out:
                out.write(self.cookie)
            os.chmod(cookie, 0o400)
        with open(self._path("rabbitmq.conf"), "w") as out:
            out.write(
                f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
                f"management.tcp.ip = 127.0.0.1\n"
                f"management.tcp.port = {self.management_port}\n"
                # A nearly full disk on a test machine must not block publishers mid-scenario.
                "disk_free_limit.absolute = 10MB\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )
        with open(self._path("enabled_plugins"), "w") as out:
            out.write("[rabbitmq_management].\n")
        with open(self._path("rabbitmq-env.conf"), "w") as out:
            out.write("# empty: this node's settings come from its environment, not /etc/rabbitmq\n")

    def env(self):
        env = {
            key: value
            for key, value in os.environ.items()
            # The machine's own node's settings must not leak into this one's.
            if not key.startswith(("RABBITMQ_", "ERL_")) and key not in ("NODENAME", "HOME")
        }
        env.update(
            HOME=self.base,
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=self._path("rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=self._path("rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=self._path("advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=self._path("enabled_plugins"),
            RABBITMQ_MNESIA_BASE=self._path("mnesia"),
            RABBITMQ_LOG_BASE=self._path("log"),
            RABBITMQ_LOGS=self._path("log", "rabbit.log"),
            RABBITMQ_PID_FILE=self._path("rabbit.pid"),
            RABBITMQ_PLUGINS_EXPAND_DIR=self._path("plugins-expand"),
            # Distribution on loopback only; the CLI's own distribution ports stay the defaults.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    # ---- the CLI: always with -n this node ------------------------------------------------------

    def ctl(self, *args, timeout=CTL_TIMEOUT, check=True):
        """``rabbitmqctl -n <this node> args…``; the completed process (raises BrokerError if ``check``)."""
        argv = [os.path.join(self.scripts, "rabbitmqctl"), "-n", self.name, *args]
        try:
            done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} on {self.name} took over {timeout:g} s") from None
        if check and done.returncode != 0:
            raise BrokerError(
                f"rabbitmqctl {' '.join(args)} on {self.name} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )
        return done

    # ---- life cycle -----------------------------------------------------------------------------

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self, wait=True, timeout=START_TIMEOUT):
        if self.running:
            raise BrokerError(f"{self.name} is already running")
        with open(self._path("log", "console.log"), "ab") as console:
            self.process = subprocess.Popen(
                [os.path.join(self.scripts, "rabbitmq-server")],
                cwd=self.folder,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: kill() reaches beam and its helpers, nothing else
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        """Return once the node runs the rabbit app and takes an AMQP login; raise if it exits or
        ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise BrokerError(f"{self.name} exited while starting{self.log_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"{self.name} not ready within {timeout:g} s{self.log_tail()}")
            # await_startup fails at once while the VM is not up yet; then the next round polls again.
            waited = self.ctl("await_startup", "--timeout", str(max(1, int(min(left, 30)))), check=False, timeout=40)
            if waited.returncode == 0 and amqp_login(self.amqp_uri):
                return
            time.sleep(0.5)  # a poll interval, not a verdict

    def stop(self, timeout=STOP_TIMEOUT):
        """A graceful stop (SIGTERM: the start script has the node stop itself); SIGKILL past ``timeout``."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group(process.pid)

    def kill(self):
        """SIGKILL the node's whole process group (beam and its helpers), as a crash would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    @staticmethod
    def _reap_group(pgid):
        # beam may outlive the start script by a moment: wait for the group to be gone.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def restart(self, timeout=START_TIMEOUT):
        self.stop()
        return self.start(timeout=timeout)

    # ---- the management API (this node's own port) -----------------------------------------------

    def api(self, path, method="GET", body=None, timeout=15):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.management_port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        credentials = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {credentials}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def queues(self, vhost="/"):
        """{queue name: (ready, unacknowledged, consumers)} in ``vhost`` (the management API's
        figures, a few seconds behind), as tests.faults.effects.pending_work reads them."""
        columns = "name,messages_ready,messages_unacknowledged,consumers"
        rows = self.api(f"/api/queues/{quote(vhost, safe='')}?columns={columns}") or []
        return {
            row["name"]: (
                int(row.get("messages_ready") or 0),
                int(row.get("messages_unacknowledged") or 0),
                int(row.get("consumers") or 0),
            )
            for row in rows
        }

    def log_tail(self, lines=25):
        tails = []
        for name in ("console.log", "rabbit.log"):
            path = self._path("log", name)
            if os.path.exists(path):
                with open(path, "rb") as log:
                    tail = b"".join(log.readlines()[-lines:]).decode("utf-8", "replace").strip()
                if tail:
                    tails.append(f"--- {name}:\n{tail}")
        return ("\n" + "\n".join(tails)) if tails else ""


class RabbitCluster:
    """Nodes joined into one cluster (to the first); ``amqp_uri`` is a kombu failover list."""

    def __init__(self, nodes):
        self.nodes = nodes

    @property
    def amqp_uri(self):
        return ";".join(node.amqp_uri for node in self.nodes)

    @property
    def management_uri(self):
        return self.nodes[0].management_uri

    def queues(self, vhost="/"):
        """As RabbitNode.queues, asked of the first node that is running."""
        return next(node for node in self.nodes if node.running).queues(vhost)

    def join(self):
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
            node.wait_ready()
        return self

    def running_nodes(self):
        """The names of the nodes the first running member sees running."""
        for node in self.nodes:
            if node.running:
                done = node.ctl("eval", "rabbit_nodes:all_running().", check=False)
                if done.returncode == 0:
                    return sorted(n.name for n in self.nodes if n.name in done.stdout)
        return []


def _new_base():
    return tempfile.mkdtemp(prefix="gr-fault-")


def _stop_all(nodes):
    for node in nodes:
        try:
            node.stop()
        except Exception:  # teardown: stop the others whatever one does
            node.kill()


@contextlib.contextmanager
def private_node():
    """One started private node; stopped and its folder removed on exit, whatever happened."""
    base = _new_base()
    node = None
    try:
        node = RabbitNode(base, f"gr-fault-{uuid.uuid4().hex[:8]}@localhost", cookie=uuid.uuid4().hex)
        node.start()
        yield node
    finally:
        if node is not None:
            _stop_all([node])
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_cluster(size=3):
    """``size`` started private nodes joined into one cluster; all stopped and removed on exit."""
    base = _new_base()
    nodes = []
    try:
        tag, cookie = uuid.uuid4().hex[:8], uuid.uuid4().hex
        nodes = [RabbitNode(base, f"gr-fault-{tag}-{n}@localhost", cookie=cookie) for n in range(1, size + 1)]
        for node in nodes:  # boot side by side, then wait for each
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        yield RabbitCluster(nodes).join()
    finally:
        _stop_all(nodes)
        shutil.rmtree(base, ignore_errors=True)
