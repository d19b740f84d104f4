"""shared.reconnect without a broker: the backoff setting, and what a consumer does while disconnected.

The behaviour against real brokers is in tests/faults (test_broker_restart, test_broker_away,
test_cluster).
"""

import socket
import time

import pytest
from eventlet.event import Event
from nameko.messaging import QueueConsumer

from shared import reconnect
from shared.runner import StartupError, check_config
from shared.web import READY_TIMEOUT, broker_reachable


def test_the_reconnect_ceiling_comes_from_the_config_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv(reconnect.MAX_INTERVAL_ENV, raising=False)
    assert reconnect.max_interval({}) == reconnect.DEFAULT_MAX_INTERVAL == 5.0
    monkeypatch.setenv(reconnect.MAX_INTERVAL_ENV, "2.5")
    assert reconnect.max_interval({}) == 2.5
    assert reconnect.max_interval({reconnect.MAX_INTERVAL_CONFIG_KEY: "8"}) == 8.0
    assert reconnect.max_interval({reconnect.MAX_INTERVAL_CONFIG_KEY: ""}) == 2.5  # an unset ${VAR:}


@pytest.mark.parametrize("value", ["0", "-1", "soon", [5], "nan"])
def test_a_ceiling_that_is_not_a_positive_number_is_refused(value):
    with pytest.raises(ValueError, match=reconnect.MAX_INTERVAL_CONFIG_KEY):
        reconnect.max_interval({reconnect.MAX_INTERVAL_CONFIG_KEY: value})


def test_the_backoff_starts_at_a_second_and_stops_at_the_ceiling():
    assert reconnect.policy({reconnect.MAX_INTERVAL_CONFIG_KEY: 5}) == {
        "interval_start": 1.0,
        "interval_step": 1.0,
        "interval_max": 5.0,
    }
    assert reconnect.policy({reconnect.MAX_INTERVAL_CONFIG_KEY: 0.5})["interval_start"] == 0.5


class Consumer:
    """The attributes of a nameko QueueConsumer that shared.reconnect reads and writes."""

    def __init__(self, providers=()):
        self._consumers = {provider: object() for provider in providers}
        self._pending_remove_providers = {}
        self.should_stop = False


def test_a_stop_while_disconnected_lets_the_providers_go_and_ends_the_reconnect_loop():
    consumer = Consumer(["rpc", "events"])
    reconnect._while_disconnected(consumer)  # nothing asked: keep trying
    rpc_removed, events_removed = Event(), Event()
    consumer._pending_remove_providers = {"rpc": rpc_removed}
    reconnect._while_disconnected(consumer)
    assert rpc_removed.ready() and not consumer.should_stop, "one provider left: still consuming for it"
    consumer._pending_remove_providers = {"events": events_removed}
    with pytest.raises(reconnect.StopReconnecting):
        reconnect._while_disconnected(consumer)
    assert events_removed.ready() and consumer.should_stop and consumer._consumers == {}


def test_a_kill_while_disconnected_ends_the_reconnect_loop():
    consumer = Consumer(["rpc"])
    consumer.should_stop = True  # what nameko's QueueConsumer.kill sets
    with pytest.raises(reconnect.StopReconnecting):
        reconnect._while_disconnected(consumer)


@pytest.mark.parametrize("error", [ConnectionResetError(104, "reset"), BrokenPipeError(32, "broken pipe")])
def test_an_ack_on_a_dropped_connection_is_logged_not_raised(error, caplog):
    def ack(queue_consumer, message):
        raise error

    reconnect._settle(ack)(object(), object())
    assert "the broker delivers it again" in caplog.text


def test_install_is_idempotent_and_patches_every_queue_consumer():
    reconnect.install()
    patched = QueueConsumer.establish_connection
    reconnect.install()
    assert QueueConsumer.establish_connection is patched is reconnect._establish_connection
    assert QueueConsumer._while_disconnected is reconnect._while_disconnected


def test_the_readiness_probe_of_a_broker_that_never_answers_is_bounded():
    """/readyz logs in to the broker when it has no live connection (a first probe, or after one broke): a
    broker that takes the connection and then says nothing (overloaded, paused) must not hold the probe
    past READY_TIMEOUT."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # the kernel accepts the connection; nobody speaks AMQP on it
        port = silent.getsockname()[1]
        started = time.monotonic()
        assert broker_reachable(f"amqp://guest:guest@127.0.0.1:{port}/;amqp://guest:guest@127.0.0.1:{port}/") is False
        assert time.monotonic() - started < READY_TIMEOUT + 1.0


def test_the_runner_refuses_a_bad_ceiling_before_anything_starts():
    check_config({reconnect.MAX_INTERVAL_CONFIG_KEY: "5"})
    with pytest.raises(StartupError, match=reconnect.MAX_INTERVAL_CONFIG_KEY):
        check_config({reconnect.MAX_INTERVAL_CONFIG_KEY: "soon"})
