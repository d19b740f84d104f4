"""Payloads of the events the grid publishes on the ``grid.events`` topic exchange.

Each event travels in the CloudEvents-shaped envelope of ``shared.outbox.envelope``; these
schemas describe its ``data``. They document the contract (``tools.asyncapi`` turns them into
docs/asyncapi.yaml) and list exactly the fields the grid writes: ids as strings of digits,
unit paths as lists of id strings from the district down, timestamps as ISO-8601 strings. No
names, ID numbers or phone numbers ever travel in an event.
"""

from marshmallow import EXCLUDE, Schema, fields

from services.grid import vocabulary as v
from shared.paths import path_ids
from shared.validation import Id, OneOf, Str, UtcDateTime


def path_out(path):
    """A materialised path (``/1/5/23/``) as events carry it: its ids as strings, district first."""
    return [str(i) for i in path_ids(path)]


class EventPayload(Schema):
    """Consumers tolerate fields added later: unknown fields are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE


def _path(description):
    return fields.List(Id(), required=True, metadata={"description": description})


UNIT_PATH = "Unit ids from the district down to the unit itself."


class UnitEvent(EventPayload):
    """A unit changed in the tree."""

    unit_id = Id(required=True)
    level = OneOf(v.LEVELS, required=True)
    unit_path = _path(UNIT_PATH)


class UnitCreated(UnitEvent):
    """Emitted by ``create_unit`` when a unit (a district, street, community or grid) is created."""


class UnitClosed(UnitEvent):
    """Emitted by ``close_unit`` when a unit is closed (it takes no new households or children)."""


class UnitUpdated(UnitEvent):
    """Emitted by ``set_party_org`` when a unit's Party organisation is set or changed (what a
    ``get_unit`` reply shows changed; its path did not)."""


class UnitMoved(UnitEvent):
    """Emitted by ``move_unit`` when a unit and its subtree move under a new parent; ``unit_path`` is the
    new path, ``old_path`` the one before the move."""

    old_path = _path("The unit's path before the move.")


class HouseholdMoved(EventPayload):
    """Emitted by ``move_household`` when a household (with its residents and tags) moves to another
    small grid."""

    household_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The small grid the household moved to."})
    unit_path = _path(UNIT_PATH)
    old_unit_path = _path("The path of the small grid the household left.")


class ResidentTagEvent(EventPayload):
    """A resident's tag changed."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The resident's small grid."})
    unit_path = _path(UNIT_PATH)
    tag = OneOf(v.TAGS, required=True)


class ResidentTagged(ResidentTagEvent):
    """Emitted by ``tag_resident`` when a resident gets a tag they did not have (re-tagging only updates
    ``until``/``note`` and emits nothing)."""

    until = UtcDateTime(
        required=True, allow_none=True, metadata={"description": "When the tag lapses by itself; null for no end."}
    )


class ResidentUntagged(ResidentTagEvent):
    """Emitted by ``untag_resident`` (reason ``untagged``), by housekeeping when a tag's ``until``
    passes or the lifecycle timer when a tag without ``until`` outlives its policy's ``max_age`` (reason
    ``expired``), and by an approved ``erase_resident`` for each tag the resident carried (reason
    ``erased``). The grid keeps the release until the tag's retention ends, then emits ``tag_purged``."""

    reason = Str(required=True, max_length=100, metadata={"description": "``untagged``, ``expired`` or ``erased``."})


class TagPurged(ResidentTagEvent):
    """Emitted when the grid purges a released tag — its policy's retention after the release ended
    (reason ``retention``), or an approved ``erase_resident`` removed the resident's tags (reason
    ``erased``, once per tag carried or still kept). Every service deletes what it derived from that tag
    of that resident. Not emitted when the resident carries the tag again, or a later release of it is
    still kept (that one's purge is announced in its turn)."""

    released_at = UtcDateTime(required=True, metadata={"description": "When the tag was taken off."})
    reason = OneOf(("retention", "erased"), required=True)


