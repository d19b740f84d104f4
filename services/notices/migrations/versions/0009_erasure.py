"""Erasure (issue 17): the tombstones of residents the grid erased (shared.grid_facts), so that no later
event or read-through stores their data again; recipients found by resident (an erasure or a purged tag
rewrites that resident's rows in every notice).

``ix_recipients_resident_id`` is built CONCURRENTLY on PostgreSQL, outside the migration's transaction
(``autocommit_block``): a plain CREATE INDEX would lock recipients against the fan-out's writes for the
whole build. Each step may be run again (a run that died mid-way is finished by the next: IF NOT
EXISTS on the table; an index left INVALID by the dead build is dropped and built again). SQLite:
plain statements.

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
        if_not_exists=True,
    )
    create_index_concurrently("ix_recipients_resident_id", "recipients", "resident_id")


def downgrade() -> None:
    op.drop_index("ix_recipients_resident_id", table_name="recipients")
    op.drop_table("erased_residents")


def create_index_concurrently(name, table, column, where=None):
    """An index on a busy table: on PostgreSQL built CONCURRENTLY (writes go on meanwhile), outside the
    transaction, after dropping one a dead earlier run left INVALID; elsewhere a plain CREATE INDEX."""
    if op.get_context().dialect.name != "postgresql":
        op.create_index(name, table, [column], unique=False, sqlite_where=where)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(name, table, [column], unique=False, postgresql_where=where, postgresql_concurrently=True)
