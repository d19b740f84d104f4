"""Every bench, one after another, and one table of every goal they judge.

    python -m bench.all [--amqp-uri URI] [--database-url URL] [--readme] [--only grid,notices,...]

Seeds the 1,000,000-resident bench district first when ``--database-url`` holds none (``bench.seed_grid``),
then runs ``bench.grid_rpc``, ``bench.notices_fanout``, ``bench.volunteer_matching`` and
``bench.legal_booking`` at their default sizes, each as its own process (their output goes to
var/bench_all_<name>.log). Each bench writes its results JSON with a ``goals`` list (``bench.harness.goal``:
case, figure, floor, ratio, target, verdict); this program gathers them into one table, printed at the end
with the date and the machine's load, and written to var/bench_all_results.json. ``--readme`` also puts
the table into bench/README.md, between its ``bench-all`` markers. Exit status: 0 when every goal passed,
1 when any missed or a bench gave no result.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time

import psycopg2

from bench import harness

BENCHES = (
    # name, module, results file, whether it reads the seeded grid database
    ("grid", "bench.grid_rpc", "bench_grid_results.json", True),
    ("notices", "bench.notices_fanout", "bench_notices_results.json", True),
    ("volunteer", "bench.volunteer_matching", "bench_volunteer_results.json", True),
    ("legal", "bench.legal_booking", "bench_legal_results.json", False),
)
GRID_DATABASE_OPTION = {"grid": "--database-url", "notices": "--grid-database-url", "volunteer": "--grid-database-url"}
README = os.path.join(harness.ROOT, "bench", "README.md")
START, END = "<!-- bench-all:start -->", "<!-- bench-all:end -->"
COLUMNS = ("case", "figure", "floor", "ratio", "target", "verdict")


def is_seeded(url):
    """Whether ``url`` holds a seeded bench district (the seeder's own check)."""
    from bench.seed_grid import bench_targets

    try:
        conn = psycopg2.connect(harness.libpq_url(url))
    except psycopg2.OperationalError:
        return False
    try:
        with conn.cursor() as cur:
            bench_targets(cur)
        return True
    except (LookupError, psycopg2.Error):
        return False
    finally:
        conn.close()


def cpu_model():
    """The CPU's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def run(module, args, log_name):
    """Run ``python -m module args`` with its output in var/<log_name>; (exit status, seconds)."""
    started = time.monotonic()
    with open(harness.var_path(log_name), "w") as log:
        status = subprocess.call([sys.executable, "-m", module, *args], cwd=harness.ROOT, stdout=log, stderr=log)
    return status, time.monotonic() - started


def goals_of(name, results_file, status):
    """The goal rows a bench wrote (its name first in each case), or one row saying it gave none."""
    path = os.path.join(harness.VAR, results_file)
    try:
        with open(path) as source:
            goals = json.load(source).get("goals") or []
    except (OSError, ValueError):
        goals = []
    if status != 0 and not goals:
        return [missing(name, f"exit status {status}, see var/bench_all_{name}.log")]
    if not goals:
        return [missing(name, "it wrote no goals")]
    return [{**goal, "bench": name} for goal in goals]


def missing(name, why):
    return {"bench": name, "case": f"{name}: no result", "figure": None, "unit": "", "floor": None, "ratio": None,
            "target": why, "verdict": "MISS"}  # fmt: skip


def cells(goal):
    """A goal row as the table's text cells."""

    def number(value):
        return "-" if value is None else f"{value:,.2f} {goal.get('unit', '')}".rstrip()

    ratio = "-" if goal.get("ratio") is None else f"{goal['ratio']:.2f}x"
    return [goal["case"], number(goal["figure"]), number(goal["floor"]), ratio, goal["target"], goal["verdict"]]


def markdown(goals, stamp):
    """The table as Markdown, headed by when and on what it was measured."""
    lines = [
        f"Measured {stamp['date']} on {stamp['cpus']} CPUs ({stamp['machine']}), Python {stamp['python']}; "
        f"load average {stamp['load_before']:.2f} before, {stamp['load_after']:.2f} after "
        f"(highest seen {stamp['load_peak']:.2f}); {stamp['minutes']:.1f} minutes in all.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for goal in goals:
        row = cells(goal)
        row[-1] = f"**{row[-1]}**" if row[-1] != "pass" else row[-1]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def with_section(text, section):
    """``text`` (bench/README.md) with what lies between the bench-all markers replaced by ``section``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"bench/README.md lacks the markers {START} ... {END}")
    return text[: start + len(START)] + "\n" + section + "\n" + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench.all", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", harness.DEFAULT_AMQP_URI))
    parser.add_argument(
        "--database-url", default=harness.DEFAULT_GRID_DATABASE_URL, help="the seeded grid bench database"
    )
    parser.add_argument("--only", default="", help="comma-separated bench names (grid, notices, volunteer, legal)")
    parser.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or [name for name, *_ in BENCHES]
    unknown = set(names) - {name for name, *_ in BENCHES}
    if unknown:
        parser.error(f"--only: unknown bench {', '.join(sorted(unknown))}")
    started, loads = time.monotonic(), [os.getloadavg()]
    if any(seeded for name, _, _, seeded in BENCHES if name in names) and not is_seeded(args.database_url):
        print(f"seeding {harness.database_name(args.database_url)} (bench.seed_grid) ...", flush=True)
        status, _ = run("bench.seed_grid", ["--database-url", args.database_url], "bench_all_seed.log")
        if status != 0:
            raise SystemExit(f"seeding failed (exit status {status}): see var/bench_all_seed.log")
    goals = []
    for name, module, results_file, _ in BENCHES:
        if name not in names:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(harness.VAR, results_file))  # no stale goals from an earlier run
        bench_args = ["--amqp-uri", args.amqp_uri]
        if name in GRID_DATABASE_OPTION:
            bench_args += [GRID_DATABASE_OPTION[name], args.database_url]
        print(f"{name}: python -m {module} ...", end=" ", flush=True)
        status, seconds = run(module, bench_args, f"bench_all_{name}.log")
        loads.append(os.getloadavg())
        found = goals_of(name, results_file, status)
        print(f"{seconds:.0f} s, exit {status}, {sum(g['verdict'] == 'pass' for g in found)}/{len(found)} goals met")
        goals += found
    stamp = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "machine": cpu_model(),
        "python": platform.python_version(),
        "load_before": loads[0][0],
        "load_after": loads[-1][0],
        "load_peak": max(load[0] for load in loads),
        "minutes": (time.monotonic() - started) / 60,
    }
    print()
    harness.print_table([(title, width) for title, width in zip(COLUMNS, (52, 14, 14, 8, -30, -7), strict=True)],
                        [cells(goal) for goal in goals])  # fmt: skip
    table = markdown(goals, stamp)
    print()
    print(table.splitlines()[0])
    harness.save_json("bench_all_results.json", {"stamp": stamp, "goals": goals})
    if args.readme:
        with open(README) as source:
            text = source.read()
        with open(README, "w") as out:
            out.write(with_section(text, table))
        print("bench/README.md: table updated")
    return 0 if goals and all(goal["verdict"] == "pass" for goal in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
