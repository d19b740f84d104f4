"""Benchmarks of the services on PostgreSQL and RabbitMQ (bench/README.md says what each measures).

    python -m bench.seed_grid --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench
    python -m bench.grid_rpc  --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench

What they share is in ``bench.harness``; ``bench.green`` (eventlet's monkey patching) is imported first by
every bench that talks to the services, and ``bench.probe`` runs a service with the --profile instruments.
"""

import shared  # noqa: F401  (before eventlet: keeps its deprecation warning out of the benchmarks' output)
