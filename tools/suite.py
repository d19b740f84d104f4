"""Run the whole suite locally (what `make run` does).

python -m tools.suite run      # broker check, migrations, every service, demo data; Ctrl-C stops
python -m tools.suite broker   # only make sure a broker is reachable (starting a local one if needed)
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

from services import registry
from shared.db import database_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var")
DEV_ENV = os.path.join(VAR, "dev.env")
DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"


def say(message):
    print(f"[grassroots] {message}", flush=True)


def present_services():
    return list(registry.NAMES)


# The secrets of a local run, each generated once under var/ (a key added here later is appended to an
# older var/dev.env, so `make run` and `make demo` always see the same values).
DEV_SECRETS = (
    "GRASSROOTS_JWT_SECRET",
    "GRASSROOTS_PII_KEY",
    # The gateways' inbound callback (docs/gateways.md): the demo signs its keypress with the voice one.
    "NOTICES_SMS_INBOUND_SECRET",
    "NOTICES_VOICE_INBOUND_SECRET",
)


def load_dev_secrets():
    """Secrets for local runs: taken from the environment, else generated once under var/dev.env."""
    os.makedirs(VAR, exist_ok=True)
    kept = {}
    if os.path.exists(DEV_ENV):
        with open(DEV_ENV) as source:
            for line in source:
                key, _, value = line.strip().partition("=")
                if key:
                    kept[key] = value
    missing = [key for key in DEV_SECRETS if key not in kept]
    if missing:
        with open(DEV_ENV, "a") as out:
            for key in missing:
                kept[key] = secrets.token_urlsafe(48)
                out.write(f"{key}={kept[key]}\n")
        os.chmod(DEV_ENV, 0o600)
    for key, value in kept.items():
        if not os.environ.get(key):
            os.environ[key] = value


def masked(url):
    """``url`` with its password replaced by ***: safe to print."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def broker_problem(amqp_uri, timeout=5.0):
    """None if an AMQP login at ``amqp_uri`` works, else what went wrong (one line)."""
    from kombu import Connection

    try:
        with Connection(amqp_uri, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        return None
    except Exception as exc:  # socket errors, refused logins, unknown vhosts: all worth one line
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def is_default_local_broker(amqp_uri):
    """True for the broker `make run` may start itself: the default URI's on this machine."""
    url, default = urlparse(amqp_uri), urlparse(DEFAULT_AMQP_URI)
    return (
        is_local_host(url.hostname or "localhost")
        and (url.port or 5672) == default.port
        and url.scheme == default.scheme
    )


def port_open(url, default_port, timeout=2.0):
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or default_port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_broker(amqp_uri):
    """Return once the broker takes a login; start a local one only for the default local URI with
    nothing listening there (a broker that refuses the login is a setting to fix, not one to start)."""
    problem = broker_problem(amqp_uri)
    if problem is None:
        return
    if not is_default_local_broker(amqp_uri) or port_open(amqp_uri, 5672):
        sys.exit(
            f"[grassroots] the AMQP broker at AMQP_URI={masked(amqp_uri)} does not answer: {problem}\n"
            "Start that broker or fix AMQP_URI (user, password, host, port, vhost); unset it to use, "
            f"or start, the local default {DEFAULT_AMQP_URI}."
        )
    if not shutil.which("rabbitmq-server"):
        sys.exit(
            f"[grassroots] no RabbitMQ at {DEFAULT_AMQP_URI} ({problem}) and none installed here.\n"
            "Install it (Debian/Ubuntu: `apt-get install rabbitmq-server`) or point AMQP_URI at a running "
            "broker, then run `make run` again."
        )
    say(f"nothing listens at {DEFAULT_AMQP_URI}; starting the local rabbitmq-server")
    subprocess.run(["rabbitmq-server", "-detached"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while time.monotonic() - started < 90:
        time.sleep(3)
        problem = broker_problem(amqp_uri, timeout=3)
        if problem is None:
            say(f"RabbitMQ is up ({time.monotonic() - started:.0f} s)")
            return
        say(f"  waiting for RabbitMQ… {time.monotonic() - started:.0f} s")
    sys.exit(
        f"[grassroots] the local rabbitmq-server did not answer within 90 s ({problem}); "
        "see `rabbitmqctl status` and /var/log/rabbitmq/."
    )


def database_problem(url, timeout=5):
    """None if ``url`` takes a connection, else what went wrong (one line)."""
    from sqlalchemy import create_engine, text

    from shared.db import normalise_url

    url = normalise_url(url)
    connect_args = {"connect_timeout": timeout} if url.startswith("postgresql") else {}
    try:
        engine = create_engine(url, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return None
    except Exception as exc:  # unreachable host, refused login, unknown database, bad URL
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def ensure_databases(services):
    for name in services:
        url = database_url({}, name)
        if url.startswith("sqlite"):
            continue  # a local file: the migration creates it
        problem = database_problem(url)
        if problem is not None:
            sys.exit(
                f"[grassroots] {name}: its database does not answer at "
                f"{name.upper()}_DATABASE_URL={masked(url)} ({problem}).\n"
                "Start that database or fix the variable; unset it for a local SQLite file under var/."
            )


def is_local_host(host):
    return host in ("localhost", "127.0.0.1", "::1")


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
    # A short stop bound: Ctrl-C should not wait the 45 s a pod may take (the suite waits 20).
    env = {
        **os.environ,
        "WEB_SERVER_ADDRESS": f"0.0.0.0:{port}",
        "GRASSROOTS_STOP_TIMEOUT": os.environ.get("GRASSROOTS_STOP_TIMEOUT", "15"),
    }
    from services import launch  # it imports this module

    # One JSON line per call would bury the terminal: each service logs to its own file.
    with open(log_path(name), "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            launch.run_argv(name),
            cwd=ROOT,
            env=launch.run_env(name, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own process group: a terminal's Ctrl-C reaches only the suite, which then stops
            # each service once, gracefully (a second signal would make the runner kill its workers).
            start_new_session=True,
        )


def log_path(name):
    os.makedirs(os.path.join(ROOT, "var", "log"), exist_ok=True)
    return os.path.join(ROOT, "var", "log", f"{name}.log")


def log_tail(name, lines=20):
    with open(log_path(name), "rb") as log:
        return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")


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
    services = present_services()
    ensure_databases(services)
    for name in services:
        registry.get(name).migrate()
        say(f"{name}: database migrated ({masked(database_url({}, name))})")
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
            processes[name] = start_service(name, registry.get(name).dev_port)
        for name in services:
            if not wait_ready(registry.get(name).dev_port):
                raise SystemExit(f"{name} did not become ready; the end of {log_path(name)}:\n{log_tail(name)}")
        for name in services:  # demo data, through each service's own RPC
            importlib.import_module(f"tools.seeds.{name}").seed_demo(amqp_uri)
        say("suite running — Ctrl-C stops it")
        for name in services:
            port = registry.get(name).dev_port
            say(
                f"  {name:<10} health http://127.0.0.1:{port}/healthz  ready http://127.0.0.1:{port}/readyz  "
                f"metrics http://127.0.0.1:{port}/metrics"
            )
        say("  logs: var/log/<service>.log (JSON lines); tokens are signed with the secrets in var/dev.env")
        say("where to start (in another terminal):")
        from tools.demo_seed import where_to_start

        for line in where_to_start(amqp_uri):
            say(f"  {line}")
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise SystemExit(
                        f"{name} exited with status {process.returncode}; the end of "
                        f"{log_path(name)}:\n{log_tail(name)}"
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping…")
    finally:
        stop_all(processes)
        say("stopped")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.suite")
    parser.add_argument("command", choices=["run", "broker"])
    args = parser.parse_args(argv)
    if args.command == "broker":
        ensure_broker(os.environ.get("AMQP_URI", DEFAULT_AMQP_URI))
    else:
        run()


if __name__ == "__main__":
    main()
