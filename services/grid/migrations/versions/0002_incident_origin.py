"""Incidents raised by a service remember their origin, one incident per origin.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=120), nullable=True))
        batch_op.create_unique_constraint("uq_incidents_origin", ["origin"])


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_constraint("uq_incidents_origin", type_="unique")
        batch_op.drop_column("origin")
