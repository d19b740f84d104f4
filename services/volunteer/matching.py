"""Ranking volunteers for a help request. Pure functions: the caller loads candidates.

Order: grid distance (same small grid first, then medium, large, community, street),
skill fit, availability at the needed time, current load, then fairness (fewest recent tasks).
Never: the requester's own household, a volunteer quarantined in the grid, one at their task
limit, one already offered this request.
"""
import datetime as dt
from dataclasses import dataclass

from services.volunteer.vocabulary import KIND_SKILLS
from shared.paths import path_ids


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


def shared_depth(path_a, path_b):
    """How many units two paths share from the district down (6 = the same small grid)."""
    depth = 0
    for a, b in zip(path_ids(path_a), path_ids(path_b)):
        if a != b:
            break
        depth += 1
    return depth


def available_at(availability, moment, zone):
    local = moment.astimezone(zone)
    clock = local.strftime("%H:%M")
    return any(w["weekday"] == local.weekday() and w["start"] <= clock < w["end"] for w in availability)


def eligible(candidate, request_household_id, already_offered):
    return not (candidate.quarantined
                or candidate.volunteer_id in already_offered
                or candidate.active_tasks >= candidate.max_active_tasks
                or (request_household_id is not None and candidate.household_id == request_household_id))


def rank(candidates, request_path, kind, needed_by, zone, request_household_id=None, already_offered=()):
    wanted = set(KIND_SKILLS.get(kind, ()))
    offered = set(already_offered)

    def key(c):
        fits = bool(wanted & set(c.skills)) if wanted else True
        return (-shared_depth(c.home_path, request_path), not fits, not available_at(c.availability, needed_by, zone),
                c.active_tasks, c.recent_tasks, c.volunteer_id)

    return sorted((c for c in candidates if eligible(c, request_household_id, offered)), key=key)


def search_scopes(request_path, narrowest_depth=3):
    """Subtree paths to search, nearest first: the community, then the street, then the district."""
    ids = path_ids(request_path)
    scopes = []
    for depth in range(min(narrowest_depth, len(ids)), 0, -1):
        scopes.append("/" + "".join(f"{i}/" for i in ids[:depth]))
    return scopes


def recent_window(now, days=30):
    return now - dt.timedelta(days=days)
