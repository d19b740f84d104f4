"""The one list of the suite's services: every tool, test and launcher reads it from here.

Each entry names the service, its nameko class, the HTTP port `make run` gives it, and where its
configuration, models and migrations live. Adding a service means one line here (and its folder).
"""

import importlib
import os
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Service:
    name: str
    class_name: str
    dev_port: int  # `make run` serves /healthz, /readyz and /metrics here

    @property
    def spec(self):
        """What the runner imports: ``module:Class``."""
        return f"services.{self.name}.service:{self.class_name}"

    @property
    def directory(self):
        return os.path.join(HERE, self.name)

    @property
    def config_path(self):
        return os.path.join(self.directory, "config.yml")

    @property
    def migrations(self):
        return os.path.join(self.directory, "migrations")

    def service_class(self):
        return getattr(importlib.import_module(f"services.{self.name}.service"), self.class_name)

    def metadata(self):
        """The SQLAlchemy metadata its migrations are generated against."""
        return importlib.import_module(f"services.{self.name}.models").Base.metadata

    def events(self):
        """``{event type: data schema}`` it publishes (``services/<name>/events.py``)."""
        return dict(importlib.import_module(f"services.{self.name}.events").EVENTS)

    def migrate(self, url=None, revision="head"):
        """Upgrade its database (``<NAME>_DATABASE_URL`` unless ``url``) under the migration lock."""
        from shared import migrate

        migrate.upgrade(self.name, self.metadata(), self.migrations, url=url, revision=revision)


# In start order: the grid first, the others read it.
SERVICES = (
    Service("grid", "GridService", 8001),
    Service("notices", "NoticesService", 8002),
    Service("legal", "LegalService", 8003),
    Service("volunteer", "VolunteerService", 8004),
)
BY_NAME = {service.name: service for service in SERVICES}
NAMES = tuple(BY_NAME)


class UnknownService(LookupError):
    def __init__(self, name):
        super().__init__(f"unknown service {name!r}: choose one of {', '.join(NAMES)}")


def get(name):
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownService(name) from None
