"""The grid as the other services see it: typed reads over RPC, and an in-memory twin for unit tests.

The other services act on grid facts (a unit and its path, a household's members, residents' tags)
and never change the grid by RPC: what they cause in the grid travels as their own events, which
the grid takes up once per origin. So this client has only reads. Each call goes as the calling
service (its own ``service`` token) and raises ``ServiceUnavailable`` when the grid does not answer
in time (``RPC_TIMEOUT``, 10 s): the caller's transaction rolls back, and an event handler retries.

    grid = GridClient()                # on the service class
    self.grid.unit(unit_id, "unit_id") # in a method: the unit, or ValidationError naming the field

It also names the grid's vocabulary callers' arguments use (``LEVELS``, ``TAGS``) and the grid events
they consume (``UnitCreated``, ``UnitMoved``, ``UnitClosed``, ``HouseholdMoved``).
"""

from services.grid.vocabulary import LEVELS as LEVELS, TAGS as TAGS  # re-exported: the words callers use
from shared.clients import ServiceClient
from shared.errors import NotFound, ValidationError
from shared.paths import as_path
from shared.validation import EventData, Id, ListOf


class GridReads:
    """What other services ask the grid; the helpers turn an unknown id into the caller's mistake."""

    def unit(self, unit_id, field):
        """The unit, with its ``path`` also as a path string under ``path_string``."""
        try:
            found = self.get_unit(unit_id=str(unit_id))
        except NotFound:
            raise ValidationError({field: [f"Unknown unit {unit_id}."]}) from None
        return {**found, "path_string": as_path(found["path"])}

    def unit_path(self, unit_id, field):
        return self.unit(unit_id, field)["path_string"]

    def residents(self, resident_ids, field):
        """Residents as the grid's find rows (id, household_id, unit_id, unit_path, tags, ...)."""
        found = self.get_residents(resident_ids=[str(i) for i in resident_ids])
        if found["missing"]:
            raise ValidationError({field: [f"Unknown residents: {', '.join(found['missing'])}."]})
        return found["items"]

    def resident(self, resident_id, field="resident_id"):
        return self.residents([resident_id], field)[0]

    def without_pii(self):
        """The same reads without the ``pii`` claim (phones masked, nothing recorded in residents' access
        logs): for reads that need no phone, such as a read model's upkeep (shared.grid_facts). A client
        without the claim is itself."""
        return self

    # The RPC reads, by keyword as the grid names its arguments (services/grid/service.py).
    def get_unit(self, *, unit_id):
        raise NotImplementedError

    def get_residents(self, *, resident_ids):
        raise NotImplementedError


class Grid(GridReads):
    """One worker's view of the grid service."""

    def __init__(self, service, plain=None):
        self._service = service
        self._plain = plain  # a GridClient(pii=True)'s: makes this worker's grid without the claim

    def without_pii(self):
        return self if self._plain is None else Grid(self._plain())

    def get_unit(self, *, unit_id):
        return self._service.get_unit(unit_id=str(unit_id))

    def ancestors(self, *, unit_id):
        return self._service.ancestors(unit_id=str(unit_id))

    def list_units(self, *, under=None, level=None, include_closed=False, page=1, page_size=100):
        return self._service.list_units(
            under=under, level=level, include_closed=include_closed, page=page, page_size=page_size
        )

    def get_household(self, *, household_id):
        return self._service.get_household(household_id=str(household_id))

    def get_household_async(self, *, household_id):
        """Send now, ``.result()`` later (same timeout)."""
        return self._service.get_household.call_async(household_id=str(household_id))

    def get_residents(self, *, resident_ids):
        return self._service.get_residents(resident_ids=[str(i) for i in resident_ids])

    def find_residents_async(self, **filters):
        """``find_residents`` sent now, ``.result()`` later: audience pages are fetched ahead."""
        return self._service.find_residents.call_async(**filters)

    def find_resident_columns_async(self, **filters):
        """``find_resident_columns`` (a compact page of columns) sent now, ``.result()`` later."""
        return self._service.find_resident_columns.call_async(**filters)

    def get_incident(self, *, incident_id):
        return self._service.get_incident(incident_id=str(incident_id))


class GridClient(ServiceClient):
    """A dependency: ``self.grid`` is a ``Grid`` for this worker. ``pii=True`` asks for a token with
    the ``pii`` claim (phone numbers: notices' addresses, legal's contacts); ``self.grid.without_pii()``
    then calls with a token without it (reads that need no phone: they are not recorded as ``pii`` reads
    in residents' access logs)."""

    def __init__(self, timeout=10.0, pii=False):
        super().__init__("grid", timeout=timeout, pii=pii)

    def get_dependency(self, worker_ctx):
        plain = (lambda: self.calling(worker_ctx, pii=False)) if self.pii else None
        return Grid(super().get_dependency(worker_ctx), plain)


class _Ready:
    """An answer already there (the fake's ``*_async``)."""

    def __init__(self, value=None, error=None):
        self._value, self._error = value, error

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


