"""``grassroots tail``: follow the suite's events as they are published.

An exclusive, auto-deleted queue is bound to each ``<service>.events`` topic exchange (kombu,
no nameko), with routing key ``#`` or the exact event types asked for; glob patterns
(``incident_*``) bind ``#`` and are matched here. Only the envelope's own fields are printed
(time, source, type, subject, data) — never headers or anything else a message carries.
"""

import contextlib
import datetime as dt
import fnmatch
import json
import uuid

from rich.text import Text

from tools.cli import EXIT_UNREACHABLE, EXIT_USAGE, CliError
from tools.cli.connect import add_amqp_option, amqp_uri, broker_error

ENVELOPE_FIELDS = ("time", "source", "type", "subject", "data")
GLOB_CHARS = set("*?[")


def suite_services():
    from tools.suite import present_services

    return present_services()


def add_tail_command(commands):
    parser = commands.add_parser(
        "tail",
        help="print the suite's events as they happen (Ctrl-C stops)",
        description="Follow the events every service publishes on <service>.events: one line per "
        "event (time, source, type, subject, data) until Ctrl-C.",
    )
    parser.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help="a service to follow (repeatable; default: every service of the suite)",
    )
    parser.add_argument(
        "--type",
        action="append",
        metavar="PATTERN",
        dest="types",
        help="event types to show (repeatable; globs like 'incident_*' work)",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line instead")
    add_amqp_option(parser)
    parser.set_defaults(handler=run_tail)


def run_tail(args, out, err):
    if args.count is not None and args.count < 1:
        raise CliError("--count must be 1 or more")
    services = args.service or suite_services()
    uri = amqp_uri(args)
    shown = 0

    def show(body, exchange, routing_key):
        nonlocal shown
        shown += 1
        if args.json:
            out.print(
                json.dumps(envelope_fields(body), ensure_ascii=False, sort_keys=True, default=str),
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        else:
            out.print(format_event(body, exchange, routing_key), soft_wrap=True)

    def ready(names):
        types = ", ".join(args.types) if args.types else "all types"
        err.print(Text(f"following {', '.join(names)} ({types}); Ctrl-C stops", style="dim"), soft_wrap=True)

    try:
        follow(uri, services, args.types, args.count, show, ready)
    except KeyboardInterrupt:
        err.print(Text(f"stopped after {shown} event{'s' if shown != 1 else ''}", style="dim"), soft_wrap=True)
    return 0


# ---- pure parts ------------------------------------------------------------------


def routing_keys(patterns):
    """What to bind: ``#`` unless every pattern is an exact event type."""
    if not patterns or any(GLOB_CHARS & set(p) or p == "#" for p in patterns):
        return ["#"]
    return sorted(set(patterns))


def matches(event_type, patterns):
    return not patterns or "#" in patterns or any(fnmatch.fnmatchcase(str(event_type), pattern) for pattern in patterns)


def envelope_fields(body):
    """The printable fields of an envelope, and nothing else it may carry."""
    if not isinstance(body, dict):
        return {}
    return {name: body[name] for name in ENVELOPE_FIELDS if name in body}


def format_time(value):
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return (
        moment.strftime("%Y-%m-%d %H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}"
        + ("Z" if moment.tzinfo is not None else "")
    )


def compact(value):
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return "[" + ",".join(str(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def format_data(data):
    if isinstance(data, dict):
        return " ".join(f"{key}={compact(value)}" for key, value in data.items())
    return "" if data is None else compact(data)


def format_event(body, exchange=None, routing_key=None):
    """One readable line for an event envelope."""
    fields = envelope_fields(body)
    if "type" not in fields:
        where = f" on {exchange}" if exchange else ""
        return Text(
            f"(a message{where} with routing key {routing_key!r} that is not an event envelope)", style="yellow"
        )
    line = Text()
    line.append(format_time(fields.get("time", "-")), style="dim")
    line.append("  ")
    line.append(str(fields.get("source", "-")), style="cyan")
    line.append("  ")
    line.append(str(fields["type"]), style="bold magenta")
    line.append("  ")
    line.append(str(fields.get("subject") or "-"), style="bold")
    data = format_data(fields.get("data"))
    if data:
        line.append("  ")
        line.append(data)
    return line


# ---- the broker --------------------------------------------------------------------


def event_exchange(service):
    from kombu import Exchange

    # As nameko declares it (nameko.standalone.events.get_event_exchange with default config).
    return Exchange(f"{service}.events", type="topic", durable=True, auto_delete=False)


def check_exchanges(connection, services):
    """Exchanges that exist already; a missing one of a known service is fine (it will be declared)."""
    from amqp.exceptions import NotFound

    known = set(suite_services())
    for service in services:
        channel = connection.channel()
        try:
            event_exchange(service).declare(passive=True, channel=channel)
        except NotFound:
            if service not in known:
                raise CliError(
                    f"no exchange {service}.events on this broker: is {service!r} a service "
                    f"of the suite ({', '.join(sorted(known))})?",
                    EXIT_USAGE,
                ) from None
        finally:
            with contextlib.suppress(Exception):  # a passive declare that failed has closed it already
                channel.close()


def follow(uri, services, patterns, count, on_event, on_ready=None, poll_seconds=1.0):
    """Consume events until ``count`` were shown (forever if None); calls ``on_event(body, exchange, key)``."""
    from amqp.exceptions import AMQPError
    from kombu import Connection, Consumer, Queue, binding

    keys = routing_keys(patterns)
    queue = Queue(
        f"grassroots-tail.{uuid.uuid4().hex[:12]}",
        bindings=[binding(event_exchange(service), routing_key=key) for service in services for key in keys],
        exclusive=True,
        auto_delete=True,
        durable=False,
    )
    seen = 0

    def receive(body, message):
        nonlocal seen
        info = message.delivery_info or {}
        event_type = body.get("type") if isinstance(body, dict) else None
        if (count is None or seen < count) and (event_type is None or matches(event_type, patterns)):
            seen += 1
            on_event(body, info.get("exchange"), info.get("routing_key"))

    def undecodable(message, exc):
        nonlocal seen
        info = message.delivery_info or {}
        if count is None or seen < count:
            seen += 1
            on_event(None, info.get("exchange"), info.get("routing_key"))

    connection = Connection(uri, connect_timeout=5)
    try:
        try:
            connection.connect()
            check_exchanges(connection, services)
            channel = connection.channel()
            consumer = Consumer(
                channel, queues=[queue], callbacks=[receive], accept=["json"], no_ack=True, on_decode_error=undecodable
            )
            consumer.consume()
        except (OSError, AMQPError) as exc:
            raise broker_error(uri, exc) from None
        if on_ready is not None:
            on_ready([f"{service}.events" for service in services])
        while count is None or seen < count:
            try:
                connection.drain_events(timeout=poll_seconds)
            except TimeoutError:
                continue
            except (OSError, AMQPError) as exc:
                raise CliError(f"lost the broker: {exc}", EXIT_UNREACHABLE) from None
    finally:
        with contextlib.suppress(Exception):
            connection.release()
