"""A service process while its broker is away: it stops when asked, and a container that dies ends it.

nameko's consumer retried the broker without looking up: a stop during an outage waited for the
broker's return (or the runner's bound), and a kill of a container that had died hung in it, so
the process stayed — answering /healthz, doing nothing — until the broker came back. Here
(shared.reconnect, shared.runner) a SIGTERM stops the process at once, and a dead container ends
it with status EXIT_DIED so that its supervisor starts it afresh.

The service is tests/faults/doomed.py under shared.runner, on a private node (tests/faults/brokers.py).
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from nameko.standalone.rpc import ClusterRpcProxy

from shared.runner import EXIT_DIED
from tests.faults.brokers import private_node
from tests.support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STOP_TIMEOUT = 60  # far above what a stop may take here: the verdicts are much shorter
QUICK = 15.0  # seconds a stop or an exit may take with the broker away


@pytest.fixture
def node():
    with private_node() as started:
        yield started


@pytest.fixture
def doomed(node, tmp_path):
    port = free_port()
    config = {
        "AMQP_URI": node.amqp_uri,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "STOP_TIMEOUT": STOP_TIMEOUT,
        "LOGGING": {
            "version": 1,
            "formatters": {"json": {"()": "shared.logs.JsonFormatter"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
            "root": {"level": "INFO", "handlers": ["console"]},
        },
    }
    path = tmp_path / "doomed.yml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "doomed.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.runner", "--config", str(path), "tests.faults.doomed:Doomed"],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": ROOT},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process.port = port  # type: ignore[attr-defined]
    process.log_path = log_path  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while not answers(node.amqp_uri):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"doomed did not answer:\n{log_path.read_text()}"
            time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def answers(amqp_uri):
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=5) as rpc:
            return rpc.doomed.ping() == "pong"
    except Exception:
        return False


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status


def exit_within(process, seconds):
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {seconds:g} s:\n{process.log_path.read_text()[-3000:]}") from None


def test_a_stop_while_the_broker_is_away_does_not_wait_for_it(node, doomed):
    node.stop()
    assert get(doomed.port, "/healthz") == 200  # alive, its consumers reconnecting
    started = time.monotonic()
    doomed.send_signal(signal.SIGTERM)
    assert exit_within(doomed, QUICK) == 0, "a graceful stop, not a kill at the stop bound"
    print(f"\nstopped {time.monotonic() - started:.1f} s after SIGTERM with the broker away", flush=True)


def test_a_container_that_dies_while_the_broker_is_away_ends_its_process(node, doomed):
    node.stop()
    assert get(doomed.port, "/die") == 200
    started = time.monotonic()
    assert exit_within(doomed, QUICK) == EXIT_DIED, "a dead container ends the process, non-zero"
    print(f"\nexited {time.monotonic() - started:.1f} s after its container died", flush=True)
    assert "a service container died" in doomed.log_path.read_text()
