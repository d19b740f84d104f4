"""SQLAlchemy 2 plumbing: engines, and a nameko DependencyProvider handing each
worker its own session (a unit of work).

PostgreSQL goes through psycopg2 made cooperative with psycogreen, so a query
waits on the eventlet hub instead of blocking it. SQLite (the embedded default
for `make run`) cannot interleave writers, so its units of work are serialised.
"""

import datetime as dt
import logging
import os
from contextlib import contextmanager

import eventlet.semaphore
from nameko.extensions import DependencyProvider
from sqlalchemy import JSON, BigInteger, Integer, create_engine, event, select, text, types as sqltypes
from sqlalchemy.dialects.sqlite import DATETIME as SqliteDateTime
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from shared.errors import NotFound

log = logging.getLogger(__name__)

# An auto-incrementing 64-bit key; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")

_green_patched = False


def utcnow():
    return dt.datetime.now(dt.UTC)


def make_green():
    """Let psycopg2 yield to the eventlet hub while it waits on the server."""
    global _green_patched
    if not _green_patched:
        import psycogreen.eventlet

        psycogreen.eventlet.patch_psycopg()
        _green_patched = True


def normalise_url(url):
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


class UtcSqliteDateTime(SqliteDateTime):
    """SQLite keeps no UTC offset: aware datetimes are stored in UTC and read back as aware UTC,
    so comparisons with ``utcnow()`` behave as on PostgreSQL."""

    def bind_processor(self, dialect):
        process = super().bind_processor(dialect)

        def bind(value):
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return process(value) if process else value

        return bind

    def result_processor(self, dialect, coltype):
        process = super().result_processor(dialect, coltype)

        def result(value):
            value = process(value) if process else value
            if self.timezone and isinstance(value, dt.datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value

        return result


def make_engine(url, pool_size=10, pre_ping=True):
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        in_memory = path in ("", ":memory:")
        if not in_memory:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
            # In memory the database is the connection: every session shares the one.
            **({"poolclass": StaticPool} if in_memory else {}),
        )
        engine.dialect.colspecs = {**engine.dialect.colspecs, sqltypes.DateTime: UtcSqliteDateTime}

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # hide_parameters: SQL errors end up in logs, and their parameters can be personal data.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
    )


def database_url(config, service_name):
    """The service's database URL: nameko config DATABASE_URL, else <SERVICE>_DATABASE_URL, else SQLite under var/."""
    return (
        config.get("DATABASE_URL")
        or os.environ.get(f"{service_name.upper()}_DATABASE_URL")
        or f"sqlite:///var/{service_name}.db"
    )


class UnitOfWork:
    """One worker's session, plus the outbox it writes events to in the same transaction."""

    def __init__(self, provider, source, call_id_stack=(), request_id=None):
        self._provider = provider
        self._source = source
        self._call_id_stack = list(call_id_stack)
        # The AMQP correlation id of the RPC request this worker serves (shared.idempotency).
        self.request_id = request_id
        self._session = None
        self._locked = False
        self._read_only = False
        self.emitted = 0

    @property
    def session(self) -> Session:
        if self._session is None:
            if self._read_only:
                self._session = self._provider.read_sessionmaker()
            else:
                self._locked = self._provider.acquire_serial()
                self._session = self._provider.sessionmaker()
        return self._session

    def read_only(self):
        """Read in autocommit mode (each statement its own snapshot); call before the first query."""
        if self._session is None:
            self._read_only = True

    def ping(self):
        self._provider.ping()

    @property
    def dialect(self):
        return self._provider.engine.dialect.name

    @property
    def idempotency_model(self):
        return self._provider.idempotency_model

    def emit(self, event_type, subject, data):
        """Record an event in the outbox; it is published only if this transaction commits."""
        return self._record(None, event_type, subject, data)

    def command(self, target, command, origin, data):
        """Record a command to service ``target`` in the outbox (shared.commands): sent only if this
        transaction commits, applied by ``target`` at most once per ``origin``."""
        from shared.commands import command_exchange_name

        return self._record(command_exchange_name(target), command, origin, {**data, "origin": origin})

    def _record(self, destination, event_type, subject, data):
        from shared.outbox import envelope

        outbox = self._provider.outbox_model
        if outbox is None:
            raise RuntimeError("this Database has no outbox model")
        body = envelope(self._source, event_type, subject, data)
        self.session.add(
            outbox(
                event_id=body["id"],
                event_type=event_type,
                payload=body,
                # carried to handlers so logs chain the call ids across the event
                headers={"nameko.call_id_stack": self._call_id_stack},
                created_at=utcnow(),
                destination=destination,
            )
        )
        self.emitted += 1
        return body

    def claim_event(self, handler, event_id):
        """Mark ``event_id`` processed by ``handler`` in this transaction.

        Returns False if it was already processed (the caller skips its side effect).
        """
        processed = self._provider.processed_model
        seen = self.session.scalar(
            select(processed.event_id).where(processed.handler == handler, processed.event_id == event_id)
        )
        if seen:
            return False
        # A concurrent twin inserting the same key fails at commit on the primary
        # key; its message is retried and then finds the event already claimed.
        self.session.add(processed(handler=handler, event_id=event_id, processed_at=utcnow()))
        return True

    def commit(self):
        if self._session is None:
            return
        if self._read_only:
            self.close()  # nothing to commit: hand the connection back now
            return
        self._session.commit()
        if self.emitted:
            self.emitted = 0
            self._provider.notify_committed()

    def rollback(self):
        if self._session is not None:
            self._session.rollback()
            self.emitted = 0

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._locked:
            self._locked = False
            self._provider.release_serial()


