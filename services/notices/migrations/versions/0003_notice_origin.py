"""Messages sent because of another service's event remember their origin, one message per origin.

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
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=120), nullable=True))
        batch_op.create_unique_constraint("uq_notices_origin", ["origin"])


def downgrade() -> None:
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_constraint("uq_notices_origin", type_="unique")
        batch_op.drop_column("origin")
