"""The service runner (shared.runner): a stop is never lost to a start in progress, a busy service
stops within its bound, and what it leaves unfinished is answered by the next instance.

Against the real broker; the verdicts wait for conditions (queue consumers, process exit), never
for a time to pass.
"""

import json
import os
import signal
import subprocess
import sys

import eventlet
import yaml
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from shared.runner import EXIT_KILLED, GracefulRunner
from tests.sleeper import Sleeper, StartGate
from tests.support import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUEUE = "rpc-sleeper"


def queue_state(amqp_uri, queue=QUEUE):
    """(messages ready, consumers) of ``queue``, straight from the broker (no stats delay); None if absent."""
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except Exception:  # 404: not declared yet
            return None
        finally:
            if channel.is_open:
                channel.close()
        return declared.message_count, declared.consumer_count


def test_a_stop_that_arrives_while_the_service_starts_stops_it_once_started(rabbit_config):
    """nameko's own runner stops a half-started container at once, and the start then completes
    and consumes on: the process would serve until it is killed."""
    reached, opened = eventlet.event.Event(), eventlet.event.Event()
    StartGate.reached, StartGate.opened = reached, opened
    try:
        runner = GracefulRunner([Sleeper], dict(rabbit_config), stop_timeout=60)
        starting = eventlet.spawn(runner.start)
        reached.wait()  # the container is starting: its extensions are half-way
        runner.request_stop(signal.SIGTERM, None)  # what the SIGTERM handler does
        opened.send(True)
        starting.wait()
        with eventlet.Timeout(60):
            runner.wait()
        assert runner.exit_status == 0
        state = queue_state(rabbit_config["AMQP_URI"])
        assert state is not None, "the start was cut short instead of completing before the stop"
        assert state == (0, 0), "the stopped service still consumes"
    finally:
        StartGate.reached = StartGate.opened = None


def start_sleeper(tmp_path, rabbit_config, name, scale, stop_timeout):
    config = {
        "AMQP_URI": rabbit_config["AMQP_URI"],
        "SLEEP_SCALE": scale,
        "max_workers": 10,
        "LOGGING": {
            "version": 1,
            "formatters": {"json": {"()": "shared.logs.JsonFormatter"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
            "root": {"level": "INFO", "handlers": ["console"]},
        },
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.runner",
                "--config",
                str(path),
                "--stop-timeout",
                str(stop_timeout),
                "tests.sleeper:Sleeper",
            ],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": ROOT},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process):
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_busy_service_is_killed_at_its_stop_bound_and_nothing_it_held_is_lost(rabbit_config, tmp_path):
    amqp_uri = rabbit_config["AMQP_URI"]
    busy = start_sleeper(tmp_path, rabbit_config, "busy", scale=1, stop_timeout=1)
    relief = None
    try:
        wait_until(lambda: (queue_state(amqp_uri) or (0, 0))[1] == 1, timeout=60, message="sleeper consuming")
        with ClusterRpcProxy(rabbit_config, timeout=120) as rpc:
            calls = [rpc.sleeper.work.call_async(seconds=3600) for _ in range(4)]  # never finish here
            wait_until(lambda: queue_state(amqp_uri)[0] == 0, timeout=60, message="all four calls taken")
            busy.send_signal(signal.SIGTERM)
            # Without a bound the stop would wait an hour for the workers; the design bound is
            # 1 s (--stop-timeout) + the 5 s kill budget. The test only needs it to end.
            assert busy.wait(timeout=120) == EXIT_KILLED
            assert queue_state(amqp_uri) == (4, 0), "the unfinished calls went back to the queue"
            relief = start_sleeper(tmp_path, rabbit_config, "relief", scale=0, stop_timeout=10)
            assert [call.result() for call in calls] == [3600] * 4
        relief.send_signal(signal.SIGTERM)
        assert relief.wait(timeout=120) == 0, "an idle service stops gracefully"
        for name in ("busy", "relief"):  # its log is JSON lines from the first line on
            entries = [json.loads(line) for line in (tmp_path / f"{name}.log").read_text().splitlines()]
            assert any(entry["message"] == "started" for entry in entries)
        assert any(
            entry["level"] == "warning" and "killing the services" in entry["message"]
            for entry in map(json.loads, (tmp_path / "busy.log").read_text().splitlines())
        )
    finally:
        stop(busy)
        if relief is not None:
            stop(relief)


def test_a_missing_secret_is_one_log_line_naming_it(tmp_path):
    config = tmp_path / "service.yml"
    with open(os.path.join(ROOT, "services", "grid", "config.yml")) as source:
        config.write_text(source.read())
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "GRASSROOTS_PII_KEY": "k" * 32}
    result = subprocess.run(
        [sys.executable, "-m", "shared.runner", "--config", str(config), "services.grid.service:GridService"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "error"
    assert "GRASSROOTS_JWT_SECRET is not set" in entry["message"] and "GRASSROOTS_PII_KEY" not in entry["message"]
    assert "set -a; . var/dev.env; set +a" in entry["message"]
