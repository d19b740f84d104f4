import pytest

from tests.support import build_district, token


@pytest.fixture
def admin(grid, call_as):
    """The grid service, called with an admin token."""
    return call_as(token("admin", sub="root")).grid


@pytest.fixture
def district(admin):
    return build_district(admin)
