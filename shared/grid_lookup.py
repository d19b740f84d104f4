"""What the other services ask the grid most: a unit (with its path), residents by id.

An unknown id is the caller's mistake, so it becomes a ValidationError naming the field.
``grid`` is a ``shared.clients.ServiceClient("grid")`` dependency.
"""

from shared.errors import NotFound, ValidationError
from shared.paths import as_path


def unit(grid, unit_id, field):
    """The grid's unit, with ``path`` also as a path string under ``path_string``."""
    try:
        found = grid.get_unit(unit_id=str(unit_id))
    except NotFound:
        raise ValidationError({field: [f"Unknown unit {unit_id}."]}) from None
    return {**found, "path_string": as_path(found["path"])}


def unit_path(grid, unit_id, field):
    return unit(grid, unit_id, field)["path_string"]


def residents(grid, resident_ids, field):
    """Residents as the grid's find rows (id, household_id, unit_id, unit_path, tags, ...)."""
    found = grid.get_residents(resident_ids=[str(i) for i in resident_ids])
    if found["missing"]:
        raise ValidationError({field: [f"Unknown residents: {', '.join(found['missing'])}."]})
    return found["items"]


def resident(grid, resident_id, field="resident_id"):
    return residents(grid, [resident_id], field)[0]
