"""Erasure and legal holds (issue 17).

- ``erased_residents``: the tombstones of residents the grid erased (shared.grid_facts), so that no later
  event or read-through stores their data again.
- ``consultations`` / ``mediation_cases``: a legal hold (its reason, who set it, when) and
  ``erasure_deferred``: an erasure reached the record while it was held (the erasures waiting are in
  ``deferred_erasures``); releasing the hold applies them.
- ``legal_hold_log``: the audit trail of holds set and released (ids and the reason only).

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
HELD = ("consultations", "mediation_cases")


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
    for table in HELD:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("legal_hold_reason", sa.String(length=500), nullable=True))
            batch_op.add_column(sa.Column("legal_hold_by", sa.String(length=100), nullable=True))
            batch_op.add_column(sa.Column("legal_hold_at", sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column("erasure_deferred", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "deferred_erasures",
        sa.Column("record", sa.String(length=40), nullable=False),
        sa.Column("resident_id", ID, nullable=False),
        sa.Column("erasure_id", ID, nullable=True),
        sa.Column("deferred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("record", "resident_id"),
    )
    op.create_table(
        "legal_hold_log",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("record", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("actor_roles", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_legal_hold_log_record", "legal_hold_log", ["record"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_legal_hold_log_record", table_name="legal_hold_log")
    op.drop_table("legal_hold_log")
    op.drop_table("deferred_erasures")
    for table in HELD:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("erasure_deferred")
            batch_op.drop_column("legal_hold_at")
            batch_op.drop_column("legal_hold_by")
            batch_op.drop_column("legal_hold_reason")
    op.drop_table("erased_residents")
