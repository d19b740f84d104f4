"""Alembic migrations for each service, driven from Python (no alembic.ini).

    python -m shared.migrate [service ...]          # upgrade to head
    python -m shared.migrate --revision -m "msg" grid   # autogenerate a revision

Each service's URL comes from <SERVICE>_DATABASE_URL (default: SQLite under var/).
"""
import argparse
import importlib
import os
import sys

from alembic import command
from alembic.config import Config

from shared.db import database_url, normalise_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES_DIR = os.path.join(ROOT, "services")


def services():
    return sorted(
        name for name in os.listdir(SERVICES_DIR)
        if os.path.isdir(os.path.join(SERVICES_DIR, name, "migrations"))
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
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///"):])), exist_ok=True)
    command.upgrade(alembic_config(service, url), revision)


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
