"""Materialised unit paths: ``/1/5/23/`` lists the ids from the district down to a unit.

Every service that keeps a copy of a grid path (for subtree queries and scope checks) uses these.
"""

from sqlalchemy import Text, func, literal

# Byte-wise ordering makes "every path starting with /1/5/" one contiguous index range.
PathText = Text().with_variant(Text(collation="C"), "postgresql")


def child_path(parent_path, unit_id):
    return f"{parent_path or '/'}{unit_id}/"


def path_ids(path):
    return [int(part) for part in path.strip("/").split("/") if part]


def as_path(ids):
    """The path string for a list of ids (as the grid returns them)."""
    return "/" + "".join(f"{i}/" for i in ids)


def in_subtree(column, path):
    """SQL condition: ``column`` is ``path`` or any path below it.

    A half-open range instead of LIKE, so an index serves it with bound
    parameters too: '0' is the byte after '/'.
    """
    return (column >= path) & (column < path[:-1] + "0")


def replace_prefix(column, old_path, new_path):
    """SQL expression moving every path under ``old_path`` to ``new_path``."""
    return literal(new_path) + func.substr(column, len(old_path) + 1)
