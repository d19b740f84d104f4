"""``grassroots deadletters list|replay``: see what was dead-lettered, and move it back (issue 13).

Nothing read or replayed a ``.dead`` queue: after an outage the operator had the management UI's
"Get messages" and a shovel. Here:

- ``list`` finds the dead queues, and shows per queue how many messages it holds and, per message,
  why it was parked, which event (the CloudEvents ``id``, ``type`` and ``subject`` — never ``data``),
  how many attempts, when, and whether it can be replayed;
- ``replay`` moves messages of ``<queue>.dead`` back to ``<queue>`` through the default exchange,
  with a fresh retry budget: every ``x-grassroots-*`` header goes (and anything else but
  ``nameko.call_id_stack``). Each copy is published with publisher confirms and ``mandatory``, and
  the dead one acked only after the confirm: an interrupted run loses nothing (at worst a message
  is in both queues, and ``shared.endpoints.on_event`` runs an event id once). A run reads no more
  than the queue held when it started, and holds what it skips unacknowledged until it ends, so
  nothing is read twice and nothing loops; what it skipped goes back when it ends.
  RPC dead letters (``rpc-<service>.dead``) and events refused unread keep no body: never replayed.

Dead queues are found through the management HTTP API — AMQP cannot list queues. When it cannot be
reached (a broker user without the ``management`` tag, a closed port), ``list`` and ``replay --all``
fall back to the queues the suite's code declares (RPC, event handler and command queues) and check
each with a passive declare; ``--queue`` needs no discovery at all. Counts and messages are always read over AMQP: live
(the management API's figures lag by seconds) and with the same credentials the services use.
"""

import base64
import contextlib
import datetime as dt
import inspect
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from rich.text import Text

from tools.cli import EXIT_REFUSED, EXIT_UNREACHABLE, CliError
from tools.cli.connect import add_amqp_option, amqp_uri, broker_error, redact
from tools.cli.output import print_json

DEAD_SUFFIX = ".dead"
# The headers shared.handlers and shared.rpc write (tests/unit/test_deadletters_cli.py checks they agree).
OUR_HEADER_PREFIX = "x-grassroots-"
REASON_HEADER = "x-grassroots-dead-reason"
ATTEMPT_HEADER = "x-grassroots-attempt"
BODY_BYTES_HEADER = "x-grassroots-body-bytes"
DEAD_AT_HEADER = "x-grassroots-dead-at"
METHOD_HEADER = "x-grassroots-method"
# A quorum queue counts the times a message was handed out and given back; RabbitMQ 4.0-4.2 drop it at
# the queue's delivery limit (20 unless set otherwise), and each listing hands it out once more.
DELIVERY_COUNT_HEADER = "x-delivery-count"
CALL_ID_STACK_HEADER = "nameko.call_id_stack"
# What a replayed message carries besides its body: the call chain, for the logs. Nothing else.
REPLAYED_HEADERS = (CALL_ID_STACK_HEADER,)

MANAGEMENT_URL_ENV = "GRASSROOTS_MANAGEMENT_URL"
MANAGEMENT_TIMEOUT = 5.0
SETTLE_TIMEOUT = 2.0  # seconds to wait for a quorum queue to take back what a listing read
CONFIRM_TIMEOUT = 30.0  # seconds to wait for the broker's confirm of one replayed message
DEFAULT_LIST_LIMIT = 20
TEXT_LIMIT = 200  # characters of any one field shown
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
# Why a dead letter cannot be replayed: it has no body to replay.
RPC_REQUEST = "RPC request, kept without its body"
REFUSED_UNREAD = "refused unread, kept without its body"


# ---- pure parts ------------------------------------------------------------------


@dataclass(frozen=True)
class DeadQueue:
    """A ``.dead`` queue, what it belongs to (``kind``: event, command, rpc or other) and where a
    replay sends its messages (``target``)."""

    name: str
    target: str
    kind: str
    service: str | None = None
    handler: str | None = None

    @property
    def replayable(self):
        return self.kind != "rpc"


