"""The legal bench's world, seeded through the services' RPC with an admin token (``bench.legal_booking``),
deterministically from its seed:

* grid: a district, a street, 5 communities, each with a large, a medium and two small grids, and 200
  residents (100 households of two) with valid ID numbers;
* legal: 10 stations (two per community) and the lawyers, with 1-3 specialties ("family" for ~90% of them),
  each at 1 or 2 stations: Mon-Fri 09:00-12:00 and 14:00-17:30 (some also Saturday mornings) at one, or
  Mon/Wed/Fri (+Sat) at the first and Tue/Thu at the second, so a lawyer's plans never overlap; slots of 30
  or 45 minutes with a 0/5/10 minute buffer. 20% of the lawyers take a day off, 5% a three-day leave, and
  300 bookings are made.
"""

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from bench.harness import person_name
from bench.seed_grid import REGIONS
from services.grid.idnumbers import make_id_number
from services.legal.vocabulary import SPECIALTIES

ZONE = ZoneInfo("Asia/Shanghai")  # the legal service's TIMEZONE (its default)
COMMUNITIES, STATIONS_PER_COMMUNITY, RESIDENTS, EXISTING_BOOKINGS = 5, 2, 200, 300
FAMILY_SHARE, DAY_OFF_SHARE, LEAVE_SHARE = 0.9, 0.2, 0.05
OTHER_SPECIALTIES = [s for s in SPECIALTIES if s != "family"]
FIRMS = ("泉城律师事务所", "明湖律师事务所", "舜耕律师事务所", "历下律师事务所", "济南法援中心")


@dataclass
class World:
    small_grids: list = field(default_factory=list)  # (community id, small grid id)
    residents: list = field(default_factory=list)
    stations: list = field(default_factory=list)  # (station id, community id)
    lawyers: list = field(default_factory=list)  # {"specialties", "stations"}
    time_off: int = 0

    def count(self, specialty):
        return sum(specialty in lawyer["specialties"] for lawyer in self.lawyers)


def seed_district(grid, rng, world):
    """The units and the residents."""
    district = grid.create_unit(parent_id=None, level="district", name="律所测试区", code="BENCH-LEGAL-DISTRICT")
    street = grid.create_unit(parent_id=district["id"], level="street", name="法援街道")
    for c in range(1, COMMUNITIES + 1):
        community = grid.create_unit(parent_id=street["id"], level="community", name=f"法援社区 {c}")
        large = grid.create_unit(parent_id=community["id"], level="grid_large", name=f"大网格 {c}-1")
        medium = grid.create_unit(parent_id=large["id"], level="grid_medium", name=f"中网格 {c}-1-1")
        for s in range(1, 3):
            small = grid.create_unit(parent_id=medium["id"], level="grid_small", name=f"小网格 {c}-1-1-{s}")
            world.small_grids.append((community["id"], small["id"]))
    for h in range(RESIDENTS // 2):
        address = {
            "compound": "法援小区",
            "building": str(1 + h // 20),
            "entrance": str(1 + h % 4),
            "room": f"{101 + h}",
        }
        household = grid.register_household(unit_id=world.small_grids[h % len(world.small_grids)][1], address=address)
        for _ in range(2):
            birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 65))
            resident = grid.register_resident(
                household_id=household["id"],
                name=person_name(rng, (2, 2)),
                id_number=make_id_number(rng.choice(REGIONS), birth, len(world.residents) + 1),
                phone=f"139{rng.randrange(10**8):08d}",
                birth_date=birth.isoformat(),
            )
            world.residents.append(resident["id"])


def weekly_plans(rng, station_count):
    """One weekly plan per station; a lawyer at two stations splits the week, so plans never overlap."""

    def days(weekdays):
        return [
            {"weekday": d, "start": s, "end": e} for d in weekdays for s, e in (("09:00", "12:00"), ("14:00", "17:30"))
        ]

    saturday = [{"weekday": 5, "start": "09:00", "end": "12:00"}] if rng.random() < 0.3 else []
    return [days(range(5)) + saturday] if station_count == 1 else [days((0, 2, 4)) + saturday, days((1, 3))]


def seed_legal(legal, rng, world, lawyer_count, date_from, date_to):
    """Stations, lawyers with their weekly plans and time off, and EXISTING_BOOKINGS bookings."""
    communities = list(dict.fromkeys(community for community, _grid in world.small_grids))
    for index, community in enumerate(communities):
        for s in range(STATIONS_PER_COMMUNITY):
            station = legal.create_station(
                unit_id=community, name=f"法律服务站 {index + 1}-{s + 1}", address=f"法援路{index * 10 + s + 1}号"
            )
            world.stations.append((station["id"], community))
    for i in range(lawyer_count):
        count = rng.choice((1, 2, 3))
        family = rng.random() < FAMILY_SHARE
        specialties = (
            ["family"] + rng.sample(OTHER_SPECIALTIES, count - 1) if family else rng.sample(OTHER_SPECIALTIES, count)
        )
        stations = rng.sample([sid for sid, _c in world.stations], rng.choice((1, 2)))
        lawyer = legal.register_lawyer(
            name=person_name(rng, (2, 2)) + "律师",
            firm=rng.choice(FIRMS),
            license_no=f"BENCH-L{i + 1:05d}",
            specialties=specialties,
            station_ids=stations,
        )
        slot, buffer = rng.choice((30, 45)), rng.choice((0, 5, 10))
        for station_id, weekly in zip(stations, weekly_plans(rng, len(stations)), strict=True):
            legal.set_schedule(
                lawyer_id=lawyer["id"], station_id=station_id, weekly=weekly, slot_minutes=slot, buffer_minutes=buffer
            )
        world.lawyers.append({"specialties": specialties, "stations": stations})
        roll = rng.random()  # a day off for some, a three-day leave for a few (local days inside the range)
        if roll < DAY_OFF_SHARE + LEAVE_SHARE:
            length = 1 if roll < DAY_OFF_SHARE else 3
            first = date_from + dt.timedelta(days=rng.randrange((date_to - date_from).days + 2 - length))
            starts = dt.datetime.combine(first, dt.time(0), tzinfo=ZONE)
            ends = starts + dt.timedelta(days=length)
            legal.add_time_off(
                lawyer_id=lawyer["id"],
                starts_at=starts.isoformat(),
                ends_at=ends.isoformat(),
                reason="年假" if length > 1 else "事假",
            )
            world.time_off += 1
    # A few hundred bookings before timing, spread over the range: busy intervals for find_slots.
    answer = legal.find_slots(
        specialty="family", date_from=date_from.isoformat(), date_to=date_to.isoformat(), limit=5000
    )
    for n, slot in enumerate(rng.sample(answer, EXISTING_BOOKINGS)):
        legal.book(
            lawyer_id=slot["lawyer_id"],
            station_id=slot["station_id"],
            starts_at=slot["starts_at"],
            resident_id=world.residents[n % len(world.residents)],
            topic=f"bench existing {n}",
            mode=rng.choice(("in_person", "phone", "video")),
        )
