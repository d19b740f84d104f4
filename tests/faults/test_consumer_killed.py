"""Consumers killed mid-batch: notices and volunteer SIGKILLed 4 times (restarted each time) while a
batch of quarantine tags flows through them.

Each household must get its instructions once (notices, origin ``quarantine:household/…``), every
delivery must reach the gateway once (counted by Idempotency-Key), and each household one care plan
and one request of each kind (volunteer), each offer one ``volunteer_offer`` message. Issue 13 saw
1,072 offer messages for 1,000 offers (send_direct inside the handler's open transaction) and 160 of
1,000 deliveries posted twice (a batch posted, then marked sent in a later commit).
"""

import time

import eventlet

from tests.faults import effects, population, scenario
from tests.faults.effects import Databases
from tests.faults.report import report
from tests.faults.suite import Suite

KILLS = 4
CONSUMERS = ("notices", "volunteer")


def test_consumers_killed_mid_batch(amqp_uri, vhost, templates, gateway, tmp_path):
    env = {**scenario.FAST_TIMERS, **gateway.env()}
    with Suite(
        amqp_uri, services=("grid", "notices", "volunteer"), env=env, templates=templates, log_dir=str(tmp_path)
    ) as suite:
        db = Databases(suite.database_urls)
        try:
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households())
                tagging = eventlet.spawn(scenario.tag_all, rpc, people.residents)
                fault_ended = time.monotonic()
                for kill in range(KILLS):
                    # Kills spread over the batch: at 20, 40, 60 and 80 % of its instructions and requests.
                    scenario.wait_for_progress(
                        lambda: scenario.quarantine_progress(db, people), (kill + 1) / (KILLS + 1)
                    )
                    for name in CONSUMERS:
                        suite.kill(name)
                    for name in CONSUMERS:
                        suite.start_replica(name)
                    fault_ended = time.monotonic()
                    for name in CONSUMERS:
                        suite.wait_answering(name, timeout=120)
                sent = tagging.wait()
            tallies, last_change, settled = scenario.settle_quarantine(db, vhost, gateway, people)
            recovery = max(0.0, last_change - fault_ended)
            problems = scenario.service_problems(suite, gateway)
            if not settled:
                problems.append(scenario.unsettled(db, vhost))
            info = [f"{name} SIGKILLed {len(suite.replica(name).exits)}x" for name in CONSUMERS]
            info.append(f"help requests by status: {dict(effects.request_statuses(db))}")
            info.append(f"deliveries by status: {dict(effects.delivery_statuses(db))}")
            info += [scenario.gateway_info(gateway, db), f"service logs: {suite.log_dir}"]
            report("consumer_killed_mid_batch", sent, tallies, recovery, problems, info)
        finally:
            db.close()
