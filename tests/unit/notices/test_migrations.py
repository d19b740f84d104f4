"""The notices migrations against the models: on PostgreSQL (offline SQL) the indexes on the busy bulk
tables are built CONCURRENTLY, outside a transaction, partial where the models say so; on SQLite a
database migrated to head has every index the models declare, with the same definition."""

import io
import re

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.schema import CreateIndex

from services import registry
from services.notices.models import Base
from shared import migrate

SERVICE = registry.get("notices")
# Indexes added to deliveries and recipients since they hold millions of rows (0008, 0009).
BUSY = {
    "ix_deliveries_gateway_message_id": "ON deliveries (gateway_message_id) WHERE gateway_message_id IS NOT NULL",
    "ix_recipients_address_hash": "ON recipients (address_hash) WHERE address_hash IS NOT NULL",
    "ix_recipients_resident_id": "ON recipients (resident_id)",
}


def offline_sql(revisions):
    config = migrate.alembic_config("notices", SERVICE.metadata(), SERVICE.migrations, "postgresql://x@127.0.0.1/x")
    config.output_buffer = io.StringIO()
    command.upgrade(config, revisions, sql=True)
    return config.output_buffer.getvalue()


def test_indexes_on_the_bulk_tables_are_built_concurrently_outside_a_transaction():
    statements = [s.strip() for s in offline_sql("0007:head").split(";") if s.strip()]
    statements = [re.sub(r"^(--[^\n]*\n\s*)+", "", s) for s in statements]  # comments before a statement
    for name, definition in BUSY.items():
        creating = [i for i, s in enumerate(statements) if s.startswith("CREATE INDEX") and f" {name} " in s]
        assert [statements[i] for i in creating] == [f"CREATE INDEX CONCURRENTLY {name} {definition}"]
        # after the transaction's COMMIT, with no BEGIN since: PostgreSQL refuses CONCURRENTLY in a transaction
        before = [s for s in statements[: creating[0]] if s in ("BEGIN", "COMMIT")]
        assert before[-1] == "COMMIT", name


def index_sql(index, dialect):
    return " ".join(str(CreateIndex(index).compile(dialect=dialect)).split())


def test_a_sqlite_database_migrated_to_head_has_the_models_indexes(tmp_path):
    url = f"sqlite:///{tmp_path / 'notices.db'}"
    SERVICE.migrate(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = {
                name: " ".join(sql.split())
                for name, sql in conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
                if sql is not None  # those of primary keys and unique constraints
            }
        dialect = engine.dialect
    finally:
        engine.dispose()
    declared = {
        index.name: index_sql(index, dialect) for table in Base.metadata.sorted_tables for index in table.indexes
    }
    assert {name: found.get(name) for name in declared} == declared
    assert set(BUSY) <= set(declared)
