"""Producer killed between commit and publish: grid SIGKILLed 5 times while clients call its writes
and its events flow to notices, volunteer and legal.

Two kinds of client call ``grid.report_incident`` (disputes with two parties, so legal opens a
mediation case for each): a careful one passes an ``idempotency_key`` and calls again with it after
a timeout; a plain one passes none and does not repeat itself, relying on the service to recognise
a redelivered request by its correlation id. Meanwhile households are quarantined. Every call must
make exactly one incident, every incident one mediation case, every household its instructions and
care once — whatever the relay republished (issue 13 saw 2 calls make 2 incidents each, and 261
extra copies of events).
"""

import time
import uuid

import eventlet

from tests.faults import effects, population, scenario
from tests.faults.effects import Databases, EventCopies
from tests.faults.report import Tally, report
from tests.faults.suite import Suite

KILLS = 5
CALLS = 200  # each kind of client: 100 with a key, 100 plain
KEYED_TIMEOUT = 10  # a careful client's patience before it asks again
PLAIN_TIMEOUT = 120  # a plain client waits for the redelivered request's reply


def test_producer_killed_between_commit_and_publish(amqp_uri, vhost, templates, gateway, tmp_path):
    env = {**scenario.FAST_TIMERS, **gateway.env()}
    with Suite(amqp_uri, env=env, templates=templates, log_dir=str(tmp_path)) as suite:
        db = Databases(suite.database_urls)
        copies = EventCopies(amqp_uri, "grid")
        try:
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households(100))
                keys_accepted = scenario.accepts_idempotency_keys(
                    rpc.grid.report_incident, unit_id=people.district["small_a"], category="other", description="probe"
                )
            run = uuid.uuid4().hex[:8]
            prefix = f"faults {run} "
            calls = [_incident_call(people, prefix, i) for i in range(CALLS)]
            keyed, plain = calls[: CALLS // 2], calls[CALLS // 2 :]
            if keys_accepted:
                for call in keyed:
                    call["idempotency_key"] = f"faults-{run}-{call['description'][-4:]}"
            with (
                suite.rpc(timeout=KEYED_TIMEOUT) as keyed_rpc,
                suite.rpc(timeout=PLAIN_TIMEOUT) as plain_rpc,
                suite.rpc() as tag_rpc,
            ):
                clients = [
                    eventlet.spawn(scenario.calls_until_answered, keyed_rpc.grid.report_incident, keyed),
                    eventlet.spawn(scenario.calls_until_answered, plain_rpc.grid.report_incident, plain, retry=False),
                    eventlet.spawn(scenario.tag_all, tag_rpc, people.residents),
                ]
                fault_ended = time.monotonic()
                for kill in range(KILLS):
                    scenario.wait_for_progress(
                        lambda: sum(effects.incidents_by_description(db, prefix).values()) / CALLS,
                        (kill + 1) / (KILLS + 1),
                    )
                    suite.kill("grid")
                    suite.start_replica("grid")
                    fault_ended = time.monotonic()
                    suite.wait_answering("grid", timeout=120)
                keyed_replies, plain_replies, tags = (client.wait() for client in clients)

            def measure():
                incidents = effects.incidents_by_description(db, prefix)
                incident_ids = [int(i) for (i,) in db.rows("grid", _IDS, p=f"{prefix}%")]
                return [
                    Tally.of("incidents", [c["description"] for c in calls], incidents),
                    Tally.of("mediation_cases", incident_ids, effects.mediation_incidents(db)),
                    *effects.quarantine_tallies(db, gateway, people.households),
                ]

            tallies, last_change, settled = effects.settle(
                measure,
                lambda tallies: not any(t.lost for t in tallies),
                timeout=scenario.SETTLE_SECONDS,
                quiet=scenario.QUIET_SECONDS,
                idle=lambda: effects.pending_work(db, vhost),
            )
            published = copies.count()
            problems = scenario.service_problems(suite, gateway)
            if not keys_accepted:
                problems.append("grid.report_incident refuses idempotency_key: the careful client retried without one")
            failed = [r for r in list(keyed_replies) + list(plain_replies) if isinstance(r, Exception)]
            if failed:
                problems.append(f"{len(failed)} client calls got no reply, e.g. {failed[0]!r}")
            if not settled:
                problems.append(scenario.unsettled(db, vhost))
            info = [
                f"grid SIGKILLed {len(suite.replica('grid').exits)}x; {CALLS // 2} keyed calls, "
                f"{CALLS // 2} plain calls, {tags} quarantine tags",
                f"grid events published {sum(published.values())} times for {len(published)} envelopes "
                f"({sum(published.values()) - len(published)} extra copies from the relay)",
            ]
            info += [scenario.gateway_info(gateway, db), f"service logs: {suite.log_dir}"]
            report(
                "producer_killed_after_commit",
                CALLS + tags,
                tallies,
                max(0.0, last_change - fault_ended),
                problems,
                info,
            )
        finally:
            copies.close()
            db.close()


_IDS = "SELECT id FROM incidents WHERE description LIKE :p"


def _incident_call(people, prefix, i):
    household = people.households[i % len(people.households)]
    return {
        "unit_id": people.units[household],
        "category": "dispute",
        "description": f"{prefix}{i:04d}",
        "party_resident_ids": people.members[household][:2],
    }
