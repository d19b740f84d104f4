"""Volunteer's copies of grid facts, kept in step when the grid's tree changes (the grid's
``unit_moved``, ``household_moved`` and ``unit_closed``; until these, the copies went stale).

The copies: a volunteer's home (``home_unit_id``, ``home_path``), pledges, duty posts and shifts, help
requests and care plans (``unit_id``, ``unit_path``); and the read model of the grid's units, households and
residents that hot paths read instead of the grid (``models.FACTS``, shared.grid_facts: created and closed
units, moved households and quarantine tags are re-read from the grid into it). How each change is taken
(shared.grid_copies reads where the unit or household is now, so replays and moves handled out of order end
in the grid's present):

- **A unit moved** — the same unit under a new parent. Every copy through it is rebased, history
  included: scope checks and "under a unit" lists read the path, so a completed request left at the old
  path would vanish from its own unit's list and stay visible to staff who no longer have the unit. The
  grid rewrites its own history (incidents) the same way.
- **A household moved** to another small grid. What is still to come for the household follows it: its
  care plan (active or stopped: a plan resumed later opens its requests where the plan says), its
  requests not yet done (open, offered, matched, unmatched), and the home of volunteers living in it.
  A copy whose unit still contains the new small grid stays (a request at the community when the
  household moved within the community). Done and cancelled requests stay where the help was given.
  Pending offers stand — the volunteer may still accept; the next candidates are searched from the new
  place.
- **A unit closed** — it takes no new households or children, but those in it stay until the grid moves
  them. Nothing is cancelled or stopped: pending help goes on where the people are. What is still open
  inside is logged (counts only) for the operators who close the unit.
"""

import logging

from sqlalchemy import func, select

from services.volunteer.models import FACTS, CarePlan, HelpRequest, Pledge, Post, Shift, Volunteer
from services.volunteer.requests import OPEN_STATUSES
from shared import grid_copies, grid_facts
from shared.db import serialize_on, utcnow
from shared.errors import NotFound
from shared.paths import as_path

log = logging.getLogger(__name__)

UNIT_PATHS = (
    Volunteer.home_path,
    Pledge.unit_path,
    Post.unit_path,
    Shift.unit_path,
    HelpRequest.unit_path,
    CarePlan.unit_path,
    *FACTS.path_columns,  # the read model's units and households (shared.grid_facts)
)


def unit_moved(session, grid, unit_id):
    """Rebase every copy through the unit on its current path; {"table.column": rows changed}."""
    return grid_copies.unit_moved(session, grid, UNIT_PATHS, unit_id)


def household_moved(session, grid, household_id):
    """The household's plan, pending requests and volunteers' homes follow it; {table: rows changed}."""
    grid_copies.hold(session)
    # As care.start and care.stop: a plan being opened for the household waits, or is seen.
    serialize_on(session, "care", household_id)
    try:
        household = grid.get_household(household_id=str(household_id))
    except NotFound:
        return {}
    grid_facts.store_household(session, FACTS, household)
    unit_id, path = int(household["unit_id"]), as_path(household["unit_path"])
    # The plan first: the daily timer holds it while opening the day's requests, so once this UPDATE
    # has it, the requests below include any the timer just opened.
    return {
        "care_plans": grid_copies.follow(
            session, CarePlan.unit_path, CarePlan.household_id == household_id, path, CarePlan.unit_id, unit_id
        ),
        "help_requests": grid_copies.follow(
            session,
            HelpRequest.unit_path,
            (HelpRequest.household_id == household_id) & HelpRequest.status.in_(OPEN_STATUSES),
            path,
            HelpRequest.unit_id,
            unit_id,
        ),
        "volunteers": grid_copies.follow(
            session, Volunteer.home_path, Volunteer.household_id == household_id, path, Volunteer.home_unit_id, unit_id
        ),
    }


def unit_changed(session, grid, unit_id):
    """A unit created or closed: the read model's row as the grid has it now."""
    return grid_facts.unit_changed(session, grid, FACTS, unit_id)


def resident_changed(session, grid, resident_id):
    """A resident tagged or untagged: the read model's row (household, kept tags) as the grid has it now."""
    return grid_facts.resident_changed(session, grid, FACTS, resident_id)


def unit_closed(session, unit_id):
    """Count (and log) what is still open in the closed unit's subtree; nothing is changed."""
    segment = f"/{unit_id}/"  # wherever the unit is now: its subtree is every path through it
    inside = {
        "open_requests": session.scalar(
            select(func.count())
            .select_from(HelpRequest)
            .where(HelpRequest.unit_path.contains(segment), HelpRequest.status.in_(OPEN_STATUSES))
        ),
        "active_care_plans": session.scalar(
            select(func.count())
            .select_from(CarePlan)
            .where(CarePlan.unit_path.contains(segment), CarePlan.active.is_(True))
        ),
        "active_volunteers": session.scalar(
            select(func.count())
            .select_from(Volunteer)
            .where(Volunteer.home_path.contains(segment), Volunteer.active.is_(True))
        ),
        "upcoming_shifts": session.scalar(
            select(func.count()).select_from(Shift).where(Shift.unit_path.contains(segment), Shift.starts_at > utcnow())
        ),
    }
    if any(inside.values()):
        log.warning(
            "unit closed with volunteer work still inside; it carries on until the grid moves the households",
            extra={"unit_id": str(unit_id), **inside},
        )
    return inside
