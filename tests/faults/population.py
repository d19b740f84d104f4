"""The people a fault scenario works on: households to quarantine and volunteers to care for them.

Built through the grid's and volunteer's own RPC (many calls in flight at once), in the district of
tests/support.build_district: two communities, each down to one small grid. Households alternate
between the two small grids; every volunteer lives in a household of their own that is never
quarantined, so every care request finds a volunteer within its large grid and each offer is owed
exactly one message.
"""

import datetime as dt
from dataclasses import dataclass, field

from services.grid.idnumbers import make_id_number
from tests.support import ADDRESS, build_district

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
FIRST_BIRTH = dt.date(1940, 1, 1)
CHUNK = 40  # calls in flight at once


@dataclass
class Population:
    district: dict
    households: list = field(default_factory=list)  # ids (int) of the households to quarantine
    members: dict = field(default_factory=dict)  # household id: [resident ids (str)]
    units: dict = field(default_factory=dict)  # household id: its small grid's id (str)
    volunteers: list = field(default_factory=list)  # volunteer ids
    volunteer_residents: list = field(default_factory=list)  # their resident ids

    @property
    def residents(self):
        """Every member of every household to quarantine, household by household."""
        return [r for h in self.households for r in self.members[h]]


def _resident_args(seq, household_id):
    birth = FIRST_BIRTH + dt.timedelta(days=seq)  # a distinct birth date makes the ID number unique
    return {
        "household_id": household_id,
        "name": f"Resident {seq}",
        "id_number": make_id_number("370102", birth, seq % 1000),
        "phone": f"138{seq:08d}",
        "birth_date": birth.isoformat(),
    }


def in_chunks(method, kwargs_list):
    """Call ``method`` with each kwargs, CHUNK calls in flight at once; the replies in order."""
    replies = []
    for start in range(0, len(kwargs_list), CHUNK):
        pending = [method.call_async(**kwargs) for kwargs in kwargs_list[start : start + CHUNK]]
        replies += [p.result() for p in pending]
    return replies


def build(rpc, households=150, members=2, volunteers=20):
    """``households`` households of ``members`` residents each, and ``volunteers`` volunteers split
    between the two small grids. ``rpc``: a started ClusterRpcProxy with an admin token."""
    district = build_district(rpc.grid)
    grids = [district["small_a"], district["small_b"]]
    people = Population(district)
    made = in_chunks(
        rpc.grid.register_household,
        [
            {"unit_id": grids[i % 2], "address": {**ADDRESS, "room": str(100 + i)}}
            for i in range(households + volunteers)
        ],
    )
    homes = [int(h["id"]) for h in made]
    quarantine_homes, volunteer_homes = homes[:households], homes[households:]
    args = [_resident_args(i * members + m, str(h)) for i, h in enumerate(quarantine_homes) for m in range(members)]
    args += [_resident_args(households * members + i, str(h)) for i, h in enumerate(volunteer_homes)]
    residents = [r["id"] for r in in_chunks(rpc.grid.register_resident, args)]
    people.households = quarantine_homes
    for i, household in enumerate(quarantine_homes):
        people.members[household] = residents[i * members : (i + 1) * members]
        people.units[household] = grids[i % 2]
    people.volunteer_residents = residents[households * members :]
    registered = in_chunks(
        rpc.volunteer.register_volunteer,
        [
            {
                "name": f"Volunteer {i}",
                "phone": f"139{i:08d}",
                "home_unit_id": grids[(households + i) % 2],  # where their household lives
                "skills": ["delivery", "elderly_care"],
                "availability": ALWAYS,
                "max_active_tasks": 20,
                "resident_id": resident,
            }
            for i, resident in enumerate(people.volunteer_residents)
        ],
    )
    people.volunteers = [v["id"] for v in registered]
    return people
