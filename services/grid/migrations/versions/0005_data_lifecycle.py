"""The data lifecycle under PIPL: released tags kept until their retention ends, erasure requests (two
managers), the access log of reads of residents' personal data, and residents' erased mark.

Written out in full (not shared with the other services' migrations): a migration is a record of
what was done and must not change when shared code does.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "released_tags",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("resident_id", BIG_ID, nullable=False),
        sa.Column("tag", sa.String(length=30), nullable=False),
        sa.Column("unit_path", PATH, nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_after", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("released_tags", schema=None) as batch_op:
        batch_op.create_index("ix_released_tags_resident_id", ["resident_id"], unique=False)
        batch_op.create_index("ix_released_tags_purge_after", ["purge_after"], unique=False)

    op.create_table(
        "erasure_requests",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("resident_id", BIG_ID, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=100), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval_reason", sa.String(length=500), nullable=True),
        sa.Column("cancelled_by", sa.String(length=100), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("household_emptied", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["resident_id"], ["residents.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("erasure_requests", schema=None) as batch_op:
        batch_op.create_index("ix_erasure_requests_resident_id", ["resident_id"], unique=False)
        # At most one open (pending) request per resident.
        batch_op.create_index(
            "uq_erasure_requests_pending",
            ["resident_id"],
            unique=True,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )

    op.create_table(
        "access_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("resident_id", BIG_ID, nullable=True),
        sa.Column("scope_path", PATH, nullable=True),
        sa.Column("service", sa.String(length=30), nullable=False),
        sa.Column("method", sa.String(length=60), nullable=False),
        sa.Column("what", sa.String(length=60), nullable=False),
        sa.Column("reader", sa.String(length=100), nullable=False),
        sa.Column("reader_roles", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("record", sa.String(length=120), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.create_index("ix_access_log_resident_id", ["resident_id", "id"], unique=False)
        batch_op.create_index("ix_access_log_scope_path", ["scope_path", "id"], unique=False)
        batch_op.create_index("ix_access_log_at", ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("access_log")
    op.drop_table("erasure_requests")
    op.drop_table("released_tags")
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
