"""Ranking volunteers for a help request. Pure functions: the caller loads candidates.

Order: grid distance (same small grid first, then medium, large, community, street),
skill fit, availability at the needed time, current load, then fairness (fewest recent tasks).
Never: the requester's own household, a volunteer quarantined in the grid, one at their task
limit, one already offered this request.
"""

from dataclasses import dataclass

from services.volunteer.vocabulary import KIND_SKILLS
from shared.paths import as_path, path_ids


@dataclass
class Candidate:
    volunteer_id: int
    home_path: str
    skills: list
    availability: list
    max_active_tasks: int
    household_id: int | None
    active_tasks: int = 0
    recent_tasks: int = 0
    quarantined: bool = False


def common_prefix(ids_a, ids_b):
    depth = 0
    for a, b in zip(ids_a, ids_b, strict=False):  # paths of any depths: the shorter one ends the prefix
        if a != b:
            break
        depth += 1
    return depth


def shared_depth(path_a, path_b):
    """How many units two paths share from the district down (6 = the same small grid)."""
    return common_prefix(path_ids(path_a), path_ids(path_b))


def eligible(candidate, request_household_id, already_offered):
    return not (
        candidate.quarantined
        or candidate.volunteer_id in already_offered
        or candidate.active_tasks >= candidate.max_active_tasks
        or (request_household_id is not None and candidate.household_id == request_household_id)
    )


def rank(candidates, request_path, kind, needed_by, zone, request_household_id=None, already_offered=()):
    wanted = set(KIND_SKILLS.get(kind, ()))
    offered = set(already_offered)
    # worked out once per call, not once per candidate
    request_ids = path_ids(request_path)
    local = needed_by.astimezone(zone)
    weekday, clock = local.weekday(), local.strftime("%H:%M")

    def key(c):
        fits = bool(wanted & set(c.skills)) if wanted else True
        free = any(w["weekday"] == weekday and w["start"] <= clock < w["end"] for w in c.availability)
        return (
            -common_prefix(path_ids(c.home_path), request_ids),
            not fits,
            not free,
            c.active_tasks,
            c.recent_tasks,
            c.volunteer_id,
        )

    return sorted((c for c in candidates if eligible(c, request_household_id, offered)), key=key)


def search_scopes(request_path, floor=None):
    """Subtree paths to search, nearest first: the request's own unit, then each ancestor up to
    the district (or up to the ancestor at depth ``floor``). Distance is the first ranking key, so
    the first scope that yields enough eligible volunteers holds the best ones — and is usually a
    handful, not a community."""
    ids = path_ids(request_path)
    shallowest = max(1, min(floor or 1, len(ids)))
    return [as_path(ids[:depth]) for depth in range(len(ids), shallowest - 1, -1)]
