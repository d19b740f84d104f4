"""The service runner with the instruments of the benches' --profile: ``python -m bench.probe <runner args>``.

- Its slower garbage collections (every gen-2 one, any other over 2 ms) go to ``<BENCH_PROBE>.gc``, a line
  each: "<unix time at the end> <generation> <pause ms>".
- SIGUSR1 starts a cProfile of the process on CPU time (a green thread waiting on the database or the broker
  costs nothing) and times each SQL statement at the cursor; ``<BENCH_PROBE>.on`` says it has started.
  SIGUSR2 stops both and writes ``<BENCH_PROBE>.prof`` (pstats) and then ``<BENCH_PROBE>.sql`` (pickle:
  {statement: [calls, ms, parameters of its first call if it is a SELECT]}).

Nothing of the service is replaced: garbage collector callbacks, signal handlers and SQLAlchemy's
engine events are hooks any process offers (``bench.harness.ServiceProcess(probe=True)`` starts this).
"""

import bench.green  # noqa: F401  (first: the runner's monkey patching, before SQLAlchemy is imported)

# isort: split
import cProfile
import gc
import os
import pickle
import signal
import sys
import time

from sqlalchemy import event
from sqlalchemy.engine import Engine

from shared.runner import main


class Probe:
    def __init__(self, prefix):
        self.prefix = prefix
        self.gc_log = open(prefix + ".gc", "w", buffering=1)  # noqa: SIM115  (open for the process's life)
        self.gc_started = 0.0
        self.profiler: cProfile.Profile | None = None
        self.sql: dict[str, list] = {}

    def install(self):
        gc.callbacks.append(self.watch_gc)
        event.listen(Engine, "before_cursor_execute", self.before_sql)
        event.listen(Engine, "after_cursor_execute", self.after_sql)
        signal.signal(signal.SIGUSR1, self.start)
        signal.signal(signal.SIGUSR2, self.stop)

    def watch_gc(self, phase, info):
        if phase == "start":
            self.gc_started = time.perf_counter()
            return
        pause = (time.perf_counter() - self.gc_started) * 1000
        if info["generation"] == 2 or pause > 2:
            self.gc_log.write(f"{time.time():.4f} {info['generation']} {pause:.2f}\n")

    def before_sql(self, conn, _cursor, _statement, _parameters, _context, _executemany):
        conn.info["bench_started"] = time.perf_counter()

    def after_sql(self, conn, _cursor, statement, parameters, _context, _executemany):
        started = conn.info.pop("bench_started", None)
        if self.profiler is None or started is None:
            return
        # The parameters of a SELECT let the bench EXPLAIN it; nothing else is kept.
        first = parameters if statement.lstrip().upper().startswith("SELECT") else None
        entry = self.sql.setdefault(statement, [0, 0.0, first])
        entry[0] += 1
        entry[1] += (time.perf_counter() - started) * 1000

    def start(self, _signum, _frame):
        self.sql = {}
        self.profiler = cProfile.Profile(time.process_time)
        self.profiler.enable()
        open(self.prefix + ".on", "w").close()

    def stop(self, _signum, _frame):
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return
        profiler.disable()
        profiler.dump_stats(self.prefix + ".prof")
        with open(self.prefix + ".sql.part", "wb") as out:
            pickle.dump(self.sql, out)
        os.replace(self.prefix + ".sql.part", self.prefix + ".sql")  # last: the bench waits for this one


if __name__ == "__main__":
    Probe(os.environ["BENCH_PROBE"]).install()
    sys.exit(main(sys.argv[1:]))
