"""The operator CLI end to end: its ``main()`` run in-process against the grid service on this
test's vhost (call, tree, tail)."""

import datetime as dt
import json

import eventlet
import pytest

from tests.support import add_household, add_resident, token, wait_until
from tools.cli.__main__ import main


@pytest.fixture
def cli(grid_config, capsys):
    """cli(*argv) -> (exit code, stdout, stderr), on this test's broker vhost."""

    def run(*argv):
        code = main([*argv, "--amqp-uri", grid_config["AMQP_URI"]])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


ADMIN = ("--token", token("admin", sub="root"))


def test_call_returns_the_unit_as_json(district, cli):
    code, out, err = cli("call", "grid.get_unit", json.dumps({"unit_id": district["street"]}), *ADMIN)
    assert code == 0, err
    unit = json.loads(out)
    assert unit["name"] == "East Street" and unit["level"] == "street"
    assert unit["path"] == [district["district"], district["street"]]


def test_a_refused_call_prints_the_field_error_and_exits_non_zero(district, cli):
    code, out, err = cli("call", "grid.get_unit", '{"unit_id": "not-an-id", "colour": "red"}', *ADMIN)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "ValidationError: grid.get_unit refused its arguments",
        "  colour: Unknown field.",
        "  unit_id: Not a valid id.",
    ]


def test_typed_errors_read_plainly(district, cli):
    code, _, err = cli("call", "grid.get_unit", '{"unit_id": "987654"}', *ADMIN)
    assert code == 1 and err.startswith("NotFound: ")
    # a token minted for a grid worker of community a cannot read community b
    code, _, err = cli(
        "call",
        "grid.get_unit",
        json.dumps({"unit_id": district["community_b"]}),
        "--as-role",
        "grid_worker",
        "--unit",
        district["community_a"],
    )
    assert code == 1 and err.startswith("Forbidden: ")
    code, _, err = cli("call", "grid.no_such_method", "{}", *ADMIN)
    assert code == 1 and "grid has no method 'no_such_method'" in err
    code, _, err = cli("call", "nosuch.get_unit", "{}", *ADMIN, "--timeout", "5")
    assert code == 3 and "no service named 'nosuch'" in err


def test_tree_shows_the_districts_units_with_counts(district, admin, cli):
    for room in ("101", "102"):
        household = add_household(admin, district["small_a"], room=room)
        add_resident(admin, household, seq=int(room))
    today = dt.date.today()
    campaign = admin.start_screening(
        under=district["street"],
        title="Door to door",
        starts_on=today.isoformat(),
        ends_on=(today + dt.timedelta(days=3)).isoformat(),
    )
    admin.record_visit(campaign_id=campaign["id"], household_id=household, outcome="seen_ok")
    admin.report_incident(unit_id=district["small_b"], category="dispute", description="Noise at night")

    code, out, err = cli("tree", district["district"], "--depth", "5", "--campaign", campaign["id"], *ADMIN)
    assert code == 0, err
    lines = out.splitlines()
    line = {
        name: next(line for line in lines if f"{name}  " in line)
        for name in ("Test District", "East Street", "Community a", "Small a", "Small b")
    }
    assert lines[0] == line["Test District"]
    assert line["Test District"].endswith("2 residents  ·  1 open incident")  # the campaign is the street's
    assert line["East Street"].endswith("2 residents  ·  2 households  ·  screened 1/2 50%  ·  1 open incident")
    assert "Community a  community" in line["Community a"] and "no open incidents" in line["Community a"]
    assert line["Small a"].endswith(
        f"grid_small #{district['small_a']}  ·  2 residents  ·  2 households  ·  screened 1/2 50%  ·  no open incidents"
    )
    assert "0 residents  ·  0 households  ·  1 open incident" in line["Small b"]
    assert line["Small a"].index("Small a") > line["Community a"].index("Community a")  # nested deeper
    assert "9 units below Test District" in out and "“Door to door”" in out

    # the default depth stops two levels down
    code, out, _ = cli("tree", district["district"], *ADMIN)
    assert code == 0 and "Community b" in out and "Large a" not in out


def test_tree_of_an_unknown_unit_fails_concisely(grid, cli):
    code, out, err = cli("tree", "424242", *ADMIN)
    assert code == 1 and out == "" and err.startswith("NotFound: ")


def test_tail_prints_an_event_emitted_by_an_action(admin, cli, rabbit_config, rabbit_manager):
    tail = eventlet.spawn(cli, "tail", "--service", "grid", "--type", "unit_created", "--count", "1")

    def tail_bound():
        return [
            queue
            for queue in rabbit_manager.get_queues(rabbit_config["vhost"])
            if queue["name"].startswith("grassroots-tail.")
            and any(
                b["source"] == "grid.events"
                for b in rabbit_manager.get_queue_bindings(rabbit_config["vhost"], queue["name"])
            )
        ]

    wait_until(tail_bound, timeout=10, message="tail never bound its queue")
    district = admin.create_unit(parent_id=None, level="district", name="Tail District")
    with eventlet.Timeout(20):
        code, out, err = tail.wait()
    assert code == 0, err
    assert "following grid.events (unit_created)" in err
    (line,) = out.splitlines()
    assert f"grassroots/grid  unit_created  unit/{district['id']}  unit_id={district['id']} level=district" in line
    assert "Tail District" not in line  # ids, levels and paths only
