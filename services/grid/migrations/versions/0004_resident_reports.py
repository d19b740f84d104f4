"""Residents report problems themselves: a resident's report is an incident with its reporter, Open311
service code, location note, photo reference, whether it is listed publicly, the department's public
notes, merging of duplicates, and the residents following each report.

Written out in full (not shared with the other services' migrations): a migration is a record of
what was done and must not change when shared code does.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=10), nullable=False, server_default="staff"))
        batch_op.add_column(sa.Column("reporter_resident_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("service_code", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("location_note", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("photo_ref", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("status_notes", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("merged_into_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reopened", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_foreign_key("fk_incidents_merged_into_id", "incidents", ["merged_into_id"], ["id"])
        batch_op.create_index("ix_incidents_reporter_resident_id", ["reporter_resident_id", "reported_at"])
        batch_op.create_index("ix_incidents_merged_into_id", ["merged_into_id"])
        batch_op.create_index("ix_incidents_public_path", ["public", "unit_path"])
    op.execute("UPDATE incidents SET source = 'service' WHERE origin IS NOT NULL")
    op.create_table(
        "report_followers",
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("incident_id", "resident_id"),
    )
    with op.batch_alter_table("report_followers", schema=None) as batch_op:
        batch_op.create_index("ix_report_followers_resident_id", ["resident_id", "incident_id"], unique=False)


def downgrade() -> None:
    op.drop_table("report_followers")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_incidents_public_path")
        batch_op.drop_index("ix_incidents_merged_into_id")
        batch_op.drop_index("ix_incidents_reporter_resident_id")
        batch_op.drop_constraint("fk_incidents_merged_into_id", type_="foreignkey")
        for column in (
            "reopened",
            "confirmed_at",
            "updated_at",
            "merged_into_id",
            "status_notes",
            "public",
            "photo_ref",
            "location_note",
            "service_code",
            "reporter_resident_id",
            "source",
        ):
            batch_op.drop_column(column)
