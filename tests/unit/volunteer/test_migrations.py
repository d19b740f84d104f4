"""Volunteer's migrations run both ways on data the service writes (services/volunteer/migrations)."""

from alembic import command
from sqlalchemy import create_engine, text

from services.registry import BY_NAME
from shared.migrate import alembic_config

VOLUNTEER = BY_NAME["volunteer"]


def test_0005_downgrades_after_an_erasure_left_a_care_plan_without_address(tmp_path):
    url = f"sqlite:///{tmp_path / 'volunteer.db'}"
    VOLUNTEER.migrate(url=url)
    engine = create_engine(url)
    with engine.begin() as conn:  # a plan whose address an erasure dropped (services/volunteer/erasure.py)
        conn.execute(
            text(
                "INSERT INTO care_plans (household_id, unit_id, unit_path, address, kinds, active, started_at)"
                " VALUES (104, 6, '/1/2/3/4/5/6/', NULL, '[]', 0, '2030-01-01 00:00:00')"
            )
        )
    command.downgrade(alembic_config("volunteer", VOLUNTEER.metadata(), VOLUNTEER.migrations, url), "0004")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT household_id, address FROM care_plans")).all() == [(104, "{}")]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    engine.dispose()
