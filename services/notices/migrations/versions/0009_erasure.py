"""Erasure (issue 17): the tombstones of residents the grid erased (shared.grid_facts), so that no later
event or read-through stores their data again; recipients found by resident (an erasure or a purged tag
rewrites that resident's rows in every notice).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "erased_residents",
        sa.Column("id", ID, autoincrement=False, nullable=False),
        sa.Column("household_id", ID, nullable=True),
        sa.Column("household_emptied", sa.Boolean(), nullable=False),
        sa.Column("erasure_id", ID, nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_recipients_resident_id", "recipients", ["resident_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_recipients_resident_id", table_name="recipients")
    op.drop_table("erased_residents")
