"""nameko's own RPC floor: no-op methods in their own process, called as the benches call the services.

    python -m bench.rpc_floor [--amqp-uri amqp://guest:guest@localhost:5672/] [--requests 1000] [--warmup 50]

Separates what the framework costs (client proxy, dispatch, worker, reply) from what a service method adds:
a no-op on nameko's stock ``@rpc`` (confirmed, persistent replies) and one on the suite's (``shared.rpc``),
each as a multiple of the raw kombu request/reply floor (direct reply-to) measured in the same run.
"""

import bench.green  # noqa: F401  (first: eventlet's monkey patching)

# isort: split
import os
import subprocess
import sys
import time

import eventlet
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from bench import harness
from bench.harness import stat_cells, summarise
from shared.endpoints import rpc as service_rpc


class NoopNamekoRpc:
    name = "bench_noop_nameko"

    @rpc
    def ping(self):
        return "pong"


class NoopServiceRpc:
    """The same, on the suite's RPC entrypoint (unconfirmed, transient replies)."""

    name = "bench_noop_service"

    @service_rpc
    def ping(self):
        return "pong"


NOOP_CLASSES = (NoopNamekoRpc, NoopServiceRpc)


def start_noop(amqp_uri, classes=NOOP_CLASSES):
    """The no-op services of ``classes`` in a process of their own (``nameko run``, its default
    max_workers and prefetch of 10, as the benches run the services); the caller stops it
    (``harness.stop_process``)."""
    env = {**os.environ, "PYTHONPATH": harness.ROOT, "AMQP_URI": amqp_uri, "PYTHONWARNINGS": "ignore"}
    argv = ["run", "--broker", amqp_uri, *(f"bench.rpc_floor:{cls.__name__}" for cls in classes)]
    return subprocess.Popen(
        [sys.executable, "-m", "nameko", *argv],
        cwd=harness.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def wait_until_answered(proxy, process, classes=NOOP_CLASSES, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            for cls in classes:
                getattr(proxy, cls.name).ping()
            return
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            eventlet.sleep(0.5)


def main(argv=None):
    parser = harness.parser("bench.rpc_floor", __doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = harness.parse(parser, argv, positive=("requests",), not_negative=("warmup",))
    existed = harness.claim_queues(args.amqp_uri, harness.rpc_queues(*(cls.name for cls in NOOP_CLASSES)))
    service = start_noop(args.amqp_uri)
    loads = [os.getloadavg()]
    try:
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=30) as proxy:
            wait_until_answered(proxy, service)
            cases = [
                ("nameko @rpc (confirmed, persistent reply)", proxy.bench_noop_nameko.ping),
                ("suite @rpc (shared.rpc replies)", proxy.bench_noop_service.ping),
            ]
            stats = [(label, summarise(harness.timed(ping, args.requests, args.warmup))) for label, ping in cases]
    finally:
        harness.stop_process(service)
        harness.release_queues(args.amqp_uri, existed)
    floor = summarise(harness.measure_floor(args.amqp_uri, harness.rpc_request({}), "pong", args.requests, args.warmup))
    loads.append(os.getloadavg())
    print()
    harness.print_table(
        [("no-op RPC (ms)", 44), ("p50", 8), ("p99", 8), ("mean", 8)],
        [
            [label, *stat_cells(found, "p50_ms", "p99_ms", "mean_ms")]
            for label, found in [("raw AMQP floor", floor), *stats]
        ],
    )
    print()
    harness.floor_lines(floor, stats)
    print(harness.load_line(loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
