"""At most one mediation case per source incident (an incident event delivered twice opens one case).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mediation_cases", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_mediation_cases_source_incident_id", ["source_incident_id"])


def downgrade() -> None:
    with op.batch_alter_table("mediation_cases", schema=None) as batch_op:
        batch_op.drop_constraint("uq_mediation_cases_source_incident_id", type_="unique")
