"""What the fault scenarios share: fast timers, the quarantine batch, faults at points of progress.

Kept apart from the scenarios so that each test module reads as its story: build people, start a
flow, inject the fault, wait for the effects to settle, print the line.
"""

import datetime as dt
import os
import time

from services.notices.channels import HttpGateway
from services.notices.delivery import RECORD_EVERY
from shared.errors import ValidationError
from tests.faults import effects
from tests.faults.population import CHUNK

# Timers short enough that a scenario is seconds of work, not minutes; offers never expire during a
# scenario (an expired offer is re-offered: a legitimate second message that would blur the count).
FAST_TIMERS = {
    "NOTICES_DISPATCH_INTERVAL": "0.2",
    "NOTICES_PUBLISH_INTERVAL": "0.5",
    "NOTICES_HOUSEKEEPING_INTERVAL": "2",
    "NOTICES_DELIVERY_RETRY_BASE": "0.5",
    "VOLUNTEER_OFFER_TIMEOUT_SECONDS": "7200",
    "VOLUNTEER_OFFER_SWEEP_INTERVAL": "1",
    "GRID_HOUSEKEEPING_INTERVAL": "5",
}
SETTLE_SECONDS = float(os.environ.get("FAULTS_SETTLE_SECONDS", "300"))
QUIET_SECONDS = 5.0


def households(default=150):
    """How many households a batch quarantines (two tags each); FAULTS_HOUSEHOLDS overrides it."""
    return int(os.environ.get("FAULTS_HOUSEHOLDS", default))


def in_two_weeks():
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=14)).isoformat()


def calls_until_answered(method, kwargs_list, deadline_s=600, retry=True):
    """A careful client: calls ``method`` with each kwargs (CHUNK calls in flight at once) until each
    is answered. A call that times out or breaks while a process is killed is sent again with the
    same arguments (its idempotency key included) — unless ``retry`` is false (a call without a key
    is not safe to repeat): then its exception is its result. Returns the replies, or the typed
    client error (ValidationError, Conflict, …) a call got, in order. One proxy, one green thread:
    a standalone proxy's replies may not be awaited from two green threads at once."""
    from shared.errors import CLIENT_ERRORS

    results: list = [None] * len(kwargs_list)
    todo = list(range(len(kwargs_list)))
    deadline = time.monotonic() + deadline_s
    while todo:
        again = []
        for start in range(0, len(todo), CHUNK):
            batch = todo[start : start + CHUNK]
            pending = []
            for i in batch:
                try:
                    pending.append((i, method.call_async(**kwargs_list[i])))
                except Exception as broken:  # the proxy's connection broke: send it again
                    if retry:
                        again.append(i)
                    else:
                        results[i] = broken
            for i, reply in pending:
                try:
                    results[i] = reply.result()
                except CLIENT_ERRORS as answered:
                    results[i] = answered
                except Exception as unknown:  # a timeout, a lost connection: unknown outcome, ask again
                    if retry:
                        again.append(i)
                    else:
                        results[i] = unknown
        if again and time.monotonic() > deadline:
            raise AssertionError(f"{len(again)} calls unanswered after {deadline_s} s")
        if again:
            time.sleep(0.5)
        todo = sorted(again)
    return results


def tag_all(rpc, residents, **extra):
    """Tag every resident ``quarantined``; returns how many calls were made (one per resident)."""
    until = in_two_weeks()
    replies = calls_until_answered(
        rpc.grid.tag_resident,
        [{"resident_id": resident, "tag": "quarantined", "until": until, **extra} for resident in residents],
    )
    refused = [r for r in replies if isinstance(r, Exception)]
    assert not refused, f"{len(refused)} tags refused, e.g. {refused[0]!r}"
    return len(residents)


def quarantine_progress(db, people):
    """0–1: how far the batch's instructions and care requests have come."""
    done = len(effects.instruction_households(db)) + len(effects.care_requests(db))
    return done / (3 * len(people.households))


def wait_for_progress(measure, fraction, timeout=300):
    deadline = time.monotonic() + timeout
    while measure() < fraction:
        if time.monotonic() > deadline:
            raise AssertionError(f"the flow did not reach {fraction:.0%} within {timeout} s")
        time.sleep(0.2)


