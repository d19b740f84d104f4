"""Commands to other services go through the outbox (a destination and a retry time per row), and
write requests remember their reply under an idempotency key.

Written out in full (not shared with the other services' migrations): a migration is a record of
what was done and must not change when shared code does.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("destination", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "idempotent_requests",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("idempotent_requests", schema=None) as batch_op:
        batch_op.create_index("ix_idempotent_requests_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("idempotent_requests")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("destination")
