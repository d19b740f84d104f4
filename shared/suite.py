"""Run the whole suite locally (what `make run` does).

    python -m shared.suite run      # broker check, migrations, every service, demo data; Ctrl-C stops
    python -m shared.suite broker   # only make sure a broker is reachable (starting a local one if needed)
    python -m shared.suite test-services   # broker + management API + PostgreSQL, for `make test`
"""
import argparse
import importlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var")
DEV_ENV = os.path.join(VAR, "dev.env")
# Every service the suite knows, with its default HTTP port; only those present are started.
SERVICE_PORTS = {"grid": 8001, "notices": 8002, "legal": 8003, "volunteer": 8004}
DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"


def say(message):
    print(f"[grassroots] {message}", flush=True)


def present_services():
    return [name for name in SERVICE_PORTS
            if os.path.exists(os.path.join(ROOT, "services", name, "service.py"))]


def load_dev_secrets():
    """Signing and PII keys for local runs: taken from the environment, else generated once under var/."""
    os.makedirs(VAR, exist_ok=True)
    if not os.path.exists(DEV_ENV):
        with open(DEV_ENV, "w") as out:
            out.write(f"GRASSROOTS_JWT_SECRET={secrets.token_urlsafe(48)}\n")
            out.write(f"GRASSROOTS_PII_KEY={secrets.token_urlsafe(48)}\n")
        os.chmod(DEV_ENV, 0o600)
    with open(DEV_ENV) as source:
        for line in source:
            key, _, value = line.strip().partition("=")
            if key and not os.environ.get(key):
                os.environ[key] = value


