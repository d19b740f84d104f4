"""Legal's copies of grid facts, kept in step when the grid's tree changes (the grid's ``unit_moved``
and ``unit_closed``; until these, the copies went stale).

The copies: each station's unit (``stations.unit_path``), each consultation's station
(``consultations.station_path``) and each mediation case's unit (``mediation_cases.unit_path``). Legal
keeps no household's place for its own records (a case lists its parties' households by id only, and
stays at the unit where the dispute was reported).

Its read model of grid facts (``models.FACTS``, shared.grid_facts: units, households' places, residents'
households), which its lookups read instead of the grid, follows every change: a moved unit rebases its
paths with the copies above, a created or closed unit and a moved household are re-read from the grid.

- **A unit moved** — the same unit under a new parent. Every copy through it is rebased on the unit's
  current path (shared.grid_copies: replays and moves handled out of order end in the grid's present),
  history included: lists by subtree and scope checks read these paths, so a closed case or a past
  consultation left at the old path would drop out of its own unit's list and stay visible to staff
  who no longer have the unit.
- **A unit closed** — it takes no new households; the people in it stay until the grid moves them, and
  a station keeps serving them: nothing is cancelled. Booked consultations and open cases still inside
  are logged (counts only) for the operators who close the unit.
"""

import logging

from sqlalchemy import func, select

from services.legal.models import FACTS, Consultation, MediationCase, Station
from shared import grid_copies, grid_facts
from shared.db import utcnow

log = logging.getLogger(__name__)

UNIT_PATHS = (Station.unit_path, Consultation.station_path, MediationCase.unit_path, *FACTS.path_columns)


def unit_moved(session, grid, unit_id):
    """Rebase every copy through the unit on its current path; {"table.column": rows changed}."""
    return grid_copies.unit_moved(session, grid, UNIT_PATHS, unit_id)


def unit_changed(session, grid, unit_id):
    """A unit created or closed: the read model's row as the grid has it now."""
    return grid_facts.unit_changed(session, grid, FACTS, unit_id)


def household_moved(session, grid, household_id):
    """A household moved: the read model's row (its residents' place) as the grid has it now."""
    return grid_facts.household_changed(session, grid, FACTS, household_id)


def unit_closed(session, unit_id):
    """Count (and log) the bookings and cases still open in the closed unit's subtree; nothing is changed."""
    segment = f"/{unit_id}/"  # wherever the unit is now: its subtree is every path through it
    inside = {
        "upcoming_consultations": session.scalar(
            select(func.count())
            .select_from(Consultation)
            .where(
                Consultation.station_path.contains(segment),
                Consultation.status == "booked",
                Consultation.starts_at > utcnow(),
            )
        ),
        "open_cases": session.scalar(
            select(func.count())
            .select_from(MediationCase)
            .where(MediationCase.unit_path.contains(segment), MediationCase.status != "closed")
        ),
    }
    if any(inside.values()):
        log.warning(
            "unit closed with legal work still inside; it carries on until the grid moves the households",
            extra={"unit_id": str(unit_id), **inside},
        )
    return inside
