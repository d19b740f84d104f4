"""What the notices service needs from the grid about units: paths, for scope and subtrees."""

from shared.grid_copies import contains


def unit_paths(grid, unit_ids, field="under"):
    """{unit id: path string} from the grid (its own scope rules apply to our service token)."""
    return {int(unit_id): grid.unit_path(unit_id, field) for unit_id in unit_ids}


def outermost(paths):
    """Drop units that lie under another listed unit, so the subtrees are disjoint."""
    ordered = sorted(paths.items(), key=lambda item: len(item[1]))
    kept: dict[int, str] = {}
    for unit_id, path in ordered:
        if not any(contains(other, path) for other in kept.values()):
            kept[unit_id] = path
    return kept
