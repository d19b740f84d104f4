"""Two-way acknowledgement without a smartphone: gateways report SMS replies and keypresses.

- ``deliveries.gateway_message_id``: the id the gateway gave our post (its answer's ``message_id``),
  so that a reply naming it finds its delivery.
- ``recipients.address_hash``: a keyed blind index of the recipient's phone (shared.pii, kind
  ``phone``), so that a reply naming only its sender's phone finds the recipient without any phone in
  plaintext. Rows written before this revision keep NULL (not backfilled: their notices are answered
  by message id, or not at all).
- ``inbound_messages``: each recorded reply or keypress, once per gateway event id; ids and an
  outcome only (no phone, no message text).

The two new columns are mostly NULL (no message id given; notices asking for no acknowledgement), and
every lookup names a value: their indexes are partial (``WHERE ... IS NOT NULL``). On PostgreSQL they
are built CONCURRENTLY, outside the migration's transaction (``autocommit_block``): a plain CREATE
INDEX would lock deliveries and recipients against writes — the fan-out and the dispatcher — for the
whole build over millions of rows. So this revision is not atomic there; each step may be run again:
a run that died mid-way (its pod killed during a build) is finished by the next one (IF NOT EXISTS on
the columns and the table; an index left INVALID by the dead build is dropped and built again).
SQLite (development, tests): plain statements.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


HAS_MESSAGE_ID = sa.text("gateway_message_id IS NOT NULL")
HAS_ADDRESS_HASH = sa.text("address_hash IS NOT NULL")


def upgrade() -> None:
    again = True if _postgres() else None  # SQLite has no ADD COLUMN IF NOT EXISTS
    op.add_column(
        "deliveries", sa.Column("gateway_message_id", sa.String(length=100), nullable=True), if_not_exists=again
    )
    op.add_column("recipients", sa.Column("address_hash", sa.String(length=64), nullable=True), if_not_exists=again)
    op.create_table(
        "inbound_messages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("gateway", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("gateway_event_id", sa.String(length=100), nullable=False),
        sa.Column("matched_by", sa.String(length=20), nullable=False),
        sa.Column("delivery_id", ID, nullable=True),
        sa.Column("notice_id", ID, nullable=False),
        sa.Column("resident_id", ID, nullable=False),
        sa.Column("outcome", sa.String(length=14), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway", "gateway_event_id", name="uq_inbound_gateway_event"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_inbound_messages_notice_id", "inbound_messages", ["notice_id"], unique=False, if_not_exists=True
    )
    create_index_concurrently("ix_deliveries_gateway_message_id", "deliveries", "gateway_message_id", HAS_MESSAGE_ID)
    create_index_concurrently("ix_recipients_address_hash", "recipients", "address_hash", HAS_ADDRESS_HASH)


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_notice_id", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_recipients_address_hash", table_name="recipients")
    op.drop_index("ix_deliveries_gateway_message_id", table_name="deliveries")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("address_hash")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("gateway_message_id")


def _postgres():
    return op.get_context().dialect.name == "postgresql"


def create_index_concurrently(name, table, column, where=None):
    """An index on a busy table: on PostgreSQL built CONCURRENTLY (writes go on meanwhile), outside the
    transaction, after dropping one a dead earlier run left INVALID; elsewhere a plain CREATE INDEX."""
    if not _postgres():
        op.create_index(name, table, [column], unique=False, sqlite_where=where)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(name, table, [column], unique=False, postgresql_where=where, postgresql_concurrently=True)