class Database(DependencyProvider):
    """Gives each worker a UnitOfWork. The entrypoint that runs the worker owns its transaction and
    commits it (``@endpoint`` before replying, the event and command handlers, ``config_timer``);
    whatever a worker leaves uncommitted — it failed, or nothing committed it — is rolled back.

    Outside nameko (unit tests, scripts) ``Database.local(...)`` binds one to a URL and
    ``unit_of_work()`` hands out what a worker would get.
    """

    def __init__(self, base, outbox_model=None, processed_model=None, idempotency_model=None):
        self.base = base
        self.outbox_model = outbox_model
        self.processed_model = processed_model
        self.idempotency_model = idempotency_model
        self.after_commit = []

    def setup(self):
        config = self.container.config
        self.service_name = self.container.service_name
        url = database_url(config, self.service_name)
        if normalise_url(url).startswith("postgresql"):
            make_green()
        self.use_engine(
            make_engine(
                url,
                pool_size=int(config.get("DB_POOL_SIZE", 10)),
                # Pre-ping costs a round trip per checkout; without it a database restart fails one call
                # per pooled connection (then the pool is recycled).
                pre_ping=str(config.get("DB_PRE_PING", "true")).lower() not in ("false", "0", "no"),
            )
        )

    @classmethod
    def local(cls, base, service_name, engine=None, create=True, **models):
        """A Database outside any container, on ``engine`` (default: a private in-memory SQLite),
        its tables created from ``base``: the seam unit tests run domain code through."""
        provider = cls(base, **models)
        provider.service_name = service_name
        if engine is None:
            engine = make_engine("sqlite://")
        provider.use_engine(engine)
        if create:
            base.metadata.create_all(engine)
        return provider

    def unit_of_work(self, call_id_stack=(), request_id=None):
        return UnitOfWork(self, self.service_name, call_id_stack, request_id=request_id)

    def use_engine(self, engine):
        self.engine = engine
        self.url = engine.url
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.read_sessionmaker = sessionmaker(
            bind=self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        self._serial = eventlet.semaphore.Semaphore(1) if self.engine.dialect.name == "sqlite" else None

    def stop(self):
        self.engine.dispose()

    def acquire_serial(self):
        if self._serial is None:
            return False
        self._serial.acquire()
        return True

    def release_serial(self):
        if self._serial is not None:  # acquire_serial took it (SQLite only)
            self._serial.release()

    @contextmanager
    def session_scope(self):
        """A session outside any worker (relay, timers' helpers, scripts)."""
        locked = self.acquire_serial()
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            if locked:
                self.release_serial()

    def notify_committed(self):
        for callback in self.after_commit:
            callback()

    def ping(self):
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def get_dependency(self, worker_ctx):
        from shared.idempotency import REQUEST_ID_CONTEXT_KEY

        request_id = worker_ctx.data.get(REQUEST_ID_CONTEXT_KEY)
        return self.unit_of_work(worker_ctx.call_id_stack, request_id=request_id)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        uow = getattr(worker_ctx.service, self.attr_name, None)
        if not isinstance(uow, UnitOfWork):
            return
        try:
            uow.rollback()  # what the entrypoint did not commit (it failed) is not kept
        except Exception:
            log.exception("unit of work failed to roll back", extra={"call_id": worker_ctx.call_id})

    def worker_teardown(self, worker_ctx):
        uow = getattr(worker_ctx.service, self.attr_name, None)
        if isinstance(uow, UnitOfWork):
            uow.close()


def paged(session, query, page, page_size):
    """One page of an ordered query: (rows, has_more), reading one row past the page to know."""
    rows = session.scalars(query.offset((page - 1) * page_size).limit(page_size + 1)).all()
    return rows[:page_size], len(rows) > page_size


def bulk_insert(session, table, rows, returning=()):
    """Insert many rows in the session's transaction; returns the ``returning`` columns' tuples.

    On PostgreSQL this is psycopg2's execute_values (one multi-row INSERT per 1,000 rows),
    several times cheaper in Python than SQLAlchemy's ORM bulk insert on hot paths.
    """
    if not rows:
        return []
    if session.bind.dialect.name != "postgresql":
        statement = table.insert()
        if returning:
            return [tuple(r) for r in session.execute(statement.returning(*[table.c[c] for c in returning]), rows)]
        session.execute(statement, rows)
        return []
    from psycopg2.extras import Json, execute_values

    columns = list(rows[0])
    as_json = {c for c in columns if isinstance(table.c[c].type, JSON)}
    values = [tuple(Json(row[c]) if c in as_json else row[c] for c in columns) for row in rows]
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES %s"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    cursor = session.connection().connection.cursor()
    try:
        return execute_values(cursor, sql, values, page_size=1000, fetch=bool(returning)) or []
    finally:
        cursor.close()


def serialize_on(session, namespace, key):
    """Hold a transaction-scoped lock on (namespace, key): concurrent transactions on the same key
    run one after another (PostgreSQL advisory lock; SQLite units of work are serial already)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:namespace), :key)"),
            {"namespace": namespace, "key": int(key) & 0x7FFFFFFF},
        )


def locking(query, session, *, skip_locked=False):
    """Add FOR UPDATE on PostgreSQL (SQLite units of work are serialised already)."""
    if session.bind.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=skip_locked)
    return query


def fetch(session, model, row_id, what, *, lock=False):
    """The row with this id, or NotFound naming ``what``."""
    query = select(model).where(model.id == row_id)
    row = session.scalar(locking(query, session) if lock else query)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row
