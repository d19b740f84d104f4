"""Erasure (issue 17): the tombstones of residents the grid erased (shared.grid_facts), so that no later
event or read-through stores their data again; a care plan's address may be dropped (an erased
household's, or a plan whose every subject's health tag was purged).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
    with op.batch_alter_table("care_plans", schema=None) as batch_op:
        batch_op.alter_column("address", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    # Plans an erasure or a purge left without an address hold '{}' (no address) before the column is
    # NOT NULL again: the data is not brought back.
    op.execute(sa.text("UPDATE care_plans SET address = '{}' WHERE address IS NULL"))
    with op.batch_alter_table("care_plans", schema=None) as batch_op:
        batch_op.alter_column("address", existing_type=sa.JSON(), nullable=False)
    op.drop_table("erased_residents")
