import pytest

from tests.support import EventTap, build_district, token


@pytest.fixture
def admin(grid, call_as):
    """The grid service, called with an admin token."""
    return call_as(token("admin", sub="root")).grid


@pytest.fixture
def district(admin):
    return build_district(admin)


def _event_tap(service):
    """A fixture ``<service>_events``: an EventTap on the service's event exchange for this test."""

    def tap(request):
        config = request.getfixturevalue(f"{service}_config")
        events = EventTap(config["AMQP_URI"], service)
        yield events
        events.close()

    return pytest.fixture(name=f"{service}_events")(tap)


grid_events, notices_events, volunteer_events = (_event_tap(s) for s in ("grid", "notices", "volunteer"))
