"""A service whose calls take as long as its caller asks, for the runner's stop tests.

``work(seconds)`` sleeps ``seconds × SLEEP_SCALE`` (config): one instance can be made to hang
on a call that another instance, started with a scale of 0, answers at once.
"""

import eventlet
from eventlet.event import Event
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc


class StartGate(DependencyProvider):
    """Holds the container's start until ``opened`` is sent (the test plays a slow start-up)."""

    reached: Event | None = None
    opened: Event | None = None

    def start(self):
        if StartGate.opened is not None and StartGate.reached is not None:
            StartGate.reached.send(True)
            StartGate.opened.wait()


class Sleeper:
    name = "sleeper"
    config = Config()
    gate = StartGate()

    @rpc
    def work(self, seconds):
        eventlet.sleep(seconds * float(self.config.get("SLEEP_SCALE", 1)))
        return seconds
