"""What the volunteer bench (``bench.volunteer_matching``) checks of its requests, and the queue through which
it sees the offers' notifications arrive.

An offer's notification is a ``send_direct`` command that the request's transaction records in the
volunteer's outbox and its relay publishes after the commit to ``notices.commands``; notices is not run, so
``CommandTap`` binds a queue of the bench's own there in place of notices' command queue.
"""

import time
import uuid
from collections import Counter, defaultdict

import eventlet
from kombu import Connection, Exchange, Queue

from bench import harness
from bench.harness import one_row
from services.notices.client import SEND_DIRECT, SERVICE as NOTICES
from services.volunteer import matching
from shared.commands import command_exchange_name

COMMANDS_EXCHANGE = command_exchange_name(NOTICES)


class CommandTap:
    """A queue of this process on ``notices.commands`` for ``send_direct``, in place of notices' own: the
    volunteer's relay publishes the offer commands to it as to a running notices (a command no queue takes is
    returned and retried later), and ``drain`` reads back the origins of those that arrived."""

    def __init__(self, amqp_uri):
        self.connection = Connection(amqp_uri)
        exchange = Exchange(COMMANDS_EXCHANGE, type="topic", durable=True)  # as the relay declares it
        # exclusive: deleted with this connection, whatever happens to the run
        self.queue = Queue(
            f"bench-volunteer-{uuid.uuid4().hex[:12]}", exchange, routing_key=SEND_DIRECT, exclusive=True
        )

    def start(self):
        self.queue(self.connection.default_channel).declare()

    def drain(self):
        bound, origins = self.queue(self.connection.default_channel), []
        while (message := bound.get(no_ack=True)) is not None:
            origins.append(message.payload["data"]["origin"])
        return origins

    def stop(self):
        self.connection.release()


def wait_commands_published(volunteer_url, timeout=30.0):
    """Wait until the relay has published every command of the outbox (or ``timeout``); how many are left."""
    deadline = time.monotonic() + timeout
    with harness.cursor(volunteer_url) as cur:
        while True:
            cur.execute("SELECT count(*) FROM outbox_events WHERE destination IS NOT NULL AND published_at IS NULL")
            left = one_row(cur)[0]
            if not left or time.monotonic() > deadline:
                return left
            eventlet.sleep(0.2)


OFFERS = """SELECT r.id, r.status, r.unit_path, r.household_id, o.id, o.status, v.id, v.household_id, v.resident_id,
                   v.home_path, v.active, v.max_active_tasks,
                   (SELECT count(*) FROM help_requests m WHERE m.volunteer_id = v.id AND m.status = 'matched')
            FROM help_requests r LEFT JOIN offers o ON o.request_id = r.id
                 LEFT JOIN volunteers v ON v.id = o.volunteer_id WHERE r.id = ANY(%s) ORDER BY r.id"""
QUARANTINED = """SELECT resident_id FROM resident_tags WHERE tag = 'quarantined' AND resident_id = ANY(%s)
                 AND (until IS NULL OR until > now())"""


