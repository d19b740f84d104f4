"""Commands: an effect on another service, recorded with the change that causes it, applied once.

The gap. A service that calls another service's write over RPC inside its open transaction acts
twice or never: its own transaction may roll back after the callee acted; its request, redelivered
after a crash, acts again; a call that timed out is retried while the callee still runs the first
(the fault run: 1,072 offer messages for 1,000 offers, three reminders for one consultation); and a
crash after its commit but before the call loses the effect.

Here a command is a row of the sender's outbox (``UnitOfWork.command``), written in the same
transaction as the change: it exists if and only if the change committed. The outbox relay
publishes it, with confirms and ``mandatory``, to the receiver's ``<service>.commands`` exchange
under the command's name; the receiver consumes it from its durable queue
``cmd-<service>-<command>`` with the same reliable handler as events (retries with backoff, dead
letters, deduplicated by envelope id) and applies it at most once per ``origin`` — a key the sender
derives from its own change (``volunteer:offer/12``) and the receiver enforces with a unique index
on the row it creates. Delivered at least once, applied at most once: exactly once.

The sender uses the receiver's typed client (``services/<name>/client.py``), which checks the
command against the receiver's schema before recording it.
"""

import functools

from kombu import Exchange, Queue

from shared.auth import system_caller
from shared.handlers import ReliableEventHandler
from shared.validation import load

COMMANDS_SUFFIX = ".commands"


def command_exchange_name(service_name):
    return f"{service_name}{COMMANDS_SUFFIX}"


def command_queue_name(service_name, command):
    return f"cmd-{service_name}-{command}"


def sender_of(envelope):
    """The service that sent a command, from its envelope's ``source`` (``grassroots/<service>``)."""
    return envelope["source"].rpartition("/")[2] or "unknown"


def sender_caller(envelope):
    """The caller a command acts as: the sending service (the broker's permissions decide who may send)."""
    return system_caller(sender_of(envelope))


class CommandHandler(ReliableEventHandler):
    """Consumes ``cmd-<service>-<command>`` from ``<service>.commands`` (see the module docstring)."""

    def __init__(self, command, **kwargs):
        self.command = command
        super().__init__("commands", command, **kwargs)

    def make_queue(self, queue):
        service_name = self.container.service_name
        exchange = Exchange(command_exchange_name(service_name), type="topic", durable=True)
        return Queue(
            command_queue_name(service_name, self.command),
            exchange=exchange,
            routing_key=self.command,
            durable=True,
        )


def on_command(command, schema, **handler_options):
    """A reliable, deduplicating command handler: ``method(self, sender, envelope, data)``.

    ``data`` is loaded with ``schema`` (a malformed command is dead-lettered at once) and holds the
    sender's ``origin``; ``sender`` is the sending service as a caller. The method must make its
    effect unique by that origin: a command recorded twice (the sender's own retry) arrives under
    two envelope ids.
    """
    from shared.endpoints import ENVELOPE  # endpoints imports the handlers this module builds on

    entrypoint = CommandHandler.decorator(command, **handler_options)

    def decorate(method):
        handler_key = f"commands.{command}:{method.__name__}"

        @functools.wraps(method)
        def wrapper(self, body):
            envelope = load(ENVELOPE, body)
            data = load(schema, envelope["data"])
            if not self.db.claim_event(handler_key, envelope["id"]):
                return "duplicate"
            result = method(self, sender_caller(envelope), envelope, data)
            self.db.commit()
            return result

        wrapper.__contract__ = {  # type: ignore[attr-defined]  # python/mypy#2087
            "kind": "command_handler",
            "command": command,
            "schema": schema,
            "doc": method.__doc__,
        }
        return entrypoint(wrapper)

    return decorate