def dead_queue(name):
    """The dead queue of ``name`` (a queue, or its ``.dead`` queue), classified by its name:
    ``evt-<source>-<type>--<service>.<method>``, ``cmd-<service>-<command>``, ``rpc-<service>``."""
    target = name[: -len(DEAD_SUFFIX)] if name.endswith(DEAD_SUFFIX) else name
    dead = f"{target}{DEAD_SUFFIX}"
    if target.startswith("rpc-") and len(target) > 4:
        return DeadQueue(dead, target, "rpc", service=target[4:])
    if target.startswith("evt-") and "--" in target:
        service, _, method = target.rsplit("--", 1)[1].partition(".")
        return DeadQueue(dead, target, "event", service=service or None, handler=method or None)
    if target.startswith("cmd-") and "-" in target[4:]:
        service, _, command = target[4:].partition("-")
        return DeadQueue(dead, target, "command", service=service or None, handler=command or None)
    return DeadQueue(dead, target, "other")


def clean(value, limit=TEXT_LIMIT):
    """``value`` as one line of printable text, at most ``limit`` characters; None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def envelope_of(body):
    """The decoded body when it is a JSON object (a CloudEvents envelope), else None."""
    if not body:
        return None
    try:
        value = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def time_text(value):
    """A header or ``timestamp`` property as ISO text (UTC when it carries a zone), or None."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat(timespec="seconds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")
    return clean(value, 40)


@dataclass
class Letter:
    """What ``list`` shows of one dead letter: never the event's ``data``, nor any other header."""

    position: int
    id: str | None
    type: str | None
    subject: str | None
    method: str | None
    reason: str | None
    attempts: int | None
    dead_at: str | None
    body_bytes: int
    replayable: bool
    not_replayable_because: str | None = None
    read_before: int | None = None  # a quorum queue's x-delivery-count


def describe(queue, headers, body, properties=None, position=1):
    """A ``Letter`` for a message of ``queue`` (a DeadQueue) with these headers, body and properties."""
    headers = headers or {}
    properties = properties or {}
    body = body or b""
    envelope = envelope_of(body) or {}
    attempts = headers.get(ATTEMPT_HEADER)
    reads = headers.get(DELIVERY_COUNT_HEADER)
    why_not = None
    if queue.kind == "rpc":
        why_not = RPC_REQUEST
    elif BODY_BYTES_HEADER in headers or not body:
        why_not = REFUSED_UNREAD
    return Letter(
        position=position,
        id=clean(envelope.get("id"), 64),
        type=clean(envelope.get("type"), 100),
        subject=clean(envelope.get("subject"), 300),
        method=clean(headers.get(METHOD_HEADER), 255),
        reason=clean(headers.get(REASON_HEADER), 500),
        attempts=attempts if type(attempts) is int else None,
        dead_at=time_text(headers.get(DEAD_AT_HEADER) or properties.get("timestamp")),
        body_bytes=len(body),
        replayable=why_not is None,
        not_replayable_because=why_not,
        read_before=reads if type(reads) is int else None,
    )


def replay_headers(headers):
    """The headers a replayed message carries: a valid call id stack and nothing else — no
    ``x-grassroots-*`` header, so the handler counts its attempts from 1 again."""
    from shared.logs import call_id_stack_problem

    kept = {}
    for name in REPLAYED_HEADERS:
        value = (headers or {}).get(name)
        if value is not None and not call_id_stack_problem(value):
            kept[name] = value
    return kept


def management_url(explicit, amqp, environ=None):
    """The management API's base URL: ``--management-url``, else $GRASSROOTS_MANAGEMENT_URL, else the
    AMQP URI's host on port 15672 (15671 for amqps) — with the AMQP URI's credentials when it names none."""
    environ = os.environ if environ is None else environ
    url = explicit or environ.get(MANAGEMENT_URL_ENV)
    broker = urlsplit(amqp)
    if not url:
        secure = broker.scheme == "amqps"
        host = broker.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        url = f"{'https' if secure else 'http'}://{host}:{15671 if secure else 15672}"
    parts = urlsplit(url)
    if parts.username is None and broker.username is not None:
        credentials = f"{broker.username}:{broker.password or ''}"
        parts = parts._replace(netloc=f"{credentials}@{parts.netloc}")
    return urlunsplit(parts._replace(path=parts.path.rstrip("/"), query="", fragment=""))


def virtual_host(amqp):
    """The vhost an AMQP URI names (kombu's reading: none or ``/`` is ``/``)."""
    path = urlsplit(amqp).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def selected(queues, services=None, names=None):
    """The dead queues to show or replay, sorted: those of ``names`` (queues or their dead queues),
    else every one of ``services`` (all when None)."""
    if names:
        wanted = {dead_queue(name).name for name in names}
        return sorted((q for q in queues if q.name in wanted), key=lambda q: q.name)
    return sorted((q for q in queues if not services or q.service in services), key=lambda q: q.name)