def verify(volunteer_url, grid_url, request_ids, specs, received):
    """The checks of the run's requests (``received``: the origins of the commands the CommandTap got)."""
    with harness.cursor(volunteer_url) as cur:
        cur.execute(OFFERS, (request_ids,))
        rows = cur.fetchall()
        cur.execute("SELECT resident_id, home_path FROM volunteers WHERE resident_id IS NOT NULL AND active")
        linked_active = cur.fetchall()
        cur.execute(
            "SELECT payload->'data'->>'origin', payload->'data'->'resident_ids', published_at IS NOT NULL "
            "FROM outbox_events WHERE destination = %s AND event_type = %s",
            (COMMANDS_EXCHANGE, SEND_DIRECT),
        )
        commands = cur.fetchall()
    offered = [row for row in rows if row[4] is not None]
    residents = list({row[8] for row in offered if row[8]} | {resident for resident, _path in linked_active})
    with harness.cursor(grid_url) as cur:
        cur.execute(QUARANTINED, (residents,))
        quarantined = {row[0] for row in cur.fetchall()}
    problems = []
    for request, status, _path, household, offer, offer_status, volunteer, v_household, v_resident, *rest in rows:
        _home, active, limit, load_now = rest
        if status not in ("offered", "unmatched"):
            problems.append(f"request {request} ended {status}")
        if status == "offered" and offer_status != "pending":
            problems.append(f"request {request} offered without a pending offer")
        if offer is not None and household is not None and v_household == household:
            problems.append(f"request {request} offered to volunteer {volunteer} of the requester's household")
        if offer is not None and v_resident in quarantined:
            problems.append(f"request {request} offered to quarantined volunteer {volunteer}")
        if offer is not None and (not active or load_now >= limit):
            problems.append(f"request {request} offered to volunteer {volunteer} ({active=}, {load_now}/{limit} tasks)")
    if any(n > 1 for n in Counter(row[0] for row in offered).values()):
        problems.append("more than one offer for a request (OFFER_FANOUT is 1)")
    depths = {6: "small grid", 5: "medium grid", 4: "large grid", 3: "community", 2: "street", 1: "district"}
    distance = Counter(f"same {depths.get(matching.shared_depth(row[9], row[2]), '?')}" for row in offered)
    grids_with_quarantined = {path for resident, path in linked_active if resident in quarantined}
    notices = check_commands([(row[4], row[8]) for row in offered], commands, received)
    return {
        "statuses": dict(Counter(row[1] for row in rows)),
        "offer_distance": dict(distance),
        "problems": problems + notices.pop("problems"),
        "household_exclusion_cases": sum(spec["variant"] == "volunteer_household" for spec in specs),
        "requests_in_grids_with_a_quarantined_volunteer": sum(spec["path"] in grids_with_quarantined for spec in specs),
        "offer_commands": notices,
    }


def check_commands(offers, commands, received):
    """Each (offer id, the volunteer's resident id or None) of ``offers`` must have exactly one ``send_direct``
    command to that resident in the outbox if the volunteer is a resident (none otherwise), published, and
    received once. ``commands``: (origin, resident_ids, published) of every one in the outbox (an origin is
    unique across them all); ``received``: the origins that arrived."""
    by_origin = defaultdict(list)
    for origin, resident_ids, published in commands:
        by_origin[origin].append((resident_ids, published))
    arrived, found = Counter(received), Counter[str]()
    for offer_id, resident_id in offers:
        rows = by_origin.get(f"volunteer:offer/{offer_id}", [])
        if resident_id is None:
            found["for a volunteer who is no resident"] += bool(rows)
            continue
        found["expected"] += 1
        found["recorded" if rows else "missing"] += 1
        found["not to the volunteer"] += any(ids != [str(resident_id)] for ids, _published in rows)
        if rows and all(published for _ids, published in rows):
            found["published"] += 1
            found["received"] += arrived[f"volunteer:offer/{offer_id}"] == 1
    repeated = sorted(origin for origin, rows in by_origin.items() if len(rows) > 1)
    problems = [] if found["expected"] else ["no offer to a volunteer who is a resident: the commands went unchecked"]
    if found["missing"]:
        problems.append(f"{found['missing']} linked volunteers offered but not notified (no send_direct command)")
    if repeated:
        problems.append(f"{len(repeated)} origins with more than one send_direct command (e.g. {repeated[0]})")
    problems += [
        f"{found[what]} offer commands {what}"
        for what in ("not to the volunteer", "for a volunteer who is no resident")
        if found[what]
    ]
    if found["published"] < found["recorded"]:
        problems.append(f"{found['recorded'] - found['published']} offer commands left unpublished in the outbox")
    if found["received"] < found["published"]:
        problems.append(f"{found['published'] - found['received']} published offer commands not received once")
    counts = {key: found[key] for key in ("recorded", "published", "received")}
    return {"linked_offers": found["expected"], **counts, "all_commands_in_outbox": len(commands), "problems": problems}
