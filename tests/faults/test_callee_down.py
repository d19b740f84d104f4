"""A callee down for 5 minutes: grid is killed for FAULTS_CALLEE_DOWN_SECONDS (default 300) while
notices and volunteer work through a batch of quarantine events that each need grid lookups.

The events are real: the households are tagged while notices and volunteer are stopped, so the
events wait in their queues; grid is killed once its outbox is empty; then notices and volunteer
come back and find their callee gone. Their handlers must keep retrying (backing off) for as long as
grid is down — nothing dead-lettered, no service dying — and once grid is back every household must
get its instructions and care, once. Issue 13 saw handlers dead-lettered after ~57 s (5 attempts)
with grid down 75 s: 6 households got no instructions and 13 no care.
"""

import os
import time

from tests.faults import effects, population, scenario
from tests.faults.effects import Databases
from tests.faults.report import report
from tests.faults.suite import Suite

DOWN_SECONDS = float(os.environ.get("FAULTS_CALLEE_DOWN_SECONDS", "300"))
CALLERS = ("notices", "volunteer")


def test_callee_down_for_five_minutes(amqp_uri, vhost, templates, gateway, tmp_path):
    env = {**scenario.FAST_TIMERS, **gateway.env()}
    with Suite(
        amqp_uri, services=("grid", "notices", "volunteer"), env=env, templates=templates, log_dir=str(tmp_path)
    ) as suite:
        db = Databases(suite.database_urls)
        try:
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households(100))
                for name in CALLERS:
                    suite.kill(name)
                sent = scenario.tag_all(rpc, people.residents)
            _wait(lambda: effects.unpublished_outbox(db, "grid") == 0, 60, "grid's outbox to empty")
            suite.kill("grid")
            down_at = time.monotonic()
            for name in CALLERS:
                suite.start_replica(name)
            for name in CALLERS:
                # /readyz only (an RPC answer may need grid): the callers are up, their handlers failing.
                _wait(lambda name=name: suite.ready(name), 120, f"{name} to be ready")
            dead_during_outage = _wait_out(suite, vhost, down_at + DOWN_SECONDS)
            suite.start_replica("grid")
            fault_ended = time.monotonic()
            suite.wait_answering("grid", timeout=120)
            tallies, last_change, settled = effects.settle(
                lambda: effects.quarantine_tallies(db, gateway, people.households),
                lambda tallies: not any(t.lost for t in tallies),
                timeout=scenario.SETTLE_SECONDS + DOWN_SECONDS,  # a retry may be backing off for as long again
                quiet=scenario.QUIET_SECONDS,
                idle=lambda: effects.pending_work(db, vhost),
            )
            problems = scenario.service_problems(suite, gateway)
            if dead_during_outage:
                problems.append(f"dead-lettered while grid was down: {dead_during_outage}")
            if not settled:
                problems.append(scenario.unsettled(db, vhost))
            info = [
                f"grid down {fault_ended - down_at:.0f} s; {sent} quarantine events waited for notices and volunteer",
                f"dead letters at the end: {_dead(vhost) or 'none'}",
            ]
            info += [scenario.gateway_info(gateway, db), f"service logs: {suite.log_dir}"]
            report("callee_down", sent, tallies, max(0.0, last_change - fault_ended), problems, info)
        finally:
            db.close()


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.5)


def _dead(vhost):
    return {q: ready for q, (ready, _, _) in vhost.queues().items() if q.endswith(".dead") and ready}


def _wait_out(suite, vhost, until):
    """Sleep out the outage, watching that no caller dies; returns the dead letters seen by its end."""
    while time.monotonic() < until:
        exited = suite.unexpected_exits()
        if exited:
            raise AssertionError(f"a caller died while grid was down: {exited}")
        time.sleep(min(5.0, max(0.0, until - time.monotonic())))
    return _dead(vhost)