class FakeGrid(GridReads):
    """The in-memory twin: units, households and residents a unit test puts in, answered as the grid
    answers them (shapes of services/grid/schemas.py), ``NotFound`` for unknown ids.

    ``unavailable`` makes every call raise ServiceUnavailable (a grid that is down). ``pii`` makes it a
    client holding the ``pii`` claim: each call made with the claim (not through ``without_pii()``) is
    listed in ``pii_calls``, as the grid would record it in residents' access logs."""

    def __init__(self):
        self.units: dict[str, dict] = {}
        self.households: dict[str, dict] = {}
        self.residents_by_id: dict[str, dict] = {}
        self.incidents: dict[str, dict] = {}
        self.unavailable = False
        self.calls: list[str] = []
        self.pii = False
        self.pii_calls: list[str] = []
        self._without_pii = 0  # > 0 while a call through ``without_pii()`` runs
        self.vault = None  # set it to answer phones_enc for residents given a "phone"

    # ---- building the fake's world ---------------------------------------

    def add_unit(self, unit_id, level, parent_id=None, name=None, closed=False):
        unit_id = str(unit_id)
        parent = self.units[str(parent_id)] if parent_id is not None else None
        path = (parent["path"] if parent else []) + [unit_id]
        self.units[unit_id] = {
            "id": unit_id,
            "parent_id": str(parent_id) if parent_id is not None else None,
            "level": level,
            "name": name or f"unit {unit_id}",
            "path": path,
            "closed": closed,
        }
        return self.units[unit_id]

    def add_household(self, household_id, unit_id, address=None):
        household_id = str(household_id)
        unit = self.units[str(unit_id)]
        self.households[household_id] = {
            "id": household_id,
            "unit_id": unit["id"],
            "address": address or {"compound": "Test Garden", "building": "1", "entrance": "1", "room": household_id},
            "unit_path": list(unit["path"]),
            "resident_ids": [],
        }
        return self.households[household_id]

    def add_resident(self, resident_id, household_id, tags=()):
        resident_id = str(resident_id)
        household = self.households[str(household_id)]
        household["resident_ids"].append(resident_id)
        self.residents_by_id[resident_id] = {
            "id": resident_id,
            "household_id": household["id"],
            "unit_id": household["unit_id"],
            "unit_path": list(household["unit_path"]),
            "tags": sorted(tags),
        }
        return self.residents_by_id[resident_id]

    # ---- the grid's changes, as its evented operations make them (the test emits the event) ----

    def move_household(self, household_id, unit_id):
        """``move_household``: the household and its residents to small grid ``unit_id``."""
        household, unit = self.households[str(household_id)], self.units[str(unit_id)]
        household.update(unit_id=unit["id"], unit_path=list(unit["path"]))
        for resident_id in household["resident_ids"]:
            self.residents_by_id[resident_id].update(unit_id=unit["id"], unit_path=list(unit["path"]))

    def set_tag(self, resident_id, tag, present=True):
        """``tag_resident`` / ``untag_resident``."""
        resident = self.residents_by_id[str(resident_id)]
        resident["tags"] = sorted(set(resident["tags"]) | {tag} if present else set(resident["tags"]) - {tag})

    def add_incident(self, incident_id, unit_id, category="dispute", description=None, party_resident_ids=()):
        """An open incident at ``unit_id``, as ``get_incident`` answers it (no steps beyond its report)."""
        incident_id, unit = str(incident_id), self.units[str(unit_id)]
        self.incidents[incident_id] = {
            "id": incident_id,
            "unit_id": unit["id"],
            "category": category,
            "description": description or f"incident {incident_id}",
            "party_resident_ids": [str(i) for i in party_resident_ids],
            "status": "open",
            "handling_unit_id": unit["id"],
            "handling_level": unit["level"],
            "origin": None,
            "steps": [{"action": "reported", "from_level": None, "to_level": unit["level"]}],
        }
        return self.incidents[incident_id]

    # ---- the reads -------------------------------------------------------

    def _call(self, name):
        from shared.errors import ServiceUnavailable

        self.calls.append(name)
        if self.pii and not self._without_pii:
            self.pii_calls.append(name)
        if self.unavailable:
            raise ServiceUnavailable(f"grid.{name} did not answer (fake grid is down)")

    def without_pii(self):
        return _WithoutPii(self) if self.pii else self

    @staticmethod
    def _found(table, key, what):
        try:
            return dict(table[str(key)])
        except KeyError:
            raise NotFound(f"{what} {key} not found") from None

    def get_unit(self, *, unit_id):
        self._call("get_unit")
        return self._found(self.units, unit_id, "unit")

    def ancestors(self, *, unit_id):
        self._call("ancestors")
        unit = self._found(self.units, unit_id, "unit")
        return [dict(self.units[i]) for i in unit["path"][:-1]]

    def list_units(self, *, under=None, level=None, include_closed=False, page=1, page_size=100):
        self._call("list_units")
        rows = [
            dict(u)
            for u in self.units.values()
            if (under is None or str(under) in u["path"])
            and (level is None or u["level"] == level)
            and (include_closed or not u["closed"])
        ]
        start = (page - 1) * page_size
        items = rows[start : start + page_size]
        return {"items": items, "page": page, "page_size": page_size, "has_more": len(rows) > start + page_size}

    def get_household(self, *, household_id):
        self._call("get_household")
        return self._found(self.households, household_id, "household")

    def get_household_async(self, *, household_id):
        try:
            return _Ready(self.get_household(household_id=household_id))
        except Exception as exc:
            return _Ready(error=exc)

    def find_residents_async(self, *, under, tags_any=None, tags_all=None, page_size=100, after=None):
        """Residents under ``under`` in keyset pages (``items``, ``has_more``, ``next_after``), in id order."""
        try:
            self._call("find_residents")
        except Exception as exc:
            return _Ready(error=exc)
        rows = [
            dict(r)
            for r in sorted(self.residents_by_id.values(), key=lambda r: int(r["id"]))
            if str(under) in r["unit_path"]
            and (not tags_any or set(tags_any) & set(r["tags"]))
            and (not tags_all or set(tags_all) <= set(r["tags"]))
            and (after is None or int(r["id"]) > int(after))
        ]
        items, more = rows[:page_size], len(rows) > page_size
        page = {"items": items, "page": 1, "page_size": page_size, "has_more": more}
        return _Ready({**page, "next_after": items[-1]["id"] if more else None})

    def find_resident_columns_async(
        self, *, under, tags_any=None, tags_all=None, page_size=5000, after=None, phones=False
    ):
        """The same rows as ``find_residents_async``, as the grid's column page (``ResidentColumnsOut``);
        ``phones_enc`` (when ``phones``) encrypted with ``vault`` from the residents' ``phone``."""
        found = self.find_residents_async(
            under=under, tags_any=tags_any, tags_all=tags_all, page_size=page_size, after=after
        )
        self.calls[-1] = "find_resident_columns"
        try:
            page = found.result()
        except Exception as exc:
            return _Ready(error=exc)
        rows = page["items"]
        return _Ready(
            {
                "ids": [int(r["id"]) for r in rows],
                "household_ids": [int(r["household_id"]) for r in rows],
                "unit_ids": [int(r["unit_id"]) for r in rows],
                "paths": {str(r["unit_id"]): list(r["unit_path"]) for r in rows},
                "tags": [list(r["tags"]) for r in rows],
                "phones_enc": [self._phone_enc(r) for r in rows] if phones else None,
                "has_more": page["has_more"],
                "next_after": int(page["next_after"]) if page["next_after"] is not None else None,
            }
        )

    def _phone_enc(self, resident):
        phone = resident.get("phone")
        return self.vault.encrypt(phone, b"phone").hex() if phone and self.vault is not None else None

    def get_residents(self, *, resident_ids):
        self._call("get_residents")
        ids = [str(i) for i in resident_ids]
        return {
            "items": [dict(self.residents_by_id[i]) for i in ids if i in self.residents_by_id],
            "missing": [i for i in ids if i not in self.residents_by_id],
        }

    def get_incident(self, *, incident_id):
        self._call("get_incident")
        return self._found(self.incidents, incident_id, "incident")


