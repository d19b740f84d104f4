"""The local read model of grid facts (shared.grid_facts): units, households, residents, resync state.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "grid_units",
        sa.Column("id", ID, autoincrement=False, nullable=False),
        sa.Column("path", PATH, nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_grid_units_path", "grid_units", ["path"], unique=False)
    op.create_table(
        "grid_households",
        sa.Column("id", ID, autoincrement=False, nullable=False),
        sa.Column("unit_id", ID, nullable=False),
        sa.Column("unit_path", PATH, nullable=False),
        sa.Column("address", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_grid_households_unit_path", "grid_households", ["unit_path"], unique=False)
    op.create_table(
        "grid_residents",
        sa.Column("id", ID, autoincrement=False, nullable=False),
        sa.Column("household_id", ID, nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_grid_residents_household_id", "grid_residents", ["household_id"], unique=False)
    op.create_table(
        "grid_facts_sync",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("next_id", ID, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("passed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed", ID, nullable=False),
        sa.Column("changed", ID, nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )


def downgrade() -> None:
    op.drop_table("grid_facts_sync")
    op.drop_index("ix_grid_residents_household_id", table_name="grid_residents")
    op.drop_table("grid_residents")
    op.drop_index("ix_grid_households_unit_path", table_name="grid_households")
    op.drop_table("grid_households")
    op.drop_index("ix_grid_units_path", table_name="grid_units")
    op.drop_table("grid_units")