# ---- what the commands print ---------------------------------------------------------------------


def queue_title(queue, count):
    line = Text()
    line.append(queue.name, style="bold")
    line.append(f"  {count} message{'s' if count != 1 else ''}" if count is not None else "  (no such queue)")
    if queue.kind == "rpc":
        line.append(f"  RPC requests to {queue.service} (list only: kept without their bodies)", style="dim")
    elif queue.kind in ("event", "command"):
        what = "event handler" if queue.kind == "event" else "command"
        line.append(f"  {what} {queue.service}.{queue.handler}; replays to {queue.target}", style="dim")
    else:
        line.append(f"  replays to {queue.target}", style="dim")
    return line


def letter_line(letter):
    line = Text("  ")
    line.append(f"{letter.position:>3}  ")
    if letter.type or letter.id:
        line.append(letter.type or "-", style="bold magenta")
        line.append(f"  id {letter.id or '-'}")
        line.append(f"  subject {letter.subject or '-'}")
    elif letter.method:
        line.append(letter.method, style="bold magenta")
    else:
        line.append(f"(no event envelope, {letter.body_bytes} bytes)", style="yellow")
    line.append(f"  attempts {letter.attempts if letter.attempts is not None else '-'}")
    line.append(f"  dead at {letter.dead_at or '-'}")
    if letter.read_before:
        line.append(f"  read {letter.read_before} time{'s' if letter.read_before != 1 else ''} before")
    line.append("  ")
    if letter.replayable:
        line.append("replayable", style="green")
    else:
        line.append(f"not replayable ({letter.not_replayable_because})", style="yellow")
    line.append(f"\n       reason: {letter.reason or '-'}", style="dim")
    return line


@dataclass
class QueueListing:
    queue: DeadQueue
    messages: int | None
    letters: list[Letter] = field(default_factory=list)


def listing_json(listings, vhost):
    return {
        "vhost": vhost,
        "queues": [
            {
                "queue": item.queue.name,
                "target": item.queue.target,
                "kind": item.queue.kind,
                "service": item.queue.service,
                "handler": item.queue.handler,
                "messages": item.messages,
                "letters": [asdict(letter) for letter in item.letters],
            }
            for item in listings
        ],
    }


def render_listing(listings, limit):
    """The ``list`` text: each queue that holds messages (or was named), then its first ``limit`` letters."""
    lines = []
    total = sum(item.messages or 0 for item in listings)
    for item in listings:
        lines.append(queue_title(item.queue, item.messages))
        lines.extend(letter_line(letter) for letter in item.letters)
        hidden = (item.messages or 0) - len(item.letters)
        if hidden > 0 and limit:
            lines.append(Text(f"  … {hidden} more (--limit)", style="dim"))
    queues = sum(1 for item in listings if item.messages)
    lines.append(
        Text(f"{total} dead letter{'s' if total != 1 else ''} in {queues} queue{'s' if queues != 1 else ''}")
        if total
        else Text("no dead letters")
    )
    return lines


@dataclass
class Outcome:
    """What ``replay`` did with one dead queue."""

    queue: DeadQueue
    moved: int = 0
    skipped: Counter = field(default_factory=Counter)  # why not replayable -> how many
    unmatched: int = 0  # not the --event-id asked for
    error: str | None = None


def outcome_line(outcome, dry_run):
    line = Text()
    line.append(outcome.queue.name, style="bold")
    line.append(f" → {outcome.queue.target}: ")
    line.append(f"{'would move' if dry_run else 'moved'} {outcome.moved}", style="green" if outcome.moved else "")
    skipped = sum(outcome.skipped.values())
    line.append(f", skipped {skipped}")
    if skipped:
        line.append(" (" + "; ".join(f"{n} {why}" for why, n in sorted(outcome.skipped.items())) + ")", style="yellow")
    if outcome.unmatched:
        line.append(f", {outcome.unmatched} not the event asked for")
    if outcome.error:
        line.append(f"; stopped: {outcome.error}", style="bold red")
    return line


def outcomes_json(outcomes, dry_run):
    return {
        "dry_run": dry_run,
        "moved": sum(o.moved for o in outcomes),
        "skipped": sum(sum(o.skipped.values()) for o in outcomes),
        "queues": [
            {
                "queue": o.queue.name,
                "target": o.queue.target,
                "moved": o.moved,
                "skipped": dict(o.skipped),
                "unmatched": o.unmatched,
                "error": o.error,
            }
            for o in outcomes
        ],
    }


