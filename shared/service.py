"""The base every service class extends: the dependencies all of them declare the same way.

A service adds its own ``db = Database(...)``, ``telemetry = Telemetry(gauges=...)`` and any
``ServiceClient``s, then its entrypoints.
"""

from nameko.dependency_providers import Config

from shared.auth import Auth
from shared.outbox import OutboxRelay
from shared.pii import Vault
from shared.web import ObservableMixin


class ServiceBase(ObservableMixin):
    name: str  # each service class sets its own (nameko's service name)

    config = Config()
    relay = OutboxRelay()
    auth = Auth()
    vault = Vault()
