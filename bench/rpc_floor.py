"""nameko's own RPC floor: a no-op method in its own process, called like the grid bench calls grid.

    python -m bench.rpc_floor [--amqp-uri ...] [--requests 1000]

Separates what the framework costs (client proxy, dispatch, worker, reply) from what
a grid method adds, beside the same run's raw kombu direct reply-to floor.
"""

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from nameko.rpc import rpc  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from bench.harness import percentile, start_nameko, stop_process, timed  # noqa: E402
from shared.endpoints import rpc as service_rpc  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_floor")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    env = {**os.environ, "AMQP_URI": args.amqp_uri, "PYTHONWARNINGS": "ignore"}
    service = start_nameko(
        ["run", "--broker", args.amqp_uri, "bench.rpc_floor:NoopNamekoRpc", "bench.rpc_floor:NoopServiceRpc"],
        env,
        subprocess.DEVNULL,
    )
    try:
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=30) as proxy:
            deadline = time.monotonic() + 30
            while True:
                try:
                    proxy.bench_noop_service.ping()
                    proxy.bench_noop_nameko.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            print(f"{'no-op RPC (ms)':<40} {'p50':>6} {'p99':>6}")
            for label, method in (
                ("nameko @rpc (confirmed, persistent reply)", proxy.bench_noop_nameko.ping),
                ("suite @rpc (shared.rpc replies)", proxy.bench_noop_service.ping),
            ):
                samples = timed(method, args.requests, warmup=50)
                print(f"{label:<40} {percentile(samples, 50):>6.2f} {percentile(samples, 99):>6.2f}")
    finally:
        stop_process(service)


if __name__ == "__main__":
    main()