class _WithoutPii:
    """A FakeGrid's reads made without the ``pii`` claim (not listed in its ``pii_calls``)."""

    def __init__(self, grid):
        self._grid = grid

    def without_pii(self):
        return self

    def __getattr__(self, name):
        found = getattr(self._grid, name)
        if not callable(found):
            return found

        def plain(*args, **kwargs):
            self._grid._without_pii += 1
            try:
                return found(*args, **kwargs)
            finally:
                self._grid._without_pii -= 1

        return plain


# ---- the grid's tree changes, as the services that keep copies read them -----------------


def _unit_path(**kwargs):
    return ListOf(Id(), min_items=1, max_items=20, **kwargs)


class UnitMoved(EventData):
    """grid.unit_moved: the copies follow the unit to where the grid says it is now."""

    unit_id = Id(required=True)
    unit_path = _unit_path(required=True)
    old_path = _unit_path(required=True)


class UnitCreated(EventData):
    """grid.unit_created: a read model of grid facts (shared.grid_facts) takes the new unit in."""

    unit_id = Id(required=True)
    unit_path = _unit_path(required=True)


class UnitClosed(EventData):
    """grid.unit_closed."""

    unit_id = Id(required=True)
    unit_path = _unit_path(required=True)


class HouseholdMoved(EventData):
    """grid.household_moved: the household's pending copies follow it to where the grid says it lives now."""

    household_id = Id(required=True)
    unit_id = Id(required=True)
    unit_path = _unit_path(required=True)
    old_unit_path = _unit_path(required=True)
