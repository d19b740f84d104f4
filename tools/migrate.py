"""Migrate every service's database, or autogenerate a revision (what `make migrate` runs).

python -m tools.migrate [service ...]              # upgrade to head
python -m tools.migrate --revision -m "msg" grid   # autogenerate a revision
"""

import argparse
import sys

from services import registry
from shared import migrate


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.migrate")
    parser.add_argument("services", nargs="*", help="default: every service (" + ", ".join(registry.NAMES) + ")")
    parser.add_argument("--revision", action="store_true", help="autogenerate a new revision")
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args(argv)
    try:
        chosen = [registry.get(name) for name in args.services] or registry.SERVICES
    except registry.UnknownService as unknown:
        parser.error(str(unknown))
    for service in chosen:
        if args.revision:
            migrate.revision(service.name, service.metadata(), service.migrations, args.message)
        else:
            service.migrate()
            print(f"{service.name}: migrated to head")


if __name__ == "__main__":
    sys.exit(main())
