"""Plumbing the RPC bench scripts share: services under test, the broker, timing and /proc.

Import it after ``eventlet.monkey_patch()``: kombu and the waits below need the
green socket and time.

* services: ``ServiceProcess`` (one ``nameko run`` of services/<name>, as
  deployed), ``start_services`` / ``stop_services`` / ``wait_ready``;
* the broker: ``claim_rpc_queues`` refuses to run beside another consumer of a
  service's RPC queue, ``release_rpc_queues`` leaves the broker as found;
* timing: ``timed``, ``percentile``, ``summarise``;
* /proc: ``cpu_now`` / ``cpu_used`` (CPU seconds of the services, PostgreSQL,
  RabbitMQ and this process), ``ServiceProcess.memory`` (VmHWM);
* results: ``environment``, ``print_header`` (and ``bench.save_json``).
"""

import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import eventlet
from kombu import Connection

from bench import JWT_SECRET_ENV, PII_KEY_ENV, ROOT, jwt_secret, pii_key, var_path

SERVICE_START_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- statistics -----------------------------------------------------------


def percentile(samples, q):
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(samples, digits=3):
    """n, p50, p99, mean, min and max of latencies in ms, rounded to ``digits``; None for no samples."""
    if not samples:
        return None
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), digits),
        "p99_ms": round(percentile(samples, 99), digits),
        "mean_ms": round(statistics.fmean(samples), digits),
        "min_ms": round(min(samples), digits),
        "max_ms": round(max(samples), digits),
    }


def timed(call, requests, warmup):
    """Run ``call`` ``warmup`` times untimed, then ``requests`` times; return the latencies in ms."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# ---- the broker -----------------------------------------------------------


def rpc_queue_state(amqp_uri, queue):
    """(exists, consumer count) of a service's RPC queue on this vhost."""
    with Connection(amqp_uri) as conn:
        try:
            _name, _messages, consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
            return True, consumers
        except conn.channel_errors:
            return False, 0


def delete_unused_queue(amqp_uri, queue, timeout=10.0):
    """Delete an RPC queue once the broker has dropped our service's consumer (leave the broker as found)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exists, consumers = rpc_queue_state(amqp_uri, queue)
        if not exists:
            return
        if not consumers:
            with Connection(amqp_uri) as conn:
                try:
                    conn.default_channel.queue_delete(queue=queue, if_unused=True)
                    return
                except conn.channel_errors:
                    pass  # a consumer came back between the check and the delete
        eventlet.sleep(0.2)


def claim_rpc_queues(amqp_uri, names):
    """Refuse to run (SystemExit) while another consumer is on the RPC queue of one of the services ``names``.

    Another instance would take some of the calls and skew the run. Returns
    {name: whether its queue existed}, for ``release_rpc_queues``.
    """
    existed = {}
    for name in names:
        exists, consumers = rpc_queue_state(amqp_uri, f"rpc-{name}")
        if consumers:
            raise SystemExit(
                f"{consumers} consumer(s) already on 'rpc-{name}' at {amqp_uri}: another {name} service (e.g. "
                "`make run` / `python -m tools.suite run`) would take some of the calls and skew the run.\n"
                "Stop it, or point --amqp-uri at another vhost."
            )
        existed[name] = exists
    return existed


def release_rpc_queues(amqp_uri, existed):
    """Delete the RPC queues the run created (those ``claim_rpc_queues`` found missing)."""
    for name, was_there in existed.items():
        if not was_there:
            delete_unused_queue(amqp_uri, f"rpc-{name}")


# ---- processes --------------------------------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nameko(args, env, output):
    """``nameko ARGS`` with this interpreter in the repository root; stdout and stderr to ``output``."""
    return subprocess.Popen(
        [sys.executable, "-m", "nameko", *args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
    )


def stop_process(process, sig=signal.SIGTERM, timeout=20.0):
    """Send ``sig`` to a child still running and wait for it; kill it if it has not ended after ``timeout`` s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServiceProcess:
    """One service (services/<name>) run as deployed (shared.runner), its output in var/<log_name>.

    Its own interpreter and event loop, the bench's AMQP URI, JWT secret and PII
    key, an HTTP port of its own (for /readyz and /metrics), plus ``env``.
    """

    def __init__(self, name, amqp_uri, log_name, env):
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "AMQP_URI": amqp_uri,
            JWT_SECRET_ENV: jwt_secret(),
            PII_KEY_ENV: pii_key(),
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.port}",
            **env,
        }
        self.log_path = var_path(log_name)
        self.process = None

    @property
    def rpc_queue(self):
        return f"rpc-{self.name}"

    def start(self):
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.argv(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def argv(self):
        """The service's command line as deployed (services.launch: the service runner)."""
        from services.launch import run_argv

        return run_argv(self.name)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self):
        assert self.process is not None, "start() first"
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} service exited with {self.process.returncode}; see {self.log_path}")

    def stop(self):
        stop_process(self.process)  # the runner stops gracefully on SIGTERM

    def memory(self):
        """Peak and current RSS (KiB) of the service process, from /proc.

        Popen runs this interpreter with ``-m shared.runner``, so its pid is the
        service's python itself; checked here rather than assumed.
        """
        assert self.process is not None, "start() first"
        pid = self.process.pid
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        if not exe.startswith("python") or not any(arg in ("shared.runner", "-c") for arg in argv):
            raise RuntimeError(f"pid {pid} is {exe} {argv}, not the {self.name} service's python")
        status = {}
        with open(f"/proc/{pid}/status") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    status[key] = int(value.split()[0])  # "123456 kB"
        return {"pid": pid, "exe": exe, "peak_kib": status.get("VmHWM"), "rss_kib": status.get("VmRSS")}

    def log_lines(self):
        """(record, line) for each line of the service's log; record is None where the line is not JSON."""
        with open(self.log_path) as log:
            for line in log:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None  # not one of the service's JSON lines
                yield record, line

    def finished_calls(self, entrypoint=None):
        """The records of the "call finished" lines (only of ``entrypoint``, e.g. "rpc", if given), in log order."""
        return [
            record
            for record, _line in self.log_lines()
            if record is not None
            and record.get("message") == "call finished"
            and (entrypoint is None or record.get("entrypoint") == entrypoint)
        ]

    def problems(self, describe):
        """Warning and error lines the service logged, each as ``describe(record)`` (the run is suspect if any)."""
        found = []
        for record, line in self.log_lines():
            if record is None:
                # Plain lines are start-up deprecation warnings, unless a traceback escaped the JSON logs.
                if line.startswith("Traceback"):
                    found.append(line.strip())
            elif record.get("level") in ("warning", "error", "critical"):
                found.append(describe(record))
        return found


