"""Materialised paths: ``/1/5/23/`` lists the ids from the district down to a unit."""


def child_path(parent_path, unit_id):
    return f"{parent_path or '/'}{unit_id}/"


def path_ids(path):
    return [int(part) for part in path.strip("/").split("/") if part]


def in_subtree(column, path):
    """SQL condition: ``column`` is ``path`` or any path below it.

    A half-open range instead of LIKE, so an index serves it with bound
    parameters too: '0' is the byte after '/'.
    """
    return (column >= path) & (column < path[:-1] + "0")


def replace_prefix(column, old_path, new_path):
    """SQL expression moving every path under ``old_path`` to ``new_path``."""
    from sqlalchemy import func, literal

    return literal(new_path) + func.substr(column, len(old_path) + 1)