def broker_up(amqp_uri, timeout=2.0):
    url = urlparse(amqp_uri)
    try:
        with socket.create_connection((url.hostname or "localhost", url.port or 5672), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_broker(amqp_uri):
    if broker_up(amqp_uri):
        return
    host = urlparse(amqp_uri).hostname or "localhost"
    if _local(host) and shutil.which("rabbitmq-server"):
        say("RabbitMQ is down; starting a local rabbitmq-server")
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if broker_up(amqp_uri):
                say("RabbitMQ is up")
                return
            time.sleep(1)
    sys.exit(
        f"No AMQP broker reachable at {amqp_uri}.\n"
        "Install and start RabbitMQ (Debian/Ubuntu: `apt-get install rabbitmq-server && rabbitmq-server -detached`),\n"
        "or point AMQP_URI at a running broker, then run `make run` again."
    )


def _local(host):
    return host in ("localhost", "127.0.0.1", "::1")


def _wait(check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


def ensure_test_services(amqp_uri, rabbit_api_uri, postgres_url):
    """What `make test` needs: the broker, its management API (nameko's test vhosts), PostgreSQL."""
    ensure_broker(amqp_uri)
    api = urlparse(rabbit_api_uri)

    def api_up():
        try:
            request = urllib.request.Request(f"http://{api.hostname}:{api.port or 15672}/api/overview")
            auth = f"{api.username or 'guest'}:{api.password or 'guest'}".encode()
            import base64

            request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
            with urllib.request.urlopen(request, timeout=3):
                return True
        except OSError:
            return False

    if not api_up():
        if _local(api.hostname) and shutil.which("rabbitmq-plugins"):
            say("enabling the RabbitMQ management plugin (nameko's test fixtures use its API)")
            subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_management"], check=False,
                           stdout=subprocess.DEVNULL)
        if not _wait(api_up, 60):
            sys.exit(f"RabbitMQ's management API is not reachable at {rabbit_api_uri}: "
                     "run `rabbitmq-plugins enable rabbitmq_management` on the broker.")
    pg = urlparse(postgres_url)

    def pg_up():
        try:
            with socket.create_connection((pg.hostname or "localhost", pg.port or 5432), timeout=2):
                return True
        except OSError:
            return False

    if not pg_up():
        if _local(pg.hostname) and shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql"):
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            say(f"PostgreSQL is down; starting cluster {version}/main")
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
        if not _wait(pg_up, 60):
            sys.exit(f"No PostgreSQL reachable at {postgres_url}: the tests need one (set TEST_POSTGRES_URL).")


def wait_ready(port, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def start_service(name, port):
    # Each service gets its own port; WEB_SERVER_ADDRESS is for running one service alone.
    env = {**os.environ, "WEB_SERVER_ADDRESS": f"0.0.0.0:{port}",
           # nameko 2.x imports pkg_resources and eventlet, both of which now warn on import
           "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore:pkg_resources is deprecated:UserWarning,"
                             "ignore:\nEventlet is deprecated"}
    nameko = os.path.join(os.path.dirname(sys.executable), "nameko")
    # One JSON line per call would bury the terminal: each service logs to its own file.
    log = open(log_path(name), "ab")
    return subprocess.Popen(
        [nameko, "run", "--config", f"services/{name}/config.yml", f"services.{name}.service:{service_class(name)}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        # Own process group: a terminal's Ctrl-C reaches only the suite, which then stops
        # each service once, gracefully (a second signal would make nameko kill its workers).
        start_new_session=True,
    )


def log_path(name):
    os.makedirs(os.path.join(ROOT, "var", "log"), exist_ok=True)
    return os.path.join(ROOT, "var", "log", f"{name}.log")


def log_tail(name, lines=20):
    with open(log_path(name), "rb") as log:
        return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")


def service_class(name):
    return f"{name.capitalize()}Service"


def stop_all(processes):
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # nameko stops gracefully on SIGTERM
    deadline = time.monotonic() + 20
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in time; killing it")
            process.kill()


def run():
    amqp_uri = os.environ.setdefault("AMQP_URI", DEFAULT_AMQP_URI)
    load_dev_secrets()
    ensure_broker(amqp_uri)
    from shared import migrate

    services = present_services()
    for name in services:
        migrate.upgrade(name)
        say(f"{name}: database migrated ({migrate.database_url({}, name)})")
    processes = {}
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for name in services:
            processes[name] = start_service(name, SERVICE_PORTS[name])
        for name in services:
            if not wait_ready(SERVICE_PORTS[name]):
                raise SystemExit(f"{name} did not become ready; the end of {log_path(name)}:\n{log_tail(name)}")
        for name in services:  # demo data, through each service's own RPC
            seeder = os.path.join(ROOT, "services", name, "seed.py")
            if os.path.exists(seeder):
                importlib.import_module(f"services.{name}.seed").seed_demo(amqp_uri)
        say("suite running — Ctrl-C stops it")
        for name in services:
            port = SERVICE_PORTS[name]
            say(f"  {name:<10} health http://127.0.0.1:{port}/healthz  ready http://127.0.0.1:{port}/readyz  "
                f"metrics http://127.0.0.1:{port}/metrics")
        say("  logs: var/log/<service>.log (JSON lines); events: .venv/bin/grassroots tail")
        say("  call a method: .venv/bin/grassroots call grid.list_units '{\"level\": \"street\"}' "
            "(secrets in var/dev.env)")
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited with status {process.returncode}; the end of "
                                     f"{log_path(name)}:\n{log_tail(name)}")
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping…")
    finally:
        stop_all(processes)
        say("stopped")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m shared.suite")
    parser.add_argument("command", choices=["run", "broker", "test-services"])
    parser.add_argument("--rabbit-api-uri", default="http://guest:guest@localhost:15672")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    if args.command == "broker":
        ensure_broker(os.environ.get("AMQP_URI", DEFAULT_AMQP_URI))
    elif args.command == "test-services":
        ensure_test_services(os.environ.get("AMQP_URI", DEFAULT_AMQP_URI), args.rabbit_api_uri, args.postgres_url)
    else:
        run()


if __name__ == "__main__":
    main()