def accepts_idempotency_keys(method, **kwargs):
    """False when the write refuses the ``idempotency_key`` argument (an older service)."""
    try:
        method(**kwargs, idempotency_key="faults-probe-" + str(time.time_ns()))
    except ValidationError as refused:
        if "idempotency_key" in (refused.fields or {}):
            return False
        raise
    return True


def settle_quarantine(db, vhost, gateway, people, with_care=True, timeout=SETTLE_SECONDS):
    """Wait until every household's effects are there (or nothing more is in flight); returns
    (tallies, recovery seconds, settled)."""
    return effects.settle(
        lambda: effects.quarantine_tallies(db, gateway, people.households, with_care),
        lambda tallies: not any(t.lost for t in tallies),
        timeout=timeout,
        quiet=QUIET_SECONDS,
        idle=lambda: effects.pending_work(db, vhost),
    )


# What a dispatcher killed mid-post may leave posted but unrecorded: the posts in flight, and the
# outcomes not yet written (services/notices/delivery.py records them every RECORD_EVERY results or
# RECORD_SECONDS). Only those may be posted again, with the same key, once the claim's lease ran out.
REPOST_BOUND_PER_KILL = HttpGateway.concurrency + RECORD_EVERY
CLAIM_LEASE_SECONDS = 60


def repost_problems(suite, gateway):
    """Posts repeated under the same Idempotency-Key must come from dispatchers that died mid-post:
    never sooner than a claim's lease after the first post (else two dispatchers posted one delivery
    at once), and no more than the posts a killed dispatcher can have left unrecorded."""
    repeats = gateway.repeats()
    if not repeats:
        return []
    problems = []
    early = {key: gap for key, gap in repeats.items() if gap < CLAIM_LEASE_SECONDS * 0.95}
    if early:
        problems.append(f"{len(early)} keys posted again before a claim's lease ran out, e.g. {sorted(early)[:5]}")
    kills = sum(len(replica.exits) for replica in suite.replicas.get("notices", []))
    bound = kills * REPOST_BOUND_PER_KILL
    if gateway.duplicates() > bound:
        problems.append(f"{gateway.duplicates()} posts repeated, more than {kills} notices exits can leave ({bound})")
    return problems


def service_problems(suite, gateway=None):
    """What must never happen in any scenario besides lost or duplicated effects: a service that
    died by itself, a gateway post without its Idempotency-Key (or naming another delivery), a post
    repeated other than after a dispatcher died mid-post."""
    problems = [f"{name} exited by itself (status {code})" for name, code in suite.unexpected_exits().items()]
    if gateway is not None:
        problems += repost_problems(suite, gateway)
    if gateway is not None and gateway.keyless:
        problems.append(f"{gateway.keyless} gateway posts carried no Idempotency-Key header")
    if gateway is not None and gateway.mismatched:
        problems.append(f"{gateway.mismatched} gateway posts had an Idempotency-Key other than their delivery id")
    return problems


def unsettled(db, vhost):
    return f"still in flight after {SETTLE_SECONDS:g} s: {dict(effects.pending_detail(db, vhost))}"


def gateway_info(gateway, db=None):
    """One line on repeated posts: how many keys, and how long after the first post the repeat came
    (a claim's lease, 60 s by default, after a dispatcher died mid-post; seconds for a retry). With
    ``db``, a second line on deliveries the gateway never saw: their rows say where they stopped."""
    repeats = gateway.repeats()
    if not repeats:
        line = f"gateway: {gateway.count()} posts, no key posted twice"
    else:
        gaps = sorted(repeats.values())
        line = (
            f"gateway: {gateway.count()} posts, {len(repeats)} keys posted more than once, "
            f"the repeat {gaps[0]:.1f}–{gaps[-1]:.1f} s after the first post"
        )
    unposted = effects.unposted_deliveries(db, gateway) if db is not None else []
    if unposted:
        line += f"\n  never posted ({len(unposted)}), e.g. " + "; ".join(map(str, unposted[:5]))
    return line
