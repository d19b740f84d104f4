"""One node of a 3-node RabbitMQ cluster stopped under load, with quorum queues (production's).

The cluster is three private nodes on loopback (tests/faults/brokers.py). The services declare
their durable queues as quorum queues (``GRASSROOTS_QUEUE_TYPE=quorum``, shared.queues) and are
given every node in ``AMQP_URI`` as a kombu failover list (``amqp://…:p1/;amqp://…:p2/;…``): each
connection goes to the first node that answers. The first node — the one every connection and
queue leader starts on — is stopped for ``FAULTS_NODE_DOWN_SECONDS`` (30) while callers read and
write and a quarantine batch flows, then started again. Then:

- no process exits, and every service answers RPC again within 30 s of the node's stop, through
  the other nodes (``recovery_s`` is that time);
- once the flow has drained: each caller write one incident and one mediation case, each
  quarantined household its instructions, care plan and requests once, each offer one message,
  each gateway delivery one post.
"""

import os
import time

import eventlet
import pytest

from tests.faults import effects, population, scenario
from tests.faults.broker_load import Load, caller_tallies, wait_for
from tests.faults.brokers import private_cluster
from tests.faults.effects import Databases
from tests.faults.report import report
from tests.faults.suite import Suite, unique

DOWN_SECONDS = float(os.environ.get("FAULTS_NODE_DOWN_SECONDS", "30"))
ANSWER_WITHIN = 30.0
HOUSEHOLDS = 40


@pytest.fixture
def cluster():
    with private_cluster(3) as started:
        yield started


def quorum_queues(cluster):
    """{name: type} of the services' durable queues, from the management API. Reply queues and the grid
    replicas' own broadcast queues (services/grid/unit_cache.py: exclusive, auto-delete, gone with their
    connection) are not durable: nothing waits in them for another consumer."""
    node = next(node for node in cluster.nodes if node.running)
    rows = node.api("/api/queues/%2F?columns=name,type,durable") or []
    return {
        row["name"]: row.get("type") for row in rows if row.get("durable") and not row["name"].startswith("rpc.reply")
    }


def test_cluster_node_stopped_under_load(cluster, templates, gateway):
    env = {**scenario.FAST_TIMERS, **gateway.env(), "GRASSROOTS_QUEUE_TYPE": "quorum"}
    stopped = cluster.nodes[0]
    with Suite(cluster.amqp_uri, env=env, templates=templates) as suite:
        db = Databases(suite.database_urls)
        load = None
        try:
            classic = {name: kind for name, kind in quorum_queues(cluster).items() if kind != "quorum"}
            assert not classic, f"durable queues that are not quorum queues: {classic}"
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households(HOUSEHOLDS))
            load = Load(suite.amqp_uri, people, unique("cluster")).start()
            wait_for(lambda: len(load.tagged) >= 10 and len(load.written) >= 5, 120, "no load before the fault")

            stopped.stop()
            down = time.monotonic()
            for name in suite.services:
                suite.wait_answering(name, timeout=120)
            recovery = time.monotonic() - down
            eventlet.sleep(max(0.0, down + DOWN_SECONDS - time.monotonic()))  # the fault's length, not a verdict
            stopped.start()
            back = time.monotonic()
            running = cluster.running_nodes()

            wait_for(lambda: len(load.tagged) == len(people.residents), 300, "the tags were not all answered")
            load.stop()
            tallies, last_change, settled = effects.settle(
                lambda: (
                    caller_tallies(db, load)
                    + effects.quarantine_tallies(db, gateway, load.households_tagged(), with_care=True)
                ),
                lambda tallies: not any(t.lost for t in tallies),
                timeout=scenario.SETTLE_SECONDS,
                quiet=scenario.QUIET_SECONDS,
                idle=lambda: effects.pending_work(db, cluster),
            )
            problems = scenario.service_problems(suite, gateway)
            problems += [f"{r.service}-{r.index} exited {len(r.exits)}x" for r in suite.all_replicas() if r.exits]
            if recovery > ANSWER_WITHIN:
                problems.append(f"the services answered {recovery:.1f} s after the node's stop (> {ANSWER_WITHIN:g})")
            if len(running) != len(cluster.nodes):
                problems.append(f"the stopped node did not rejoin: running {running}")
            if not settled:
                problems.append(f"effects still changing after {scenario.SETTLE_SECONDS:g} s")
            info = [
                f"node {stopped.name} down {back - down:.1f} s (started again, taking logins, at the end); "
                f"every service answered through the others {recovery:.1f} s after its stop",
                f"effects complete {max(0.0, last_change - down):.1f} s after the stop",
                f"reads {sum(load.reads.values())}, writes {len(load.written)}, tags {len(load.tagged)}; "
                f"failed attempts retried: {dict(load.failures)}",
            ]
            report("cluster_node_stopped_quorum", load.sent, tallies, recovery, problems, info)
        finally:
            if load is not None:
                load.kill()
            db.close()
