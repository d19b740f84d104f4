"""The operator CLI's pure parts: argument parsing, tokens, error formatting, the tree's gathering
(against a fake grid) and rendering, and the tail's event lines."""

import io
import json
import os

import pytest
from nameko.exceptions import MethodNotFound, RemoteError
from rich.console import Console

from shared.auth import decode_token
from shared.errors import NotFound, ValidationError
from tools.cli import CliError
from tools.cli.__main__ import build_parser, main
from tools.cli.output import flatten_fields, format_remote_error
from tools.cli.tail import envelope_fields, format_event, format_time, matches, routing_keys
from tools.cli.tokens import caller_token, signing_secret
from tools.cli.tree import Subtree, UnitStats, collect, render, summary

SECRET = "unit-test-secret-for-the-cli-0123456789"


def parse(*argv):
    return build_parser().parse_args(list(argv))


def text_of(renderable, width=160):
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# ---- argument parsing -------------------------------------------------------------


def test_call_parses_target_and_json_kwargs():
    args = parse("call", "grid.count_residents", '{"under": "12", "tags_any": ["elderly_alone"]}')
    assert args.target == ("grid", "count_residents")
    assert args.kwargs == {"under": "12", "tags_any": ["elderly_alone"]}
    assert args.token is None and args.as_role is None and args.amqp_uri is None
    assert parse("call", "grid.list_units").kwargs == {}


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["call", "grid", "{}"], "expected SERVICE.METHOD"),
        (["call", "grid.get_unit", "[1, 2]"], "must be a JSON object"),
        (["call", "grid.get_unit", "{unit_id: 1}"], "not valid JSON"),
        (["call", "grid.get_unit", "{}", "--token", "t", "--as-role", "admin"], "not allowed with argument"),
        (["call", "grid.get_unit", "{}", "--as-role", "mayor"], "invalid choice"),
        (["token", "--sub", "alice"], "--role"),
        (["tree"], "unit_id"),
    ],
)
def test_usage_errors_exit_2_with_a_reason(capsys, argv, complaint):
    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


def test_tree_and_tail_options():
    args = parse("tree", "7", "--depth", "5", "--campaign", "3", "--as-role", "officer", "--unit", "7")
    assert (args.unit_id, args.depth, args.campaign, args.as_role, args.unit) == ("7", 5, "3", ["officer"], "7")
    assert parse("tree", "7").depth == 2
    args = parse("tail", "--service", "grid", "--service", "legal", "--type", "incident_*", "--count", "2")
    assert (args.service, args.types, args.count) == (["grid", "legal"], ["incident_*"], 2)


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "token" in capsys.readouterr().out


# ---- tokens ----------------------------------------------------------------------------


def test_token_command_mints_a_token_the_services_accept(monkeypatch, capsys):
    monkeypatch.setenv("GRASSROOTS_JWT_SECRET", SECRET)
    assert (
        main(
            [
                "token",
                "--sub",
                "alice",
                "--role",
                "officer",
                "--role",
                "grid_worker",
                "--unit",
                "12",
                "--pii",
                "--ttl",
                "60",
            ]
        )
        == 0
    )
    caller = decode_token(SECRET, capsys.readouterr().out.strip())
    assert caller.sub == "alice" and caller.roles == {"officer", "grid_worker"}
    assert caller.unit == "12" and caller.pii


def test_secret_from_the_environment_else_var_dev_env(tmp_path):
    dev_env = tmp_path / "dev.env"
    assert signing_secret({"GRASSROOTS_JWT_SECRET": "from-env"}, str(dev_env)) == "from-env"
    with pytest.raises(CliError, match="GRASSROOTS_JWT_SECRET is not set"):
        signing_secret({}, str(dev_env))
    assert not dev_env.exists()  # never made up: running services would not accept it
    dev_env.write_text("GRASSROOTS_JWT_SECRET=from-file\nGRASSROOTS_PII_KEY=other\n")
    assert signing_secret({}, str(dev_env)) == "from-file"


