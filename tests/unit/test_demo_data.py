"""The demo district generator (tools.demo_data): deterministic, real street names, valid synthetic
people, consistent keys between the records the seeders send to different services."""

import dataclasses

import pytest

from services.grid.idnumbers import birth_date_of, id_number_problem
from shared.validation import phone_problem
from tools import demo_data


@pytest.fixture(scope="module")
def district():
    return demo_data.build_district()


def test_same_seed_same_district(district):
    again = demo_data.build_district()
    assert dataclasses.asdict(again) == dataclasses.asdict(district)


def test_another_seed_another_district(district):
    other = demo_data.build_district(seed=district.seed + 1)
    assert [r.id_number for r in other.residents()] != [r.id_number for r in district.residents()]


def test_streets_are_the_districts_real_streets(district):
    assert district.root.name == "滨城区" and district.root.code == "371602"
    streets = district.units("street")
    assert len(streets) >= 4
    assert {s.name for s in streets} <= set(demo_data.STREETS)
    assert len({s.name for s in streets}) == len(streets)


def test_tree_shape_and_unique_codes(district):
    below = {
        "district": "street",
        "street": "community",
        "community": "grid_large",
        "grid_large": "grid_medium",
        "grid_medium": "grid_small",
    }
    for unit in district.units():
        assert unit.party_org and unit.staff
        if unit.level == "grid_small":
            assert not unit.children and unit.households
        else:
            assert unit.children and not unit.households
            assert {child.level for child in unit.children} == {below[unit.level]}
            assert len({child.name for child in unit.children}) == len(unit.children)  # siblings differ
    codes = [u.code for u in district.units()]
    assert len(set(codes)) == len(codes)
    assert len({u.name for u in district.units("community")}) == len(district.units("community"))


def test_about_three_thousand_residents_in_households_of_one_to_five(district):
    households = district.households()
    assert 3000 <= len(district.residents()) <= 3005
    assert all(1 <= len(h.residents) <= 5 for h in households)
    assert {len(h.residents) for h in households} == {1, 2, 3, 4, 5}
    addresses = [(h.unit_code, tuple(h.address.values())) for h in households]
    assert len(set(addresses)) == len(addresses)
    assert all(set(h.address) == {"compound", "building", "entrance", "room"} for h in households)


def test_id_numbers_are_valid_unique_and_match_birth_date_and_sex(district):
    residents = district.residents()
    for r in residents:
        assert id_number_problem(r.id_number) is None, r.id_number
        assert birth_date_of(r.id_number) == r.birth_date
        assert int(r.id_number[16]) % 2 == (1 if r.sex == "M" else 0)
        assert r.id_number[:6] in (demo_data.REGION_CODE,) + demo_data.OTHER_REGION_CODES
    assert len({r.id_number for r in residents}) == len(residents)


def test_phones_are_mobile_numbers_unique_across_residents_and_volunteers(district):
    phones = [r.phone for r in district.residents()]
    phones += [v.phone for v in district.volunteers if v.resident_phone is None]
    assert all(phone_problem(p) is None for p in phones)
    assert len(set(phones)) == len(phones)


def test_tags_are_grid_tags_and_plausible(district):
    from services.grid.vocabulary import TAGS

    tagged = [(r, tag) for r in district.residents() for tag in r.tags]
    assert {tag for _, tag in tagged} <= set(TAGS) - {"quarantined"}  # quarantine is the demo's to give
    assert all(r.age() >= 65 for r, tag in tagged if tag == "elderly_alone")
    assert all(len(r.tags) == len(set(r.tags)) for r in district.residents())
    counts = district.counts()["tags"]
    assert counts["elderly_alone"] > 50 and counts["party_member"] > 100 and counts["chronic_illness"] > 100


def test_volunteers_lawyers_posts_and_requests_point_at_real_records(district):
    codes = {u.code for u in district.units()}
    smalls = {u.code for u in district.units("grid_small")}
    residents = {r.phone: r for r in district.residents()}
    assert 200 <= len(district.volunteers) <= 500
    assert all(v.home_unit_code in smalls for v in district.volunteers)
    assert {v.home_unit_code for v in district.volunteers} == smalls  # every small grid has a volunteer
    linked = [v for v in district.volunteers if v.resident_phone]
    assert len(linked) >= len(district.volunteers) // 2
    assert len({v.resident_phone for v in linked}) == len(linked)
    assert all(v.resident_phone in residents and residents[v.resident_phone].name == v.name for v in linked)
    stations = {s.key: s for s in district.stations}
    assert all(s.unit_code in codes for s in district.stations)
    assert 24 <= len(district.lawyers) <= 60
    assert len({lawyer.license_no for lawyer in district.lawyers}) == len(district.lawyers)
    for lawyer in district.lawyers:
        assert set(lawyer.schedules) == set(lawyer.station_keys) and set(lawyer.station_keys) <= set(stations)
        windows = [(w["weekday"], w["start"], w["end"]) for weekly in lawyer.schedules.values() for w in weekly]
        for day, start, end in windows:  # one place at a time
            assert not any(d == day and s < end and start < e and (s, e) != (start, end) for d, s, e in windows)
    volunteers = {v.phone for v in district.volunteers}
    for post in district.posts:
        assert post.unit_code in codes
        signed = [p for shift in post.shifts for p in shift.volunteer_phones]
        assert set(signed) <= volunteers and len(signed) == len(set(signed))
        assert all(len(shift.volunteer_phones) <= shift.needed for shift in post.shifts)
    assert all(p.volunteer_phone in volunteers for p in district.pledges)
    assert district.requests and all(r.resident_phone in residents and r.unit_code in smalls for r in district.requests)
    households = {h.key for h in district.households()}
    assert district.visits and all(v.household_key in households for v in district.visits)


def test_street_count_is_bounded():
    with pytest.raises(ValueError):
        demo_data.build_district(streets=3)
    small = demo_data.build_district(residents=300, streets=4, volunteers=200)
    assert len(small.units("street")) == 4 and 300 <= len(small.residents()) <= 305
