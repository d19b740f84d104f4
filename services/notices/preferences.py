"""Residents' channel preferences and quiet hours; small grids' chat-group robots."""

from services.notices.models import ChatGroup, Preference
from shared import grid_lookup
from shared.db import utcnow
from shared.errors import Forbidden, ValidationError
from shared.paths import path_ids


def set_preferences(uow, caller, grid, resident_id, channels, quiet_hours):
    if caller.roles == {"resident"}:
        if caller.sub != str(resident_id):
            raise Forbidden("residents set only their own preferences")
    else:
        caller.require_reach(grid_lookup.resident(grid, resident_id)["unit_path"], "resident")
    session = uow.session
    preference = session.get(Preference, resident_id) or Preference(resident_id=resident_id)
    preference.channels = list(channels)
    preference.quiet_start = quiet_hours["start"] if quiet_hours else None
    preference.quiet_end = quiet_hours["end"] if quiet_hours else None
    preference.updated_at = utcnow()
    session.add(preference)
    session.flush()
    return preference


def register_chat_group(uow, caller, grid, unit_id, name, webhook_url):
    unit = grid_lookup.unit(grid, unit_id, "unit_id")
    if unit["level"] != "grid_small":
        raise ValidationError({"unit_id": [f"Chat groups belong to small grids, not {unit['level']}."]})
    path = unit["path_string"]
    caller.require_reach(path_ids(path), "unit")
    session = uow.session
    group = session.get(ChatGroup, unit_id) or ChatGroup(unit_id=unit_id)
    group.unit_path, group.name, group.webhook_url, group.updated_at = path, name, webhook_url, utcnow()
    session.add(group)
    session.flush()
    return group
