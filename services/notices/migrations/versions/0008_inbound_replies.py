"""Two-way acknowledgement without a smartphone: gateways report SMS replies and keypresses.

- ``deliveries.gateway_message_id``: the id the gateway gave our post (its answer's ``message_id``),
  so that a reply naming it finds its delivery.
- ``recipients.address_hash``: a keyed blind index of the recipient's phone (shared.pii, kind
  ``phone``), so that a reply naming only its sender's phone finds the recipient without any phone in
  plaintext. Rows written before this revision keep NULL (not backfilled: their notices are answered
  by message id, or not at all).
- ``inbound_messages``: each recorded reply or keypress, once per gateway event id; ids and an
  outcome only (no phone, no message text).

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


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gateway_message_id", sa.String(length=100), nullable=True))
        batch_op.create_index("ix_deliveries_gateway_message_id", ["gateway_message_id"], unique=False)
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_recipients_address_hash", ["address_hash"], unique=False)
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
    )
    op.create_index("ix_inbound_messages_notice_id", "inbound_messages", ["notice_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_notice_id", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_address_hash")
        batch_op.drop_column("address_hash")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_gateway_message_id")
        batch_op.drop_column("gateway_message_id")
