"""Legal's and notices' read models of grid facts (shared.grid_facts) with the real grid over RabbitMQ and
PostgreSQL: their lookups fill the model on a miss, the grid's ``household_moved`` moves it, and the next
scope check (a mediation's parties, a resident's preferences) follows what it now says."""

import pytest
from sqlalchemy import create_engine, text

from shared.errors import Forbidden, ValidationError
from tests.support import add_household, add_resident, token, wait_until


def query(url, sql, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def household_path(url, household_id):
    rows = query(url, "SELECT unit_path FROM grid_households WHERE id = :id", id=int(household_id))
    return rows[0][0] if rows else None


@pytest.fixture
def people(legal, notices, admin, district, call_as):
    """Two households in small grid a, and an officer of community a calling legal and notices."""
    home = add_household(admin, district["small_a"], room="1")
    other = add_household(admin, district["small_a"], room="2")
    return {
        **district,
        "officer": call_as(token("officer", sub="officer-a", unit=district["community_a"])),
        "home": home,
        "r1": add_resident(admin, home, 1)["id"],
        "r2": add_resident(admin, other, 2)["id"],
    }


def mediation(people, unit):
    return people["officer"].legal.open_mediation(
        unit_id=unit,
        category="neighbour",
        party_resident_ids=[people["r1"], people["r2"]],
        description="Noise",
        source_incident_id=None,
    )


def test_a_moved_household_moves_legal_and_notices_scope_checks(people, admin, call_as, legal_db, notices_db):
    officer = people["officer"]
    mediation(people, people["small_a"])  # legal reads (and keeps) the unit and both parties
    officer.notices.set_preferences(resident_id=people["r1"], channels=["sms"])  # notices keeps r1's place
    small_a = household_path(legal_db, people["home"])
    assert small_a.endswith(f"/{people['small_a']}/") and household_path(notices_db, people["home"]) == small_a

    admin.move_household(household_id=people["home"], unit_id=people["small_b"])
    for url in (legal_db, notices_db):
        wait_until(
            lambda url=url: household_path(url, people["home"]).endswith(f"/{people['small_b']}/"),
            message="the move did not reach the read model",
        )
    # r1 now lives in community b: out of the officer's scope, as both services now know.
    with pytest.raises(Forbidden, match="party"):
        mediation(people, people["small_a"])
    with pytest.raises(Forbidden):
        officer.notices.set_preferences(resident_id=people["r1"], channels=["sms"])
    # A street officer reaches both: the case is refused for where r1 lives now, not for scope.
    street = call_as(token("officer", sub="officer-s", unit=people["street"])).legal
    with pytest.raises(ValidationError) as refused:
        street.open_mediation(
            unit_id=people["small_a"],
            category="neighbour",
            party_resident_ids=[people["r1"], people["r2"]],
            description="Noise",
            source_incident_id=None,
        )
    assert "party_resident_ids" in refused.value.fields
