"""Stations, lawyers, their weekly schedules and time off."""

from dataclasses import dataclass

from sqlalchemy import select

from services.legal.models import Lawyer, LawyerStation, Schedule, Station, TimeOff
from services.legal.views import RowView
from services.legal.vocabulary import STATION_LEVELS
from shared.db import fetch, utcnow
from shared.errors import Conflict, Forbidden, ValidationError
from shared.paths import in_subtree, path_ids

# Roles that act on whatever lies in their unit scope (admin and service: the whole district).
STAFF = ("admin", "service", "officer", "grid_worker")


def is_lawyer(caller, lawyer_id):
    return caller.has_role("lawyer") and caller.sub == str(lawyer_id)


def staff_reaches(caller, unit_path):
    """True for staff and services whose scope holds ``unit_path`` (a path string)."""
    return caller.has_role(*STAFF) and caller.reaches(path_ids(unit_path))


def reachable_station(session, caller, station_id):
    station = fetch(session, Station, station_id, "station")
    caller.require_reach(path_ids(station.unit_path), "station")
    return station


def create_station(uow, caller, grid, unit_id, name, address):
    unit = grid.unit(unit_id, "unit_id")
    path = unit["path_string"]
    caller.require_reach(path_ids(path), "unit")  # before the unit's level says anything about it
    if unit["level"] not in STATION_LEVELS:
        raise ValidationError({"unit_id": [f"Stations serve a street or community, not a {unit['level']}."]})
    station = Station(unit_id=unit_id, unit_path=path, name=name, address=address, created_at=utcnow())
    uow.session.add(station)
    uow.session.flush()
    return station


def list_stations(session, grid, under):
    """Stations in the subtree of ``under`` (all when None): public information."""
    query = select(Station).order_by(Station.id)
    if under is not None:
        path = grid.unit_path(under, "under")
        query = query.where(in_subtree(Station.unit_path, path))
    return session.scalars(query).all()


@dataclass(frozen=True)
class RegisteredLawyer(RowView):
    """A lawyer just registered, with the stations they serve in the order the registrar named them."""

    row: Lawyer
    station_ids: list[int]


def register_lawyer(uow, caller, grid, name, firm, license_no, specialties, station_ids, resident_id):
    """Every station and the linked resident must be in the caller's scope, checked before anything
    else is said (a licence already registered included)."""
    session = uow.session
    stations = [reachable_station(session, caller, station_id) for station_id in station_ids]
    if resident_id is not None:
        # reminders go to this resident through notices: only someone reaching them may link them
        caller.require_reach(grid.resident(resident_id)["unit_path"], "resident")
    if session.scalar(select(Lawyer.id).where(Lawyer.license_no == license_no)) is not None:
        raise Conflict(f"license {license_no} is already registered")
    lawyer = Lawyer(
        name=name,
        firm=firm,
        license_no=license_no,
        specialties=list(specialties),
        resident_id=resident_id,
        created_at=utcnow(),
    )
    session.add(lawyer)
    session.flush()
    for station in stations:
        session.add(LawyerStation(lawyer_id=lawyer.id, station_id=station.id))
    session.flush()
    return RegisteredLawyer(lawyer, [station.id for station in stations])


def station_ids_of(session, lawyer_id):
    return session.scalars(
        select(LawyerStation.station_id).where(LawyerStation.lawyer_id == lawyer_id).order_by(LawyerStation.station_id)
    ).all()


def _manage_lawyer(session, caller, lawyer_id):
    """A lawyer manages their own plan; an officer or admin any lawyer at a station in scope."""
    lawyer = fetch(session, Lawyer, lawyer_id, "lawyer")
    if is_lawyer(caller, lawyer_id) or caller.unrestricted:
        return lawyer
    if not caller.has_role("officer", "admin"):
        raise Forbidden("only the lawyer or an officer manages this lawyer's plan")
    stations = session.scalars(
        select(Station)
        .join(LawyerStation, LawyerStation.station_id == Station.id)
        .where(LawyerStation.lawyer_id == lawyer.id)
    ).all()
    if not any(caller.reaches(path_ids(station.unit_path)) for station in stations):
        raise Forbidden("lawyer serves no station in the caller's scope")
    return lawyer


def set_schedule(uow, caller, lawyer_id, station_id, weekly, slot_minutes, buffer_minutes):
    session = uow.session
    lawyer = _manage_lawyer(session, caller, lawyer_id)
    if not is_lawyer(caller, lawyer.id):
        # an officer plans only at stations in their scope, whichever others the lawyer also serves
        reachable_station(session, caller, station_id)
    if station_id not in station_ids_of(session, lawyer.id):
        raise ValidationError({"station_id": [f"Lawyer {lawyer.id} does not serve station {station_id}."]})
    # A lawyer is in one place at a time: plans at other stations must not overlap this one.
    for other in session.scalars(
        select(Schedule).where(Schedule.lawyer_id == lawyer.id, Schedule.station_id != station_id)
    ):
        for mine in weekly:
            for theirs in other.weekly:
                if (
                    mine["weekday"] == theirs["weekday"]
                    and mine["start"] < theirs["end"]
                    and theirs["start"] < mine["end"]
                ):
                    raise Conflict(
                        f"overlaps the lawyer's plan at station {other.station_id} "
                        f"(weekday {mine['weekday']} {theirs['start']}-{theirs['end']})"
                    )
    schedule = session.get(Schedule, (lawyer.id, station_id)) or Schedule(lawyer_id=lawyer.id, station_id=station_id)
    schedule.weekly, schedule.slot_minutes, schedule.buffer_minutes = list(weekly), slot_minutes, buffer_minutes
    schedule.updated_at = utcnow()
    session.add(schedule)
    session.flush()
    return schedule


def add_time_off(uow, caller, lawyer_id, starts_at, ends_at, reason):
    session = uow.session
    lawyer = _manage_lawyer(session, caller, lawyer_id)
    leave = TimeOff(lawyer_id=lawyer.id, starts_at=starts_at, ends_at=ends_at, reason=reason)
    session.add(leave)
    session.flush()
    return leave