class ResidentErased(EventPayload):
    """Emitted by ``erase_resident`` when a second manager approved an erasure and the grid anonymised
    the resident. Every service anonymises what it holds about the resident; with ``household_emptied``
    (no other resident lives in the household any more) it also drops the household's address."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The resident's small grid."})
    unit_path = _path(UNIT_PATH)
    household_emptied = fields.Boolean(required=True)
    erasure_id = Id(required=True, metadata={"description": "The erasure request (the audit trail in the grid)."})
    erased_at = UtcDateTime(required=True)


class ScreeningVisitRecorded(EventPayload):
    """Emitted by ``record_visit`` for every door-to-door screening visit recorded."""

    campaign_id = Id(required=True)
    visit_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The household's small grid."})
    unit_path = _path(UNIT_PATH)
    outcome = OneOf(v.VISIT_OUTCOMES, required=True)


HANDLING_LEVELS = v.LEVELS + (v.DEPARTMENT_LEVEL,)


class IncidentEvent(EventPayload):
    """An incident's state after the change."""

    incident_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The unit the incident was reported at."})
    unit_path = _path(UNIT_PATH)
    category = OneOf(v.INCIDENT_CATEGORIES, required=True)
    department = OneOf(v.DEPARTMENTS, required=True)
    status = OneOf(v.INCIDENT_STATUSES, required=True)
    handling_level = OneOf(
        HANDLING_LEVELS, required=True, metadata={"description": "The level handling it now, or ``department``."}
    )
    handling_unit_id = Id(
        required=True,
        allow_none=True,
        metadata={"description": "The unit handling it now; null once with the department."},
    )


class IncidentReported(IncidentEvent):
    """Emitted when an incident is opened: by ``report_incident``, or raised by the grid itself."""

    party_resident_ids = fields.List(
        Id(), required=True, metadata={"description": "Residents party to the incident (may be empty)."}
    )
    source = OneOf(
        v.INCIDENT_SOURCES,
        load_default="staff",
        metadata={
            "description": "Who reported it: ``staff`` (report_incident), ``service`` (raised by the grid for "
            "another service) or ``resident`` (a resident's own report, ``report_problem``)."
        },
    )


class IncidentEscalated(IncidentEvent):
    """Emitted when an incident climbs a level: by ``escalate_incident``, by housekeeping when the level's
    deadline passes, or when it is referred straight to a department."""

    from_level = OneOf(v.LEVELS, required=True, metadata={"description": "The level that handled it before."})
    automatic = fields.Boolean(required=True, metadata={"description": "True when the grid escalated it by itself."})


class IncidentResolved(IncidentEvent):
    """Emitted when an incident is resolved (``resolve_incident``, or a mediation that settled it)."""


class IncidentReopened(IncidentEvent):
    """Emitted by ``reopen_report`` when a resident reopens the resolution of their report within the
    confirmation window: it is open again at the unit it was reported at, with that level's deadline."""

    reopened = fields.Integer(required=True, metadata={"description": "How often it has been reopened."})


class IncidentMerged(IncidentEvent):
    """Emitted by ``merge_reports`` when a report is closed as a duplicate of another; its reporters follow
    the other one from then on. The state is the duplicate's (``status`` resolved)."""

    merged_into_id = Id(required=True, metadata={"description": "The report it duplicated (the primary)."})


EVENTS = {
    "unit_created": UnitCreated(),
    "unit_closed": UnitClosed(),
    "unit_moved": UnitMoved(),
    "unit_updated": UnitUpdated(),
    "household_moved": HouseholdMoved(),
    "resident_tagged": ResidentTagged(),
    "resident_untagged": ResidentUntagged(),
    "tag_purged": TagPurged(),
    "resident_erased": ResidentErased(),
    "screening_visit_recorded": ScreeningVisitRecorded(),
    "incident_reported": IncidentReported(),
    "incident_escalated": IncidentEscalated(),
    "incident_resolved": IncidentResolved(),
    "incident_reopened": IncidentReopened(),
    "incident_merged": IncidentMerged(),
}
