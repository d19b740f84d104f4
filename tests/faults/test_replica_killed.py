"""A replica killed: two volunteer and two notices processes share the work of a quarantine batch
(their handlers, timers and dispatchers all run twice over); one volunteer replica is SIGKILLed a
third of the way in and one notices replica two thirds of the way in, and neither comes back.

The surviving replicas must finish the batch with every effect once: issue 13 saw 6 duplicate
offer messages with two volunteer replicas and one killed.
"""

import time

import eventlet

from tests.faults import effects, population, scenario
from tests.faults.effects import Databases
from tests.faults.report import report
from tests.faults.suite import Suite

KILLED = (("volunteer", 1 / 3), ("notices", 2 / 3))


def test_replica_killed_mid_flow(amqp_uri, vhost, templates, gateway, tmp_path):
    env = {**scenario.FAST_TIMERS, **gateway.env()}
    replicas = {"volunteer": 2, "notices": 2}
    with Suite(
        amqp_uri,
        services=("grid", "notices", "volunteer"),
        replicas=replicas,
        env=env,
        templates=templates,
        log_dir=str(tmp_path),
    ) as suite:
        db = Databases(suite.database_urls)
        try:
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households())
                tagging = eventlet.spawn(scenario.tag_all, rpc, people.residents)
                fault_ended = time.monotonic()
                for name, at in KILLED:
                    scenario.wait_for_progress(lambda: scenario.quarantine_progress(db, people), at)
                    suite.kill(name, index=1)
                    fault_ended = time.monotonic()
                sent = tagging.wait()
            tallies, last_change, settled = scenario.settle_quarantine(db, vhost, gateway, people)
            problems = scenario.service_problems(suite, gateway)
            if not settled:
                problems.append(scenario.unsettled(db, vhost))
            info = [
                "replicas: volunteer 2, notices 2; SIGKILLed for good: "
                + ", ".join(f"{name}-1 at {at:.0%}" for name, at in KILLED),
                f"help requests by status: {dict(effects.request_statuses(db))}",
            ]
            info += [scenario.gateway_info(gateway, db), f"service logs: {suite.log_dir}"]
            report("replica_killed", sent, tallies, max(0.0, last_change - fault_ended), problems, info)
        finally:
            db.close()
