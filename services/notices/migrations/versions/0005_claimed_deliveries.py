"""Deliveries are claimed before they are posted: a new status, ``sending``, whose ``next_attempt_at``
is when the claim's lease ends. The dispatcher's partial index covers queued deliveries and claims
(a claim whose process died is taken up again once its lease has run out).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")
CLAIMABLE = sa.text("status IN ('queued', 'sending')")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_queued_due", postgresql_where=QUEUED, sqlite_where=QUEUED)
        batch_op.create_index(
            "ix_deliveries_claimable_due",
            ["channel", "next_attempt_at", "id"],
            unique=False,
            postgresql_where=CLAIMABLE,
            sqlite_where=CLAIMABLE,
        )


def downgrade() -> None:
    # Claims go back to the queue, due when their lease would have ended: the older dispatcher
    # posts them again (a gateway that had one already sees its delivery id twice).
    op.execute("UPDATE deliveries SET status = 'queued' WHERE status = 'sending'")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_claimable_due", postgresql_where=CLAIMABLE, sqlite_where=CLAIMABLE)
        batch_op.create_index(
            "ix_deliveries_queued_due",
            ["channel", "next_attempt_at", "id"],
            unique=False,
            postgresql_where=QUEUED,
            sqlite_where=QUEUED,
        )
