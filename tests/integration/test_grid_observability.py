"""/metrics, /healthz and /readyz served by the grid service over real HTTP."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import ValidationError
from tests.support import add_household, add_resident, build_district, token


def get(config, path):
    url = f"http://{config['WEB_SERVER_ADDRESS']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # no Accept header, like plain curl
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read().decode()


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_rate_errors_and_duration_after_calls(grid, grid_config, call_as):
    admin = call_as(token("admin")).grid
    district = build_district(admin)
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 5)["id"]
    admin.tag_resident(resident_id=resident, tag="elderly_alone")
    with pytest.raises(ValidationError):
        admin.get_unit(unit_id="not-an-id")

    status, content_type, body = get(grid_config, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    values = samples(body)
    rpc = ("entrypoint", "rpc"), ("method", "create_unit"), ("outcome", "success"), ("service", "grid")
    assert values[("grassroots_requests_total", tuple(sorted(rpc)))] == 10  # build_district creates 10 units
    bad = ("entrypoint", "rpc"), ("method", "get_unit"), ("outcome", "client_error"), ("service", "grid")
    assert values[("grassroots_requests_total", tuple(sorted(bad)))] == 1
    count_key = (
        "grassroots_request_duration_seconds_count",
        tuple(sorted({"entrypoint": "rpc", "method": "create_unit", "service": "grid"}.items())),
    )
    assert values[count_key] == 10
    assert values[("grassroots_grid_residents", ())] == 1
    assert values[("grassroots_grid_tagged_residents", (("tag", "elderly_alone"),))] == 1
    assert values[("grassroots_grid_units", (("level", "grid_small"),))] == 2
    assert ("grassroots_outbox_pending", ()) in values


def test_health_and_readiness(grid, grid_config):
    status, _, body = get(grid_config, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, _, body = get(grid_config, "/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"broker": True, "database": True}


def test_readiness_fails_while_the_broker_is_unreachable(grid, grid_config, rabbit_manager):
    # Deleting the service's vhost makes the broker refuse it, as if it were down.
    vhost = grid_config["vhost"]
    rabbit_manager.delete_vhost(vhost)
    try:
        status, _, body = get(grid_config, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["broker"] is False
        assert get(grid_config, "/healthz")[0] == 200
    finally:  # the fixture that made the vhost deletes it
        rabbit_manager.create_vhost(vhost)
        rabbit_manager.set_vhost_permissions(vhost, grid_config["username"], ".*", ".*", ".*")


def test_readiness_fails_while_the_database_is_unreachable(grid, grid_config):
    from sqlalchemy import text

    from tests.support import admin_engine

    name = grid_config["DATABASE_URL"].rsplit("/", 1)[1]
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    try:
        status, _, body = get(grid_config, "/readyz")
        assert status == 503 and json.loads(body)["checks"]["database"] is False
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        engine.dispose()
