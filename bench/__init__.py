"""Benchmarks for the grid service.

    python -m bench.seed_grid --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench
    python -m bench.grid_rpc  --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench

The seeder and the RPC bench must agree on the PII key (the service decrypts
the phone numbers the seeder encrypted), so both take it from here.

Plumbing the scripts share: ``bench.harness`` (services under test, the broker,
timing, /proc; needs eventlet's monkey patching) and ``bench.db`` (databases).
"""

import json
import os

import shared  # noqa: F401  (before eventlet: keeps its deprecation warning out of the benchmarks' output)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var")

PII_KEY_ENV = "GRASSROOTS_PII_KEY"
DEFAULT_PII_KEY = "bench-pii-key-0123456789abcdef"
JWT_SECRET_ENV = "GRASSROOTS_JWT_SECRET"
DEFAULT_JWT_SECRET = "bench-jwt-secret-0123456789abcdef"


def pii_key():
    """The PII key from the environment, defaulting (and exporting) the bench key."""
    return os.environ.setdefault(PII_KEY_ENV, DEFAULT_PII_KEY)


def jwt_secret():
    return os.environ.setdefault(JWT_SECRET_ENV, DEFAULT_JWT_SECRET)


def var_path(name):
    os.makedirs(VAR, exist_ok=True)
    return os.path.join(VAR, name)


def save_json(name, data, **options):
    """Write ``data`` as indented JSON to var/<name>; return the path."""
    path = var_path(name)
    with open(path, "w") as out:
        json.dump(data, out, indent=2, ensure_ascii=False, **options)
    return path
