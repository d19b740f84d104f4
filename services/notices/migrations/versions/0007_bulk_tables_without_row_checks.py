"""Recipients and deliveries are written a page of thousands at a time (a notice's audience), and only
by the notices service, in the transaction that writes their notice and recipients: their foreign keys
(to notices, and a delivery's to its recipient) cost a lookup per row and key — 60% of writing a
delivery — and guarded nothing the code does not. They are dropped; nothing deletes these rows.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# SQLite's foreign keys are unnamed: named here so that batch mode can find them.
NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
DROPPED = {"recipients": ("notice_id",), "deliveries": ("notice_id", "recipient_id")}
REFERRED = {"notice_id": ("notices", "id"), "recipient_id": ("recipients", "id")}


def upgrade() -> None:
    for table, columns in DROPPED.items():
        with op.batch_alter_table(table, naming_convention=NAMING) as batch_op:
            for column in columns:
                batch_op.drop_constraint(f"{table}_{column}_fkey", type_="foreignkey")


def downgrade() -> None:
    for table, columns in DROPPED.items():
        with op.batch_alter_table(table, naming_convention=NAMING) as batch_op:
            for column in columns:
                referred, key = REFERRED[column]
                batch_op.create_foreign_key(f"{table}_{column}_fkey", referred, [column], [key])