def test_token_command_without_a_secret_fails_concisely(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GRASSROOTS_JWT_SECRET", raising=False)
    monkeypatch.setattr("tools.cli.tokens.dev_env_path", lambda: str(tmp_path / "dev.env"))
    assert main(["token", "--sub", "x", "--role", "admin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GRASSROOTS_JWT_SECRET is not set") and "Traceback" not in err


def test_caller_token_choices():
    env = {"GRASSROOTS_JWT_SECRET": SECRET}
    assert caller_token(parse("call", "grid.get_unit", "--token", "given"), env) == "given"
    assert caller_token(parse("call", "grid.get_unit"), {**env, "GRASSROOTS_TOKEN": "exported"}) == "exported"
    admin = decode_token(SECRET, caller_token(parse("call", "grid.get_unit"), env))
    assert admin.roles == {"admin"} and admin.unit is None
    officer = decode_token(
        SECRET,
        caller_token(parse("call", "grid.get_unit", "--as-role", "officer", "--unit", "12", "--sub", "bob"), env),
    )
    assert (officer.sub, officer.roles, officer.unit, officer.pii) == ("bob", {"officer"}, "12", False)
    with pytest.raises(CliError, match="--as-role"):
        caller_token(parse("call", "grid.get_unit", "--token", "given", "--unit", "12"), env)


# ---- errors ------------------------------------------------------------------------------


def test_validation_error_lists_each_field():
    error = ValidationError({"unit_id": ["Not a valid id."], "address": {"room": ["Missing data for required field."]}})
    text = format_remote_error(error, "grid.register_household").plain
    assert text.splitlines() == [
        "ValidationError: grid.register_household refused its arguments",
        "  address.room: Missing data for required field.",
        "  unit_id: Not a valid id.",
    ]


def test_untyped_remote_errors_read_the_same():
    plain = RemoteError("ValidationError", json.dumps({"level": ["Must be one of: district, street."]}))
    assert "  level: Must be one of: district, street." in format_remote_error(plain, "grid.create_unit").plain
    assert format_remote_error(NotFound("unit 9 not found")).plain == "NotFound: unit 9 not found"
    assert format_remote_error(RemoteError("Conflict", "duplicate")).plain == "Conflict: duplicate"
    assert (
        format_remote_error(MethodNotFound("get_unitt"), "grid.get_unitt").plain
        == "MethodNotFound: grid has no method 'get_unitt'"
    )


def test_flatten_fields_handles_lists_of_nested_messages():
    fields = {"weekly": {"0": {"start": ["Not a valid time."]}}, "_schema": ["ends before it starts"]}
    assert list(flatten_fields(fields)) == [
        ("_schema", "ends before it starts"),
        ("weekly.0.start", "Not a valid time."),
    ]


# ---- tree: gathering, against a fake grid --------------------------------------------------


def unit(uid, parent, level, name, path, closed=False):
    return {"id": uid, "parent_id": parent, "level": level, "name": name, "path": path, "closed": closed}


UNITS = [
    unit("1", None, "district", "Lixia", ["1"]),
    unit("2", "1", "street", "East Street", ["1", "2"]),
    unit("3", "2", "community", "Willow", ["1", "2", "3"]),
    unit("4", "2", "community", "Aspen", ["1", "2", "4"]),
    unit("5", "1", "community", "Direct Community", ["1", "5"]),  # the street level skipped
    unit("6", "3", "grid_large", "Willow Large", ["1", "2", "3", "6"]),
    unit("7", "6", "grid_medium", "Willow Medium", ["1", "2", "3", "6", "7"]),
    unit("8", "7", "grid_small", "Willow Small", ["1", "2", "3", "6", "7", "8"]),
]
RESIDENTS = {"8": 5}  # residents live in small grids
INCIDENTS = [
    {"id": "1", "unit_id": "8", "status": "open"},
    {"id": "2", "unit_id": "4", "status": "escalated"},
    {"id": "3", "unit_id": "3", "status": "open"},
]


class Reply:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Method:
    def __init__(self, function, calls):
        self.function, self.calls = function, calls

    def __call__(self, **kwargs):
        self.calls.append((self.function.__name__, kwargs))
        return self.function(**kwargs)

    def call_async(self, **kwargs):
        return Reply(self(**kwargs))


class FakeGrid:
    """The grid RPCs the tree composes, over UNITS (pages of 2 to exercise paging)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        by_id = {u["id"]: u for u in UNITS}
        refused = []

        def below(under):
            return [u for u in UNITS if under in u["path"] and u["id"] != under]

        def paged(rows, page, page_size):
            size = 2
            return {
                "items": rows[(page - 1) * size : page * size],
                "page": page,
                "page_size": size,
                "has_more": len(rows) > page * size,
            }

        def get_unit(unit_id):
            return by_id[unit_id]

        def list_units(under, level, include_closed, page, page_size):
            return paged([u for u in below(under) if u["level"] == level], page, page_size)

        def count_residents(under):
            return {"count": sum(n for uid, n in RESIDENTS.items() if under in by_id[uid]["path"])}

        def list_incidents(under, status, page, page_size):
            rows = [i for i in INCIDENTS if i["status"] == status and under in by_id[i["unit_id"]]["path"]]
            return paged(rows, page, page_size)

        def screening_progress(campaign_id, level):
            assert level not in refused, "asked again after a level was refused"
            if level == "district":
                refused.append(level)
                raise ValidationError({"level": ["Must not be above the campaign's level (street)."]})
            rows = [
                {"unit_id": u["id"], "households": 4, "visited": 3, "coverage_percent": 75.0}
                for u in below("2") + [by_id["2"]]
                if u["level"] == level
            ]
            return {"campaign_id": campaign_id, "title": "Spring visits", "units": rows}

        for function in (get_unit, list_units, count_residents, list_incidents, screening_progress):
            setattr(self, function.__name__, Method(function, self.calls))


def test_collect_composes_the_grid_rpcs():
    grid = FakeGrid()
    subtree = collect(grid, "1", depth=2, campaign_id="9")
    assert [u["id"] for u in subtree.units] == ["1", "2", "3", "4", "5"]  # street + community levels
    stats = subtree.stats
    assert stats["1"].residents == 5 and stats["3"].residents == 5 and stats["4"].residents == 0
    # incidents count in every shown unit above where they were reported (8 is deeper: looked up)
    assert stats["1"].incidents == {"open": 2, "escalated": 1}
    assert stats["3"].incidents == {"open": 2, "escalated": 0}
    assert stats["4"].incidents == {"open": 0, "escalated": 1}
    assert ("get_unit", {"unit_id": "8"}) in grid.calls
    # coverage only where the campaign reaches (not the district above it)
    assert stats["1"].coverage is None and stats["2"].coverage == 75.0 and stats["3"].households == 4
    assert subtree.campaign == {"id": "9", "title": "Spring visits"}
    assert {name for name, _ in grid.calls} == {
        "get_unit",
        "list_units",
        "count_residents",
        "list_incidents",
        "screening_progress",
    }


def test_collect_without_campaign_asks_for_no_coverage():
    grid = FakeGrid()
    subtree = collect(grid, "2", depth=0)
    assert [u["id"] for u in subtree.units] == ["2"]
    assert subtree.campaign is None and subtree.stats["2"].coverage is None
    assert "screening_progress" not in {name for name, _ in grid.calls}


# ---- tree: rendering ----------------------------------------------------------------------------


def sample_subtree():
    units = UNITS[:5] + [
        unit("9", "2", "community", "Closed Co", ["1", "2", "9"], closed=True),
        unit("10", "9", "grid_large", "Orphan Large", ["1", "2", "9", "10"]),
    ]
    stats = {u["id"]: UnitStats(residents=2) for u in units}
    stats["1"] = UnitStats(residents=1, households=10, visited=9, coverage=90.0, incidents={"open": 2, "escalated": 1})
    stats["3"].incidents = {"open": 1, "escalated": 0}
    return Subtree(
        root=units[0],
        units=[u for u in units if u["id"] != "9"],
        stats=stats,
        depth=3,
        campaign={"id": "4", "title": "Spring visits"},
    )


def test_render_nests_units_under_their_nearest_shown_ancestor():
    lines = text_of(render(sample_subtree())).splitlines()
    names = [
        next(
            name
            for name in ("Lixia", "East Street", "Willow", "Aspen", "Direct Community", "Orphan Large")
            if name in line
        )
        for line in lines
    ]
    # children by name; a skipped level hangs under the district; a hidden (closed) parent's child
    # under the nearest shown ancestor
    assert names == ["Lixia", "Direct Community", "East Street", "Aspen", "Orphan Large", "Willow"]
    assert lines[0].startswith("Lixia  district #1")
    assert lines[1].startswith("├── Direct Community  community #5")
    assert lines[2].startswith("└── East Street  street #2")
    assert lines[3].startswith("    ├── Aspen  community #4")
    assert lines[5].startswith("    └── Willow  community #3")


def test_render_labels_carry_the_counts():
    text = text_of(render(sample_subtree()))
    root, *_ = text.splitlines()
    assert root == (
        "Lixia  district #1  ·  1 resident  ·  10 households  ·  screened 9/10 90%  ·  3 open incidents (1 escalated)"
    )
    willow = next(line for line in text.splitlines() if "Willow" in line)
    assert willow.endswith("Willow  community #3  ·  2 residents  ·  1 open incident")
    aspen = next(line for line in text.splitlines() if "Aspen" in line)
    assert aspen.endswith("no open incidents") and "screened" not in aspen
    assert "units below Lixia (levels street…grid_large)" in text_of(summary(sample_subtree()))
    assert "campaign #4 “Spring visits”" in text_of(summary(sample_subtree()))


def test_render_hides_columns_the_token_could_not_read():
    subtree = sample_subtree()
    subtree.show_residents = subtree.show_incidents = False
    text = text_of(render(subtree))
    assert "resident" not in text and "incident" not in text


# ---- tail ------------------------------------------------------------------------------------


ENVELOPE = {
    "specversion": "1.0",
    "id": "6f1c",
    "source": "grassroots/grid",
    "type": "incident_reported",
    "time": "2026-11-26T10:58:01.123456+00:00",
    "subject": "incident/9",
    "datacontenttype": "application/json",
    "data": {"incident_id": "9", "unit_path": ["1", "2", "7"], "category": "dispute", "note": "two words"},
}


def test_event_line_shows_the_envelope_compactly():
    line = format_event(ENVELOPE).plain
    assert line == (
        "2026-11-26 10:58:01.123Z  grassroots/grid  incident_reported  incident/9  "
        'incident_id=9 unit_path=[1,2,7] category=dispute note="two words"'
    )


def test_event_line_never_shows_what_is_not_an_envelope_field():
    body = {**ENVELOPE, "resident_name": "Zhang San", "phone": "13800000000"}
    assert set(envelope_fields(body)) == {"time", "source", "type", "subject", "data"}
    assert "Zhang" not in format_event(body).plain and "1380" not in format_event(body).plain
    odd = format_event({"name": "Zhang San"}, "grid.events", "whatever").plain
    assert "not an event envelope" in odd and "Zhang" not in odd
    assert "not an event envelope" in format_event(None, "grid.events", "x").plain


def test_type_filters_bind_exact_keys_or_everything():
    assert routing_keys(None) == ["#"]
    assert routing_keys(["unit_created", "unit_closed"]) == ["unit_closed", "unit_created"]
    assert routing_keys(["unit_created", "incident_*"]) == ["#"]
    assert matches("incident_reported", ["incident_*"]) and not matches("unit_created", ["incident_*"])
    assert matches("anything", None)


def test_time_is_shown_in_utc_to_the_millisecond():
    assert format_time("2026-11-26T18:58:01.5+08:00") == "2026-11-26 10:58:01.500Z"
    assert format_time("not a time") == "not a time"


def test_module_entry_point_is_installed_as_grassroots():
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "pyproject.toml"), "rb") as source:
        project = tomllib.load(source)["project"]
    assert project["scripts"]["grassroots"] == "tools.cli.__main__:main"
