"""get_unit's unit cache (services/grid/unit_cache.py) with two grid replicas on a real RabbitMQ and
PostgreSQL: while units move and close, many greenthreads read them from the replica that writes, and
none of their reads that began after a write returned shows the unit as it was before it; the other
replica serves the change once it has handled the write's event (waited for, never slept on)."""

import eventlet
import eventlet.event
import pytest
from sqlalchemy import create_engine, text

from services.grid.service import GridService
from services.grid.unit_cache import UnitCacheProvider
from shared.db import normalise_url
from tests.support import free_port, token, wait_until

READERS = 12
ROOT = token("admin", sub="root")


@pytest.fixture
def replica_b(grid, grid_config, container_factory):
    """A second grid replica: same database, same queues, a unit cache of its own."""
    container = container_factory(GridService, {**grid_config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}"})
    container.start()
    yield container
    container.kill()


def unit_cache(container):
    return next(d for d in container.dependencies if isinstance(d, UnitCacheProvider)).cache


def on(container, method, **kwargs):
    """``method`` run by this replica's worker (not through the RPC queue both replicas consume). Not
    nameko's entrypoint_hook: it patches the container per call, and many at once nest too deep."""
    entrypoint = next(e for e in container.entrypoints if e.method_name == method)
    done = eventlet.event.Event()

    def handle_result(_worker_ctx, result, exc_info):
        if exc_info is None:
            done.send(result)
        else:
            done.send_exception(exc_info[1])
        return result, exc_info

    container.spawn_worker(entrypoint, (), kwargs, context_data={"auth_token": ROOT}, handle_result=handle_result)
    return done.wait()


def seen(reply):
    return tuple(reply["path"]), reply["closed"]


def test_a_write_is_seen_by_its_replica_at_once_and_by_the_other_once_its_event_is_in(
    grid, replica_b, admin, district, grid_db
):
    street = district["street"]
    communities = [district["community_a"], district["community_b"]]
    communities += [admin.create_unit(parent_id=street, level="community", name=f"C{i}")["id"] for i in range(2)]
    watched = [district["large_a"], district["medium_a"], district["small_a"], district["small_b"]]
    engine = create_engine(normalise_url(grid_db))

    def database_state():
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, path, closed FROM units WHERE id = ANY(:ids)"), {"ids": [int(u) for u in watched]}
            )
            return {str(i): (tuple(p.strip("/").split("/")), c) for i, p, c in rows}

    # states[k]: what the database holds once write k has returned (0: before any)
    states = [database_state()]
    writes = {"started": 0, "done": 0}
    reads, running = [], [True]

    def reader(index):
        while running[0]:
            unit_id = watched[index % len(watched)]
            index += 1
            started, done = writes["started"], writes["done"]
            reply = on(grid, "get_unit", unit_id=unit_id)
            reads.append((done if started == done else None, writes["started"], unit_id, seen(reply)))

    readers = [eventlet.spawn(reader, i) for i in range(READERS)]
    plan = [("move", communities[k % 4]) for k in range(1, 13)]
    plan[4:4] = [("close", district["small_a"])]
    plan[9:9] = [("close", district["medium_a"]), ("close", district["small_b"])]
    try:
        for step, (kind, target) in enumerate(plan, start=1):
            before = len(reads)
            wait_until(lambda before=before: len(reads) >= before + READERS, message="readers stalled")
            writes["started"] += 1
            if kind == "move":
                on(grid, "move_unit", unit_id=district["large_a"], new_parent_id=target)
            else:
                on(grid, "close_unit", unit_id=target)
            states.append(database_state())
            writes["done"] += 1
            want = states[step]
            wait_until(
                lambda want=want: all(seen(on(replica_b, "get_unit", unit_id=u)) == want[u] for u in watched),
                message=f"replica b did not converge after write {step} ({kind})",
            )
        before = len(reads)
        wait_until(lambda: len(reads) >= before + READERS, message="readers stalled")
    finally:
        running[0] = False
        for thread in readers:
            thread.wait()
        engine.dispose()

    assert states[-1][district["small_a"]][1] and states[-1][district["medium_a"]][1]  # closes happened
    assert len({states[k][district["small_a"]][0] for k in range(len(states))}) > 3  # so did the moves
    checked = stale = 0
    for done, started_by_end, unit_id, got in reads:
        if done is None:
            continue  # began during a write: either state may show
        # Began after write `done` returned; writes up to `started_by_end` may have begun before it ended.
        allowed = {states[k][unit_id] for k in range(done, min(started_by_end, len(states) - 1) + 1)}
        checked += 1
        stale += got not in allowed
        assert got in allowed, f"unit {unit_id}: read {got} after write {done} returned; allowed {allowed}"
    assert stale == 0 and checked > len(plan) * READERS // 2
    # Both replicas served from their caches (not only from the database).
    assert unit_cache(grid).hits > checked // 2 and unit_cache(replica_b).hits > 0


def test_a_replica_whose_event_is_in_drops_the_moved_units_descendants(grid, replica_b, admin, district):
    cache_b = unit_cache(replica_b)
    small = on(replica_b, "get_unit", unit_id=district["small_a"])

    def cached():  # a read while the district's unit_created events still come in keeps nothing
        return on(replica_b, "get_unit", unit_id=district["small_a"]) and cache_b.get(int(district["small_a"]))

    wait_until(cached, message="replica b never cached the unit")
    on(grid, "move_unit", unit_id=district["large_a"], new_parent_id=district["community_b"])
    wait_until(lambda: cache_b.get(int(district["small_a"])) is None, message="replica b kept the old path")
    moved = on(replica_b, "get_unit", unit_id=district["small_a"])
    assert moved["path"][2] == district["community_b"] and small["path"][2] == district["community_a"]