# ---- the command line ----------------------------------------------------------------------------


def count_arg(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_common_options(parser):
    parser.add_argument(
        "--service", action="append", metavar="NAME", help="only this service's dead queues (repeatable)"
    )
    parser.add_argument(
        "--queue",
        action="append",
        metavar="QUEUE",
        dest="queues",
        help="a handler's queue or its .dead queue (repeatable); needs no management API",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.add_argument(
        "--management-url",
        help=f"the RabbitMQ management API, to find the dead queues (default: ${MANAGEMENT_URL_ENV}, "
        "else the broker's host on port 15672, with the broker's credentials)",
    )
    add_amqp_option(parser)


def add_deadletters_command(commands):
    parser = commands.add_parser(
        "deadletters",
        help="list dead-lettered messages, or replay them to their queue",
        description="The messages event handlers and RPC consumers parked in <queue>.dead queues.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="each dead queue's count and its messages (why, which event, attempts, when)",
        description="Shows each dead queue holding messages and, per message, its reason, event type, "
        "id and subject (never its data), attempts, dead-at time and whether it can be replayed. "
        "Messages are read and given back, in order: nothing is removed.",
    )
    add_common_options(listing)
    listing.add_argument(
        "--limit",
        type=count_arg,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"messages shown per queue (default {DEFAULT_LIST_LIMIT}; 0: counts only)",
    )
    listing.set_defaults(handler=run_list)
    replay = actions.add_parser(
        "replay",
        help="move dead letters back to their queue, with a fresh retry budget",
        description="Moves messages from <queue>.dead back to <queue> (publisher confirms; the dead copy "
        "is removed only once the broker has the new one), without the x-grassroots-* headers. RPC dead "
        "letters and events refused unread (no body) are left in place and counted. Reads each queue once: "
        "safe to run again, never loops.",
    )
    add_common_options(replay)
    replay.add_argument("--all", action="store_true", help="every replayable dead queue (of --service, if given)")
    replay.add_argument("--limit", type=count_arg, metavar="N", help="move at most N messages in all")
    replay.add_argument("--event-id", metavar="ID", help="only the event with this CloudEvents id")
    replay.add_argument("--dry-run", action="store_true", help="count what would move; move nothing")
    replay.set_defaults(handler=run_replay)


def run_list(args, out, err):
    from amqp.exceptions import AMQPError

    uri = amqp_uri(args)
    listings = []
    with broker(uri) as connection:
        try:
            for queue in find_queues(connection, args, uri, err):
                count = queue_depth(connection, queue.name)
                if count is None and not args.queues:
                    continue  # vanished since it was listed
                letters = peek(connection, queue, args.limit, count) if count and args.limit else []
                listings.append(QueueListing(queue, count, letters))
        except (OSError, AMQPError) as exc:
            raise CliError(f"lost the broker: {exc}", EXIT_UNREACHABLE) from None
    if args.json:
        print_json(out, listing_json(listings, virtual_host(uri)))
        return 0
    shown = [item for item in listings if item.messages or args.queues]
    for line in render_listing(shown, args.limit):
        out.print(line, soft_wrap=True)
    return 0


def run_replay(args, out, err):
    if bool(args.queues) == bool(args.all):
        raise CliError("replay needs either --queue QUEUE or --all (with --service to pick services)")
    if args.limit == 0:
        raise CliError("--limit must be 1 or more")
    from amqp.exceptions import AMQPError

    uri = amqp_uri(args)
    outcomes: list[Outcome] = []
    interrupted = False
    lost = None
    with broker(uri) as connection:
        try:
            queues = find_queues(connection, args, uri, err)
        except (OSError, AMQPError) as exc:
            raise CliError(f"lost the broker: {exc}", EXIT_UNREACHABLE) from None
        refused = [queue.name for queue in queues if not queue.replayable]
        if args.queues and refused:
            raise CliError(
                f"{', '.join(refused)} holds RPC requests, parked without their bodies: they cannot be replayed "
                "(list them to find their sender)"
            )
        budget = args.limit
        try:
            for queue in queues:
                if budget is not None and budget <= 0:
                    break
                outcome = Outcome(queue)
                if not queue.replayable:  # counted, not read
                    outcome.skipped[RPC_REQUEST] = queue_depth(connection, queue.name) or 0
                    if outcome.skipped[RPC_REQUEST]:
                        outcomes.append(outcome)
                    continue
                outcomes.append(outcome)
                replay_queue(connection, outcome, budget, args.event_id, args.dry_run)
                if budget is not None:
                    budget -= outcome.moved
        except KeyboardInterrupt:
            interrupted = True
        except (OSError, AMQPError) as exc:  # what was not confirmed stays dead
            lost = exc
    if args.json:
        print_json(out, {**outcomes_json(outcomes, args.dry_run), "interrupted": interrupted})
    else:
        for outcome in outcomes:
            if outcome.moved or outcome.skipped or outcome.unmatched or outcome.error or args.queues:
                out.print(outcome_line(outcome, args.dry_run), soft_wrap=True)
        moved = sum(o.moved for o in outcomes)
        skipped = sum(sum(o.skipped.values()) for o in outcomes)
        verb = "would move" if args.dry_run else "moved"
        out.print(f"{verb} {moved}, skipped {skipped} in {len(outcomes)} dead queue(s)", soft_wrap=True)
    if lost is not None:
        raise CliError(f"lost the broker: {lost}; what was not confirmed stays in its dead queue", EXIT_UNREACHABLE)
    if interrupted:
        err.print(Text("interrupted: what was not confirmed stays in its dead queue", style="yellow"), soft_wrap=True)
        return 130
    return EXIT_REFUSED if any(o.error for o in outcomes) else 0


# ---- the broker ----------------------------------------------------------------------------------


@contextlib.contextmanager
def broker(uri):
    """A connected py-amqp connection (through kombu, which reads the URI)."""
    from amqp.exceptions import AMQPError
    from kombu import Connection

    from shared import amqp_wire

    amqp_wire.install()  # a header that is not UTF-8 must not stop the listing
    connection = Connection(uri, connect_timeout=5)
    try:
        try:
            connection.connect()
        except (OSError, AMQPError) as exc:
            raise broker_error(uri, exc) from None
        yield connection.connection
    finally:
        with contextlib.suppress(Exception):
            connection.release()


def queue_depth(connection, name):
    """Ready messages in ``name`` (live: a passive declare), or None when there is no such queue."""
    from amqp.exceptions import NotFound

    channel = connection.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    except NotFound:
        return None
    finally:
        with contextlib.suppress(Exception):  # a failed passive declare has closed it already
            channel.close()


def raw_channel(connection):
    channel = connection.channel()
    channel.auto_decode = False  # bodies as the bytes they are (replayed as they came)
    return channel


def settle(connection, name, expected, timeout=SETTLE_TIMEOUT):
    """Wait (a little) until ``name`` holds ``expected`` ready messages again after a channel gave some
    back: a classic queue has them back at once, a quorum queue a moment later — and a listing or
    replay run right after would count, and read, fewer."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(Exception):  # a lost connection: nothing to wait for
        while (queue_depth(connection, name) or 0) < expected and time.monotonic() < deadline:
            time.sleep(0.05)


def peek(connection, queue, limit, count):
    """The first ``limit`` messages of ``queue`` (which held ``count``) as Letters, all given back:
    they are read unacknowledged and the channel is closed, which requeues them."""
    channel = raw_channel(connection)
    letters = []
    try:
        for position in range(1, limit + 1):
            message = channel.basic_get(queue.name, no_ack=False)
            if message is None:
                break
            letters.append(describe(queue, message.headers, message.body, message.properties, position))
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    settle(connection, queue.name, count)
    return letters


def replay_queue(connection, outcome, limit, event_id, dry_run):
    """Move ``outcome.queue``'s replayable messages to its target, recording what happened in ``outcome``."""
    queue = outcome.queue
    initial = queue_depth(connection, queue.name)
    if not initial:
        return
    if queue_depth(connection, queue.target) is None:
        # The default exchange drops a message for a queue that does not exist (mandatory returns it):
        # the handler's queue comes back when its service starts.
        outcome.error = f"no queue {queue.target} (start its service first)"
        return
    source = raw_channel(connection)
    publisher = connection.channel()
    returned = []
    publisher.events["basic_return"].add(lambda exc, exchange, routing_key, message: returned.append(routing_key))
    try:
        move(source, publisher, returned, outcome, initial, limit, event_id, dry_run)
    finally:
        for channel in (source, publisher):
            with contextlib.suppress(Exception):
                channel.close()  # gives back what was skipped (or not confirmed)
    settle(connection, queue.name, initial if dry_run else initial - outcome.moved)


def move(source, publisher, returned, outcome, initial, limit, event_id, dry_run):
    """The replay of one queue: reads at most ``initial`` messages (what the queue held at the start),
    holding those it skips unacknowledged until the end, so that none is read twice and the queue
    is never chased; acks each moved one only once the broker confirmed its copy."""
    from amqp import Message
    from amqp.exceptions import AMQPError, MessageNacked

    queue = outcome.queue
    for _ in range(initial):
        if limit is not None and outcome.moved >= limit:
            return
        message = source.basic_get(queue.name, no_ack=False)
        if message is None:
            return
        letter = describe(queue, message.headers, message.body, message.properties)
        if not letter.replayable:
            outcome.skipped[letter.not_replayable_because] += 1
            continue
        if event_id is not None and letter.id != event_id:
            outcome.unmatched += 1
            continue
        if not dry_run:
            properties = message.properties or {}
            copy = Message(
                message.body,
                content_type=properties.get("content_type"),
                content_encoding=properties.get("content_encoding"),
                delivery_mode=2,
                application_headers=replay_headers(message.headers),
            )
            try:
                publisher.basic_publish_confirm(
                    copy, exchange="", routing_key=queue.target, mandatory=True, confirm_timeout=CONFIRM_TIMEOUT
                )
            except MessageNacked:
                outcome.error = "the broker refused a copy (nack): it stays dead"
                return
            except (OSError, AMQPError) as exc:
                outcome.error = f"no confirm from the broker ({type(exc).__name__}): it stays dead"
                return
            if returned:
                outcome.error = f"{queue.target} is gone: the message stays dead"
                return
            source.basic_ack(message.delivery_tag)
        outcome.moved += 1


# ---- finding the dead queues ---------------------------------------------------------------------


class ManagementUnavailable(Exception):
    pass


def management_queue_names(url, vhost, timeout=MANAGEMENT_TIMEOUT):
    """The names of every queue in ``vhost``, from the management API at ``url``."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    endpoint = urlunsplit(
        parts._replace(netloc=netloc, path=f"{parts.path}/api/queues/{quote(vhost, safe='')}", query="columns=name")
    )
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            queues = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ManagementUnavailable(f"HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise ManagementUnavailable(str(getattr(exc, "reason", exc))) from None
    if not isinstance(queues, list):
        raise ManagementUnavailable("not a list of queues")
    return [q["name"] for q in queues if isinstance(q, dict) and isinstance(q.get("name"), str)]


def declared_queue_names():
    """The queues the suite's code declares and dead-letters from: each service's RPC queue, event
    handler queues (nameko's names) and command queues."""
    from nameko.events import EventHandler
    from nameko.rpc import Rpc

    from tools.asyncapi import service_classes

    names = set()
    for service, cls in service_classes().items():
        for name in dir(cls):
            method = inspect.getattr_static(cls, name, None)
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, Rpc):
                    names.add(f"rpc-{service}")
                elif isinstance(entrypoint, EventHandler) and getattr(entrypoint, "command", None):
                    names.add(f"cmd-{service}-{entrypoint.command}")  # shared.commands.CommandHandler
                elif isinstance(entrypoint, EventHandler):
                    names.add(f"evt-{entrypoint.source_service}-{entrypoint.event_type}--{service}.{name}")
    return sorted(names)


def find_queues(connection, args, uri, err):
    """The dead queues ``args`` asks for: ``--queue`` as named; else those the management API lists
    (or, when it cannot be reached, those the code declares that exist), of ``--service`` if given."""
    if args.queues:
        return selected([dead_queue(name) for name in args.queues], names=args.queues)
    url = management_url(args.management_url, uri)
    try:
        names = [name for name in management_queue_names(url, virtual_host(uri)) if name.endswith(DEAD_SUFFIX)]
    except ManagementUnavailable as exc:
        err.print(
            Text(
                f"the management API at {redact(url)} cannot list the queues ({exc}); looking for the dead "
                "queues of the suite's own RPC, event handler and command queues instead (name others with --queue)",
                style="yellow",
            ),
            soft_wrap=True,
        )
        candidates = [dead_queue(name) for name in declared_queue_names()]
        names = [queue.name for queue in candidates if queue_depth(connection, queue.name) is not None]
    return selected([dead_queue(name) for name in names], services=args.service)
