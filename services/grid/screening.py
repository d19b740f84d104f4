"""Door-to-door screening campaigns (摸排) and their progress per unit."""

from collections import defaultdict

from sqlalchemy import func, select

from services.grid import incidents
from services.grid.events import path_out
from services.grid.models import Household, ScreeningCampaign, ScreeningVisit, Unit
from services.grid.residents import load_household
from services.grid.units import reachable_unit
from services.grid.vocabulary import DEPTH, LEVELS, VISIT_OUTCOMES
from shared import paths as tree
from shared.db import fetch, utcnow
from shared.errors import Conflict, ValidationError


def start_screening(uow, caller, under, title, starts_on, ends_on):
    unit = reachable_unit(uow.session, caller, under)
    campaign = ScreeningCampaign(
        unit_id=unit.id,
        unit_path=unit.path,
        title=title,
        starts_on=starts_on,
        ends_on=ends_on,
        created_by=caller.sub,
        created_at=utcnow(),
    )
    uow.session.add(campaign)
    uow.session.flush()
    return campaign


def load_campaign(session, caller, campaign_id, *, require_reach=True):
    campaign = fetch(session, ScreeningCampaign, campaign_id, "screening campaign")
    if require_reach:
        caller.require_reach(tree.path_ids(campaign.unit_path), "campaign")
    return campaign


# A visit that found a concern becomes an incident at the household's grid, for whoever can act on it.
CONCERN_OUTCOME = "seen_concern"
CONCERN_CATEGORY = "public_health"


def record_visit(uow, caller, policy, campaign_id, household_id, outcome, note):
    session = uow.session
    # A grid worker records visits in a street-wide campaign: the household is what must be in scope,
    # and the campaign must cover it or be in scope itself (else nothing about it is told).
    campaign = load_campaign(session, caller, campaign_id, require_reach=False)
    household = load_household(session, caller, household_id)
    if not household.unit_path.startswith(campaign.unit_path):
        caller.require_reach(tree.path_ids(campaign.unit_path), "campaign")
        raise ValidationError({"household_id": ["Household is outside the campaign's area."]})
    now = utcnow()
    if not campaign.starts_on <= now.date() <= campaign.ends_on:
        raise Conflict(f"campaign runs {campaign.starts_on} to {campaign.ends_on}")
    visit = ScreeningVisit(
        campaign_id=campaign.id,
        household_id=household.id,
        outcome=outcome,
        note=note,
        visited_by=caller.sub,
        visited_at=now,
    )
    session.add(visit)
    session.flush()
    uow.emit(
        "screening_visit_recorded",
        f"household/{household.id}",
        {
            "campaign_id": str(campaign.id),
            "visit_id": str(visit.id),
            "household_id": str(household.id),
            "unit_id": str(household.unit_id),
            "unit_path": path_out(household.unit_path),
            "outcome": outcome,
        },
    )
    if outcome == CONCERN_OUTCOME:
        # Ids only in the description: the visit's note stays with the visit.
        incidents.raise_incident(
            uow,
            policy,
            f"grid:visit/{visit.id}",
            household.unit_id,
            CONCERN_CATEGORY,
            f"Screening visit {visit.id} (campaign {campaign.id}) found a concern at household {household.id}.",
            caller.sub,
        )
    return visit


def screening_progress(session, caller, campaign_id, level):
    """Per unit at ``level`` (default: the campaign unit's children): households, visited,
    latest outcome counts, coverage percent.

    Two aggregate queries grouped by small grid, rolled up here: no query per unit.
    """
    campaign = load_campaign(session, caller, campaign_id)
    root = session.get(Unit, campaign.unit_id)
    if level is None:
        level = LEVELS[min(DEPTH[root.level] + 1, len(LEVELS) - 1)]
    if DEPTH[level] < DEPTH[root.level]:
        raise ValidationError({"level": [f"Must not be above the campaign's level ({root.level})."]})
    units = session.scalars(
        select(Unit).where(tree.in_subtree(Unit.path, root.path), Unit.level == level).order_by(Unit.id)
    ).all()
    group_ids = {unit.id for unit in units}

    def group_of(path):
        # Levels may be skipped (a community straight under a district): match by id, not position.
        return next((unit_id for unit_id in tree.path_ids(path) if unit_id in group_ids), None)

    households: defaultdict[int | None, int] = defaultdict(int)
    for path, count in session.execute(
        select(Household.unit_path, func.count())
        .where(tree.in_subtree(Household.unit_path, root.path))
        .group_by(Household.unit_path)
    ):
        households[group_of(path)] += count

    latest = (
        select(func.max(ScreeningVisit.id).label("visit_id"))
        .where(ScreeningVisit.campaign_id == campaign.id)
        .group_by(ScreeningVisit.household_id)
        .subquery()
    )
    outcomes: defaultdict[int | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(VISIT_OUTCOMES, 0))
    for path, outcome, count in session.execute(
        select(Household.unit_path, ScreeningVisit.outcome, func.count())
        .join(latest, latest.c.visit_id == ScreeningVisit.id)
        .join(Household, Household.id == ScreeningVisit.household_id)
        .group_by(Household.unit_path, ScreeningVisit.outcome)
    ):
        outcomes[group_of(path)][outcome] += count

    rows = [
        {
            "unit_id": unit.id,
            "name": unit.name,
            "level": unit.level,
            **_coverage(households.get(unit.id, 0), outcomes.get(unit.id, dict.fromkeys(VISIT_OUTCOMES, 0))),
        }
        for unit in units
    ]
    totals = dict.fromkeys(VISIT_OUTCOMES, 0)
    for counts in outcomes.values():
        for key, value in counts.items():
            totals[key] += value
    return {
        "campaign_id": campaign.id,
        "title": campaign.title,
        "level": level,
        **_coverage(sum(households.values()), totals),
        "units": rows,
    }


def _coverage(households, outcomes):
    """Households, how many of them were visited, their latest outcomes, and the percent visited."""
    visited = sum(outcomes.values())
    return {
        "households": households,
        "visited": visited,
        "outcomes": outcomes,
        "coverage_percent": round(100.0 * visited / households, 1) if households else 0.0,
    }
