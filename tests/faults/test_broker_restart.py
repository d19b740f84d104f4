"""The broker restarted under load: a private RabbitMQ node (tests/faults/brokers.py) stopped for
``FAULTS_BROKER_DOWN_SECONDS`` (20) while callers read and write and a quarantine batch flows, then
started again — without any supervisor, and with one (a loop restarting any process that exits);
and, without a supervisor, SIGKILLed instead of stopped (no connection closed, nothing settled).

Issue 13's fault run saw grid's and legal's containers die (a reply that could not be published
raised out of the RPC consumer), the processes exit, and nothing answer 90 s after the broker was
back; with a restart loop they answered after 5–6 s, and 5 writes ran twice. Here:

- every process lives through the outage (none exits, none is restarted);
- /readyz fails while the broker is away and /healthz answers 200 throughout;
- every service answers RPC within 30 s of the broker's return (``recovery_s`` is that time);
- once the flow has drained: each caller write one incident (and one mediation case), each
  quarantined household its instructions, care plan and requests once, each offer one message,
  each gateway delivery one post.
"""

import os
import time

import eventlet
import pytest

from tests.faults import effects, population, scenario
from tests.faults.broker_load import HealthProbes, Load, caller_tallies, wait_for
from tests.faults.brokers import private_node
from tests.faults.effects import Databases
from tests.faults.report import report
from tests.faults.suite import Suite, unique

DOWN_SECONDS = float(os.environ.get("FAULTS_BROKER_DOWN_SECONDS", "20"))
ANSWER_WITHIN = 30.0  # issue 13: every service answers within 30 s of the broker's return
HOUSEHOLDS = 40  # two members each: 80 tags at 4 a second, sent before, during and after the outage


@pytest.fixture
def node():
    with private_node() as started:
        yield started


def outage_problems(probes, suite, away_from, away_until):
    """/readyz must fail for every service while the broker is away; /healthz must answer 200 always."""
    problems = []
    away = probes.between(away_from, away_until)
    for name in suite.services:
        ready = [r for _, service, r, _ in away if service == name]
        if not ready:
            problems.append(f"{name}: /readyz was not asked while the broker was away")
        elif any(status == 200 for status in ready):
            problems.append(f"{name}: /readyz said ready while the broker was away ({ready.count(200)} times)")
    unhealthy = [(service, h) for _, service, _, h in probes.answers if h != 200]
    if unhealthy:
        problems.append(f"/healthz did not answer 200 {len(unhealthy)} times, e.g. {unhealthy[:3]}")
    return problems


@pytest.mark.parametrize(
    "supervised, crash",
    [(False, False), (False, True), (True, False)],
    ids=["no_supervisor", "no_supervisor_killed", "supervisor"],
)
def test_broker_restarted_under_load(node, templates, gateway, supervised, crash):
    env = {**scenario.FAST_TIMERS, **gateway.env()}
    with Suite(node.amqp_uri, env=env, templates=templates) as suite:
        db = Databases(suite.database_urls)
        probes = load = None
        try:
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households(HOUSEHOLDS))
            if supervised:
                suite.start_supervisor(delay=1.0)
            probes = HealthProbes(suite)
            load = Load(suite.amqp_uri, people, unique("broker-restart")).start()
            wait_for(lambda: len(load.tagged) >= 10 and len(load.written) >= 5, 120, "no load before the outage")

            if crash:
                node.kill()  # SIGKILL: no connection is closed, nothing in flight is settled
            else:
                node.stop()
            away_from = time.monotonic()
            eventlet.sleep(DOWN_SECONDS)  # the fault's length, not a verdict
            away_until = time.monotonic()
            node.start()  # returns once the node takes logins
            back = time.monotonic()
            for name in suite.services:
                suite.wait_answering(name, timeout=120)
            recovery = time.monotonic() - back

            wait_for(lambda: len(load.tagged) == len(people.residents), 300, "the tags were not all answered")
            load.stop()
            probes.stop()
            tallies, last_change, settled = effects.settle(
                lambda: (
                    caller_tallies(db, load)
                    + effects.quarantine_tallies(db, gateway, load.households_tagged(), with_care=True)
                ),
                lambda tallies: not any(t.lost for t in tallies),
                timeout=scenario.SETTLE_SECONDS,
                quiet=scenario.QUIET_SECONDS,
                idle=lambda: effects.pending_work(db, node),
            )
            problems = scenario.service_problems(suite, gateway)
            problems += [f"{r.service}-{r.index} exited {len(r.exits)}x" for r in suite.all_replicas() if r.exits]
            problems += outage_problems(probes, suite, away_from + 1.0, away_until)
            if recovery > ANSWER_WITHIN:
                problems.append(
                    f"the services answered {recovery:.1f} s after the broker's return (> {ANSWER_WITHIN:g})"
                )
            if not settled:
                problems.append(f"effects still changing after {scenario.SETTLE_SECONDS:g} s")
            info = [
                f"broker {'SIGKILLed' if crash else 'stopped'}, down {away_until - away_from:.1f} s, back (taking "
                f"logins) {back - away_until:.1f} s after its start; every service answered {recovery:.1f} s later",
                f"effects complete {max(0.0, last_change - back):.1f} s after the broker's return",
                f"reads {sum(load.reads.values())}, writes {len(load.written)}, tags {len(load.tagged)}; "
                f"failed attempts retried: {dict(load.failures)}",
                f"supervisor restarts: {suite.supervised_restarts}",
            ]
            name = (
                "broker_" + ("killed" if crash else "restarted") + ("_supervised" if supervised else "_no_supervisor")
            )
            report(name, load.sent, tallies, recovery, problems, info)
        finally:
            for running in (load, probes):
                if running is not None:
                    running.kill()
            db.close()