def wait_ready(services, amqp_uri, timeout=SERVICE_START_TIMEOUT):
    """Wait until every service answers /readyz with 200 and consumes its RPC queue (and only it does)."""
    deadline = time.monotonic() + timeout
    pending = dict(services)
    while pending:
        for name, service in list(pending.items()):
            service.check_alive()
            if service.ready():
                _exists, consumers = rpc_queue_state(amqp_uri, service.rpc_queue)
                if consumers == 1:
                    del pending[name]
                elif consumers > 1:
                    raise RuntimeError(f"{consumers} consumers on {service.rpc_queue}: something else serves it")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(
                f"not ready after {timeout:.0f} s: {', '.join(pending)}; "
                f"see {', '.join(s.log_path for s in pending.values())}"
            )
        eventlet.sleep(0.2)


def start_services(services, amqp_uri):
    """Start every service of {name: ServiceProcess}, wait until all are ready and say so."""
    for service in services.values():
        service.start()
    wait_ready(services, amqp_uri)
    print(
        "  services up: " + ", ".join(f"{name} pid {s.process.pid} (log {s.log_path})" for name, s in services.items()),
        flush=True,
    )


def stop_services(services, amqp_uri, existed):
    """Stop every service, then delete the RPC queues the run created (``existed`` from claim_rpc_queues)."""
    for service in services.values():
        service.stop()
    release_rpc_queues(amqp_uri, existed)


# ---- CPU from /proc ---------------------------------------------------------


@dataclass
class CpuSample:
    """CPU seconds (user + system) used so far by groups of processes."""

    at: float  # monotonic
    seconds: dict


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may contain spaces; the fields after its ")" are fixed.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_named(names):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() in names:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cpu_now(services):
    """CPU used so far by each service, by PostgreSQL, by RabbitMQ and by this process.

    PostgreSQL and RabbitMQ are every process of that name on the machine: other
    users of them count too (the reports say so).
    """
    seconds = {name: process_cpu_seconds(service.process.pid) for name, service in services.items()}
    seconds["postgres"] = sum(process_cpu_seconds(pid) for pid in pids_named({"postgres"}))
    seconds["rabbitmq"] = sum(process_cpu_seconds(pid) for pid in pids_named({"beam.smp"}))
    seconds["bench"] = process_cpu_seconds(os.getpid())
    return CpuSample(time.monotonic(), seconds)


def cpu_used(before, after):
    """CPU seconds each process group used between two ``cpu_now`` samples (wall time: ``after.at - before.at``)."""
    return {name: round(after.seconds[name] - before.seconds.get(name, 0.0), 2) for name in after.seconds}


# ---- results ------------------------------------------------------------------


def environment(loads):
    """The machine beside a run's figures: CPUs, Python, and the load averages (before, after) of the run."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_before": loads[0],
        "load_avg_after": loads[1],
    }


def print_header(header):
    """A table's header line, underlined."""
    print(header)
    print("-" * len(header))
