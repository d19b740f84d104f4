"""PostgreSQL plumbing the bench scripts share: psycopg2 URLs and (re)creating bench databases.

Kept apart from ``bench.harness`` because the seeder imports it too, and the
seeder runs without eventlet.
"""

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url


def libpq_url(url, database=None):
    """A URL psycopg2 accepts (no SQLAlchemy driver suffix), optionally for another database."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def one_row(cur):
    """The next row of ``cur``'s result, for queries that always have one (a count, a seeded row)."""
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no row from {cur.query!r}")
    return row


def recreate_database(url):
    """Drop the database ``url`` names (closing its connections) and create it again, empty."""
    name = make_url(url).database
    if not name:
        raise ValueError(f"{url} names no database")
    conn = psycopg2.connect(libpq_url(url, "postgres"))
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
