"""What `make test` needs beyond the venv, found or installed before the first test runs.

    python -m tools.test_prereqs --rabbit-api-uri http://guest:guest@localhost:15672

- RabbitMQ at AMQP_URI (a local one is started only for the default local URI) with its
  management API (nameko's test fixtures make a vhost per test through it): the plugin is enabled
  on a local broker;
- PostgreSQL at TEST_POSTGRES_URL (a local Debian cluster is started if it is down);
- promtool (tests/deploy/test_monitoring.py), from Debian's package prometheus, installed without
  starting its server when it is missing;
- kubectl >= 1.27 (its built-in kustomize renders k8s/ for tests/deploy), Debian package kubectl.

Installing needs root (or password-less sudo) and Debian's apt; otherwise the message says
exactly what to install.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

from tools.suite import DEFAULT_AMQP_URI, ensure_broker, is_local_host, masked

MIN_KUBECTL = (1, 27)


def say(message):
    print(f"[make test] {message}", flush=True)


def fail(message):
    sys.exit(f"[make test] {message}")


def wait_for(check, seconds, what):
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            return False
        say(f"  waiting for {what}… {time.monotonic() - started:.0f} s")
        time.sleep(2)
    return True


# --- RabbitMQ's management API -------------------------------------------------------------------


def management_api_up(api_uri):
    api = urlparse(api_uri)
    request = urllib.request.Request(f"http://{api.hostname}:{api.port or 15672}/api/overview")
    auth = f"{api.username or 'guest'}:{api.password or 'guest'}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
    try:
        with urllib.request.urlopen(request, timeout=3):
            return True
    except OSError:
        return False


def ensure_management_api(api_uri):
    if management_api_up(api_uri):
        return
    host = urlparse(api_uri).hostname
    if not (is_local_host(host) and shutil.which("rabbitmq-plugins")):
        fail(
            f"RabbitMQ's management API does not answer at {masked(api_uri)}: enable it on that broker "
            "(`rabbitmq-plugins enable rabbitmq_management`) or set RABBIT_CTL_URI."
        )
    say("enabling the RabbitMQ management plugin (nameko's test fixtures use its API)")
    subprocess.run(
        ["rabbitmq-plugins", "enable", "rabbitmq_management"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for(lambda: management_api_up(api_uri), 60, "the management API"):
        fail(f"the management API did not come up at {masked(api_uri)} within 60 s: see `rabbitmq-plugins list`.")


# --- PostgreSQL ------------------------------------------------------------------------------------


def ensure_postgres(url):
    pg = urlparse(url)

    def up():
        try:
            with socket.create_connection((pg.hostname or "localhost", pg.port or 5432), timeout=2):
                return True
        except OSError:
            return False

    if up():
        return
    if is_local_host(pg.hostname) and shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        say(f"PostgreSQL is down; starting the local cluster {version}/main")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
        if wait_for(up, 60, "PostgreSQL"):
            return
    fail(
        f"no PostgreSQL answers at TEST_POSTGRES_URL={masked(url)}: the tests need one whose role may create databases."
    )


# --- tools from Debian's packages ------------------------------------------------------------------


def apt_install(package, why):
    """Install a Debian package without starting any service it ships; False if it cannot be done here."""
    if not shutil.which("apt-get"):
        return False
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        return False
    say(f"installing {why} (Debian package {package}; its services are not started)")
    # policy-rc.d exit 101 forbids invoke-rc.d/deb-systemd-invoke from starting what the package
    # ships (the prometheus package would start a Prometheus server); recommends are left out.
    policy = "/usr/sbin/policy-rc.d"
    own_policy = not os.path.exists(policy)
    env: dict[str, str] = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if own_policy:
            subprocess.run(
                [*sudo, "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod 755 {policy}"], check=True
            )

        def apt_get(*args):
            return subprocess.run(
                [*sudo, "apt-get", *args],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )

        apt_get("update", "-qq")
        result = apt_get("install", "-y", "-qq", "--no-install-recommends", package)
        if result.returncode != 0:
            say(f"  apt-get could not install {package}: {result.stderr.strip().splitlines()[-1:]}")
            return False
        return True
    finally:
        if own_policy:
            subprocess.run([*sudo, "rm", "-f", policy], check=False)


def ensure_promtool():
    if shutil.which("promtool"):
        return
    if not apt_install("prometheus", "promtool") or not shutil.which("promtool"):
        fail(
            "promtool is missing (tests/deploy checks the alerting rules with it): install Debian's package "
            "prometheus as root, e.g. `sudo apt-get install --no-install-recommends prometheus`, "
            "then stop the server it may start (`systemctl disable --now prometheus`)."
        )
    if os.path.isdir("/run/systemd/system"):  # a systemd machine may have started it regardless
        subprocess.run(
            ["systemctl", "disable", "--now", "prometheus"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def kubectl_version(kubectl):
    result = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False)
    try:
        client = json.loads(result.stdout)["clientVersion"]
        return int(client["major"]), int("".join(ch for ch in client["minor"] if ch.isdigit()))
    except (ValueError, KeyError):
        return None


def ensure_kubectl():
    kubectl = shutil.which("kubectl")
    if kubectl is None and apt_install("kubectl", "kubectl"):
        kubectl = shutil.which("kubectl")
    if kubectl is None:
        fail(
            "kubectl is missing (tests/deploy renders k8s/ with `kubectl kustomize`): install kubectl "
            f">= {'.'.join(map(str, MIN_KUBECTL))} (Debian package kubectl from the Kubernetes apt "
            "repository, or https://kubernetes.io/docs/tasks/tools/)."
        )
    version = kubectl_version(kubectl)
    if version is None or version < MIN_KUBECTL:
        fail(
            f"{kubectl} is version {version or 'unknown'}: tests/deploy needs >= "
            f"{'.'.join(map(str, MIN_KUBECTL))} (kustomize 5)."
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.test_prereqs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rabbit-api-uri", default="http://guest:guest@localhost:15672")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args(argv)
    ensure_broker(os.environ.get("AMQP_URI", DEFAULT_AMQP_URI))
    ensure_management_api(args.rabbit_api_uri)
    ensure_postgres(args.postgres_url)
    ensure_promtool()
    ensure_kubectl()


if __name__ == "__main__":
    main()
