"""The fault scenarios' settle (tests/faults/effects.py) must never return a count taken before the
suite went idle: a CI run once reported 14 messages lost that were posted between its last count and
its idle check (a claim's lease ran out, and the reclaim posted them)."""

from tests.faults.effects import settle


def test_settle_counts_again_after_the_suite_is_idle():
    # 14 deliveries wait for a claim's lease while the count stays at 1,186; the reclaim posts them
    # just before the idle check that finds nothing left in flight, so only a count taken after that
    # check has all 1,200.
    state = {"posted": 1186, "checks": 0}

    def in_flight():
        state["checks"] += 1
        if state["checks"] < 3:
            return 14
        state["posted"] = 1200  # posted and recorded between the last count and this check
        return 0

    value, _, settled = settle(lambda: state["posted"], None, timeout=60, quiet=0.0, idle=in_flight, interval=0)
    assert settled
    assert value == 1200


def test_settle_returns_the_count_when_nothing_changed_after_idle():
    counts = iter([5, 5, 5])
    value, _, settled = settle(lambda: next(counts), None, timeout=60, quiet=0.0, idle=lambda: 0, interval=0)
    assert (value, settled) == (5, True)
