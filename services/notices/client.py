"""The notices service as the other services see it: commands recorded in the sender's transaction.

Another service never sends a message by calling notices while its own transaction is open: it
records a ``send_direct`` command in its outbox (shared.commands) with an ``origin`` naming the
change that causes it (``volunteer:offer/12``). The command leaves after the sender commits, and
notices sends at most one message per origin. The command is checked here against notices' own
schema, so a malformed one fails in the sender's call, not later in notices' dead letters.

    notices = NoticesClient()          # on the service class
    self.notices.send_direct(self.db, origin=..., resident_ids=[...], template=..., params={...})
"""

from nameko.extensions import DependencyProvider

from services.notices.schemas import SendDirectCommand
from shared.validation import load

SERVICE = "notices"
SEND_DIRECT = "send_direct"
_SEND_DIRECT = SendDirectCommand()


def send_direct_command(origin, resident_ids, template, params, channels=None):
    """The command's data, validated as notices will validate it (ValidationError names the field)."""
    data = {
        "origin": origin,
        "resident_ids": [str(i) for i in resident_ids],
        "template": template,
        "params": params,
        "channels": channels,
    }
    load(_SEND_DIRECT, data)
    return data


class Notices:
    def send_direct(self, uow, *, origin, resident_ids, template, params, channels=None):
        """Message residents with a template, once per ``origin``, after ``uow`` commits."""
        data = send_direct_command(origin, resident_ids, template, params, channels)
        del data["origin"]
        return uow.command(SERVICE, SEND_DIRECT, origin, data)


class NoticesClient(DependencyProvider):
    """A dependency: ``self.notices`` records commands to notices in the worker's unit of work."""

    def get_dependency(self, worker_ctx):
        return Notices()


class FakeNotices:
    """The in-memory twin for unit tests: checks each command as the real client does and keeps it
    in ``sent`` (origin → data), one per origin as notices would apply it."""

    def __init__(self):
        self.sent: dict[str, dict] = {}
        self.recorded = 0

    def send_direct(self, uow, *, origin, resident_ids, template, params, channels=None):
        data = send_direct_command(origin, resident_ids, template, params, channels)
        self.recorded += 1
        self.sent.setdefault(origin, data)
        return data
