"""Alembic environment: the shared one (shared/alembic_env.py)."""

from shared.alembic_env import run

run()
