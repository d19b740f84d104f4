"""Alembic migrations for each service, driven from Python (no alembic.ini).

    python -m shared.migrate [service ...]          # upgrade to head
    python -m shared.migrate --revision -m "msg" grid   # autogenerate a revision

Each service's URL comes from <SERVICE>_DATABASE_URL (default: SQLite under var/). On PostgreSQL an
upgrade holds an advisory lock, so replicas that start together (each pod's migration
initContainer) migrate one at a time: the first upgrades, the others then find the database at head.
"""

import argparse
import hashlib
import importlib
import os
import sys
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text

from shared.db import database_url, normalise_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES_DIR = os.path.join(ROOT, "services")


def services():
    return sorted(
        name for name in os.listdir(SERVICES_DIR) if os.path.isdir(os.path.join(SERVICES_DIR, name, "migrations"))
    )


def alembic_config(service, url=None):
    config = Config()
    config.set_main_option("script_location", os.path.join(SERVICES_DIR, service, "migrations"))
    config.set_main_option("sqlalchemy.url", normalise_url(url or database_url({}, service)).replace("%", "%%"))
    config.attributes["metadata"] = importlib.import_module(f"services.{service}.models").Base.metadata
    return config


def upgrade(service, url=None, revision="head"):
    url = normalise_url(url or database_url({}, service))
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///") :])), exist_ok=True)
    with migration_lock(service, url):
        command.upgrade(alembic_config(service, url), revision)


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m shared.migrate")
    parser.add_argument("services", nargs="*", help="default: every service with migrations")
    parser.add_argument("--revision", action="store_true", help="autogenerate a new revision")
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args(argv)
    for service in args.services or services():
        if args.revision:
            command.revision(alembic_config(service), message=args.message, autogenerate=True)
        else:
            upgrade(service)
            print(f"{service}: migrated to head")


if __name__ == "__main__":
    sys.exit(main())
