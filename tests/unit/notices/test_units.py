"""Units as the notices service needs them (services.notices.units): paths from the grid, and an
audience's outermost units."""

import pytest
from hypothesis import given, strategies as st

from services.notices.units import outermost, unit_paths
from shared.errors import ValidationError
from shared.grid_copies import contains
from tests.unit.notices.conftest import PATH_A, PATH_B, SMALL_A, SMALL_B


def test_outermost_units_drop_nested_ones():
    assert outermost({1: "/1/", 5: "/1/5/", 7: "/2/7/"}) == {1: "/1/", 7: "/2/7/"}
    assert outermost({12: "/1/12/", 1: "/1/2/"}) == {12: "/1/12/", 1: "/1/2/"}


paths = st.lists(st.integers(1, 12), min_size=1, max_size=4).map(lambda ids: "/" + "".join(f"{i}/" for i in ids))


@given(st.dictionaries(st.integers(1, 50), paths, max_size=8))
def test_the_outermost_units_cover_every_unit_and_none_lies_under_another(audience):
    kept = outermost(audience)
    assert set(kept.items()) <= set(audience.items())
    assert all(any(contains(outer, path) for outer in kept.values()) for path in audience.values())
    assert not any(a != b and contains(kept[a], kept[b]) for a in kept for b in kept)


def test_unit_paths_come_from_the_grid_and_an_unknown_unit_names_the_field(grid):
    assert unit_paths(grid, ["4", 6]) == {SMALL_A: PATH_A, SMALL_B: PATH_B}
    with pytest.raises(ValidationError) as raised:
        unit_paths(grid, [99], field="audience")
    assert raised.value.fields == {"audience": ["Unknown unit 99."]}
