"""A partial index for the dispatcher: queued deliveries by channel and due time.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.create_index(
            "ix_deliveries_queued_due",
            ["channel", "next_attempt_at", "id"],
            unique=False,
            postgresql_where=QUEUED,
            sqlite_where=QUEUED,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_queued_due", postgresql_where=QUEUED, sqlite_where=QUEUED)
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at"], unique=False)
