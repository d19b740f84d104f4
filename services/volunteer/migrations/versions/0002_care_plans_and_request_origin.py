"""Care plans for quarantined households; requests remember their origin, address and search floor.

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
    with op.batch_alter_table("help_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("origin", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("search_floor", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint("uq_help_requests_origin", ["origin"])
    op.create_table(
        "care_subjects",
        sa.Column("resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("household_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resident_id"),
    )
    op.create_index("ix_care_subjects_household_id", "care_subjects", ["household_id"], unique=False)
    op.create_table(
        "care_plans",
        sa.Column("household_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("unit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("unit_path", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False),
        sa.Column("address", sa.JSON(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("household_id"),
    )
    op.create_index("ix_care_plans_active", "care_plans", ["active"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_care_plans_active", table_name="care_plans")
    op.drop_table("care_plans")
    op.drop_index("ix_care_subjects_household_id", table_name="care_subjects")
    op.drop_table("care_subjects")
    with op.batch_alter_table("help_requests", schema=None) as batch_op:
        batch_op.drop_constraint("uq_help_requests_origin", type_="unique")
        batch_op.drop_column("search_floor")
        batch_op.drop_column("origin")
        batch_op.drop_column("address")
