"""Alembic migrations driven from Python (no alembic.ini): what `services.launch migrate` and
`tools.migrate` run, given a service's metadata and migrations folder (services/registry.py).

Each service's URL comes from <SERVICE>_DATABASE_URL (default: SQLite under var/). On PostgreSQL an
upgrade holds an advisory lock, so replicas that start together (each pod's migration
initContainer) migrate one at a time: the first upgrades, the others then find the database at head.
"""

import hashlib
import os
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text

from shared.db import database_url, normalise_url


def alembic_config(service, metadata, script_location, url=None):
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("sqlalchemy.url", normalise_url(url or database_url({}, service)).replace("%", "%%"))
    config.attributes["metadata"] = metadata
    return config


def upgrade(service, metadata, script_location, url=None, revision="head"):
    url = normalise_url(url or database_url({}, service))
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///") :])), exist_ok=True)
    with migration_lock(service, url):
        command.upgrade(alembic_config(service, metadata, script_location, url), revision)


def revision(service, metadata, script_location, message):
    """Autogenerate a revision from the difference between the models and the database."""
    command.revision(alembic_config(service, metadata, script_location), message=message, autogenerate=True)


def lock_key(service):
    """The advisory lock's key (a signed 64-bit int; advisory locks are per database)."""
    return int.from_bytes(hashlib.sha256(f"grassroots:migrate:{service}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def migration_lock(service, url):
    """A session-level pg_advisory_lock held, on a connection of its own, around the upgrade
    (PostgreSQL only; released on exit, or by the server if the process dies)."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(service)})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(service)})
    finally:
        engine.dispose()
