"""Residents' channel preferences and quiet hours; small grids' chat-group robots."""

import logging

from services.notices import access
from services.notices.models import ChatGroup, Preference
from services.notices.outbound import OutboundRefused
from shared.db import utcnow
from shared.errors import ValidationError
from shared.paths import path_ids

log = logging.getLogger(__name__)


def set_preferences(uow, caller, grid, resident_id, channels, quiet_hours):
    access.require_act_for(caller, resident_id, lambda: grid.resident(resident_id)["unit_path"], "preferences")
    session = uow.session
    preference = session.get(Preference, resident_id) or Preference(resident_id=resident_id)
    preference.channels = list(channels)
    preference.quiet_start = quiet_hours["start"] if quiet_hours else None
    preference.quiet_end = quiet_hours["end"] if quiet_hours else None
    preference.updated_at = utcnow()
    session.add(preference)
    session.flush()
    return preference


def register_chat_group(uow, caller, grid, policy, unit_id, name, webhook_url):
    """The unit's scope first (nothing about an out-of-scope unit is revealed), then its level, then
    the webhook URL under the deployment's webhook policy (its host resolved and every address
    checked; each send checks again). A refused URL is a ValidationError that says only that: what
    an internal name resolves to, or that it does not, is for the service log (one line, the reason
    names the host but never the URL's path or query)."""
    unit = grid.unit(unit_id, "unit_id")
    path = unit["path_string"]
    caller.require_reach(path_ids(path), "unit")
    if unit["level"] != "grid_small":
        raise ValidationError({"unit_id": [f"Chat groups belong to small grids, not {unit['level']}."]})
    try:
        policy.vet(webhook_url)
    except OutboundRefused as refused:
        log.warning(
            "register_chat_group: webhook_url refused",
            extra={"method": "register_chat_group", "unit_id": str(unit_id), "reason": refused.reason[:300]},
        )
        raise ValidationError({"webhook_url": ["Not an allowed destination."]}) from None
    session = uow.session
    group = session.get(ChatGroup, unit_id) or ChatGroup(unit_id=unit_id)
    group.unit_path, group.name, group.webhook_url, group.updated_at = path, name, webhook_url, utcnow()
    session.add(group)
    session.flush()
    return group
