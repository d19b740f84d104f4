"""What the notices service needs from the grid about units: paths, for scope and subtrees."""

from shared.errors import NotFound, ValidationError
from shared.paths import as_path


def unit_paths(grid, unit_ids, field="under"):
    """{unit id: path string} from the grid (its own scope rules apply to our service token)."""
    paths = {}
    for unit_id in unit_ids:
        try:
            unit = grid.get_unit(unit_id=str(unit_id))
        except NotFound:
            raise ValidationError({field: [f"Unknown unit {unit_id}."]}) from None
        paths[int(unit["id"])] = as_path(unit["path"])
    return paths


def outermost(paths):
    """Drop units that lie under another listed unit, so the subtrees are disjoint."""
    ordered = sorted(paths.items(), key=lambda item: len(item[1]))
    kept = {}
    for unit_id, path in ordered:
        if not any(path.startswith(other) for other in kept.values()):
            kept[unit_id] = path
    return kept
