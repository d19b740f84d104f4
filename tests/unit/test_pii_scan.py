"""tools.pii_scan, the check that an erasure leaves nothing: on SQLite databases with a resident's
data planted in each kind of column (text, JSON, encrypted binary, hex ciphertext), it must find
each one — and nothing in a clean database, nor in a neighbour's row, nor in a row under legal hold."""

import json

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
)

from shared.pii import PiiVault
from tools import pii_scan

VAULT = PiiVault("unit-test-pii-key-0123456789")
NAME, PHONE, ID_NUMBER = "欧阳翠花", "13912340077", "37010219500101771X"
ADDRESS = ["Zephyrwood Court", "7", "1203"]
SECRET_VALUES = (NAME, PHONE, ID_NUMBER, "Zephyrwood")


@pytest.fixture
def found():
    return pii_scan.needles(NAME, PHONE, ID_NUMBER, ADDRESS)


def database(tmp_path, name, rows):
    """A SQLite database of one service: tables ``people`` (text, JSON, binary) and ``cases`` (with a
    legal-hold flag) and ``parties`` (rows of a case); ``rows`` fills them."""
    url = f"sqlite:///{tmp_path / name}.db"
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100)),
        Column("note", Text),
        Column("address", JSON),
        Column("phone_enc", LargeBinary),
        Column("age", Integer),
    )
    cases = Table(
        "cases",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("description", Text),
        Column("legal_hold", Boolean, default=False),
    )
    parties = Table(
        "parties",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("case_id", Integer, ForeignKey("cases.id")),
        Column("name", String(100)),
    )
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table, values in rows:
            conn.execute({"people": people, "cases": cases, "parties": parties}[table].insert(), values)
    engine.dispose()
    return url


def neighbour(id_=1):
    """A neighbour in the same compound, another room and phone: no hit."""
    return (
        "people",
        {
            "id": id_,
            "name": "李明",
            "note": "lives at Zephyrwood Court 7-1204",
            "address": {"compound": "Zephyrwood Court", "building": "7", "room": "1204"},
            "phone_enc": VAULT.encrypt("13912340078", b"phone"),
            "age": 40,
        },
    )


def run(urls, found, **kwargs):
    return pii_scan.scan(urls, found, VAULT, **kwargs)


def test_a_clean_database_is_clean(tmp_path, found):
    report = run({"grid": database(tmp_path, "grid", [neighbour()])}, found)
    assert report.clean and report.hits == [] and report.unreadable == []
    assert report.tables == {"grid.people": 1, "grid.cases": 0, "grid.parties": 0} and report.cells >= 4


@pytest.mark.parametrize(
    ("column", "value", "kind", "how"),
    [
        ("name", NAME, "name", "text"),
        ("note", "call \uff0b86 139-1234-0077 after 6", "phone", "text"),  # separators, full width plus
        ("note", "id 37010219500101771x on file", "id_number", "text"),  # case-insensitive
        ("note", json.dumps({"who": NAME}), "name", "text"),  # JSON in a text cell, \\u-escaped
        ("address", {"compound": "zephyrwood court", "building": "7", "room": "1203"}, "address", "json"),
        ("address", {"contacts": [{"name": NAME}]}, "name", "json"),
        ("phone_enc", VAULT.encrypt(PHONE, b"phone"), "phone", "encrypted:phone"),
        ("phone_enc", VAULT.encrypt(ID_NUMBER, b"id_number"), "id_number", "encrypted:id_number"),
        (
            "phone_enc",
            VAULT.encrypt(json.dumps({"name": NAME}), b"idempotent-reply"),
            "name",
            "encrypted:idempotent-reply",
        ),
        ("note", VAULT.encrypt(PHONE, b"phone").hex(), "phone", "hex-encrypted:phone"),
        ("address", {"phone": VAULT.encrypt(PHONE, b"phone").hex()}, "phone", "hex-encrypted:phone"),
        ("phone_enc", f"plain {NAME}".encode(), "name", "binary"),
        ("note", VAULT.blind_index(PHONE, b"phone"), "phone", "blind-index:phone"),
        ("name", VAULT.blind_index(ID_NUMBER, b"id_number"), "id_number", "blind-index:id_number"),
    ],
)
def test_a_planted_value_is_found_in_each_kind_of_column(tmp_path, found, column, value, kind, how):
    planted = {"id": 9, "name": "someone", "note": None, "address": None, "phone_enc": None, "age": 1, column: value}
    urls = {
        "grid": database(tmp_path, "grid", [neighbour()]),
        "notices": database(tmp_path, "notices", [neighbour(), ("people", planted)]),
    }
    report = run(urls, found)
    assert not report.clean
    assert [(h.service, h.table, h.column, h.key, h.needle.kind, h.how) for h in report.hits] == [
        ("notices", "people", column, (("id", 9),), kind, how)
    ]
    assert report.where() == {("notices", "people", column)}


def test_the_address_is_found_only_whole(tmp_path):
    """All its parts in one cell: the compound alone (neighbours share it) is no hit."""
    only_address = pii_scan.needles(address=ADDRESS)
    same_compound = ("people", {"id": 2, "name": "x", "note": "Zephyrwood Court 7"})
    assert run({"grid": database(tmp_path, "grid", [neighbour(), same_compound])}, only_address).clean
    whole = ("people", {"id": 3, "name": "x", "note": "ZEPHYRWOOD COURT 7-2-1203"})
    report = run({"grid": database(tmp_path, "grid2", [whole])}, only_address)
    assert [(h.column, h.needle.kind) for h in report.hits] == [("note", "address")]


def test_an_address_in_columns_of_its_own_is_found_in_its_row(tmp_path):
    """As the grid keeps households: compound, building, room each a column; the neighbour's row is no hit."""
    only_address = pii_scan.needles(address=ADDRESS)
    url = f"sqlite:///{tmp_path / 'grid'}.db"
    metadata = MetaData()
    households = Table(
        "households",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("unit_path", Text),
        Column("compound", String(100)),
        Column("building", String(30)),
        Column("room", String(30)),
    )
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            households.insert(),
            [
                {"id": 1, "unit_path": "/1/7/1203/", "compound": "Zephyrwood Court", "building": "7", "room": "1204"},
                {"id": 2, "unit_path": "/1/7/", "compound": "Zephyrwood Court", "building": "7", "room": "1203"},
                {"id": 3, "unit_path": "/1/7/", "compound": "[erased]", "building": "[erased]", "room": "[erased]"},
            ],
        )
    engine.dispose()
    report = run({"grid": url}, only_address)
    assert [(h.column, h.key, h.how) for h in report.hits] == [("compound+building+room", (("id", 2),), "columns")]


def test_rows_under_legal_hold_are_reported_apart(tmp_path, found):
    rows = [
        ("cases", {"id": 1, "description": f"{NAME} vs neighbour", "legal_hold": True}),
        ("cases", {"id": 2, "description": f"{NAME} vs landlord", "legal_hold": False}),
        ("parties", {"id": 10, "case_id": 1, "name": NAME}),
        ("parties", {"id": 11, "case_id": 2, "name": NAME}),
    ]
    urls = {"legal": database(tmp_path, "legal", rows), "grid": database(tmp_path, "grid", rows)}
    report = run(urls, found)
    # legal's held case and its party row are kept; the other case is a hit, and so is every row of a
    # service that has no legal holds (the grid's copy of the same rows)
    assert {(h.service, h.table, h.key) for h in report.held} == {
        ("legal", "cases", (("id", 1),)),
        ("legal", "parties", (("id", 10),)),
    }
    assert {(h.service, h.table, h.key) for h in report.hits} == {
        ("legal", "cases", (("id", 2),)),
        ("legal", "parties", (("id", 11),)),
        ("grid", "cases", (("id", 1),)),
        ("grid", "cases", (("id", 2),)),
        ("grid", "parties", (("id", 10),)),
        ("grid", "parties", (("id", 11),)),
    }
    strict = run(urls, found, held=pii_scan.no_holds)
    assert strict.held == [] and len(strict.hits) == 8


def test_a_binary_no_context_opens_fails_the_scan(tmp_path, found):
    other_key = PiiVault("another-key-entirely-0123456789")
    row = ("people", {"id": 5, "name": "x", "phone_enc": other_key.encrypt(PHONE, b"phone")})
    report = run({"volunteer": database(tmp_path, "volunteer", [row])}, found)
    assert report.hits == [] and not report.clean
    assert [(h.table, h.column, h.key, h.how) for h in report.unreadable] == [
        ("people", "phone_enc", (("id", 5),), "unreadable")
    ]


def test_the_output_never_shows_the_needles_or_what_was_found(tmp_path, monkeypatch, capsys):
    rows = [
        (
            "people",
            {
                "id": 1,
                "name": NAME,
                "note": f"{PHONE} {ID_NUMBER}",
                "address": dict(zip(("c", "b", "r"), ADDRESS, strict=True)),
            },
        ),
        ("people", {"id": 2, "name": "x", "phone_enc": VAULT.encrypt(f"{NAME} {PHONE}", b"phone")}),
    ]
    url = database(tmp_path, "grid", rows)
    args = ["--name", NAME, "--phone", PHONE, "--id-number", ID_NUMBER, "--database", f"grid={url}"]
    args += [a for part in ADDRESS for a in ("--address", part)]
    monkeypatch.setenv(pii_scan.KEY_ENV, "unit-test-pii-key-0123456789")  # the CLI reads the suite's key
    code = pii_scan.main(args)
    out = capsys.readouterr().out
    assert code == 1
    assert "HIT  grid.people.name [id=1]: name 欧***" in out
    assert "grid.people.phone_enc [id=2]: phone 139****0077 (encrypted:phone)" in out
    for secret in SECRET_VALUES:
        assert secret.casefold() not in out.casefold()
    assert "NOT CLEAN" in out


def test_the_cli_exits_0_on_a_clean_database_and_reads_a_needles_file(tmp_path, monkeypatch, capsys):
    url = database(tmp_path, "grid", [neighbour()])
    needles_file = tmp_path / "needles.json"
    needles_file.write_text(json.dumps({"name": NAME, "phone": PHONE, "address": ADDRESS}), encoding="utf-8")
    monkeypatch.setenv(pii_scan.KEY_ENV, "unit-test-pii-key-0123456789")
    assert pii_scan.main(["--needles", str(needles_file), "--database", f"grid={url}"]) == 0
    assert "clean: nothing found outside legal holds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({}, "no needles"), ({"name": "x"}, "name"), ({"address": ["7", "12"]}, "address")],
)
def test_needles_that_would_match_everything_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        pii_scan.needles(**kwargs)


def test_a_row_with_only_the_name_is_marked_a_possible_namesake(tmp_path, found):
    rows = [
        ("people", {"id": 1, "name": NAME, "note": "another person of the same name"}),
        ("people", {"id": 2, "name": NAME, "note": f"phone {PHONE}"}),
    ]
    report = run({"grid": database(tmp_path, "grid", rows)}, found)
    marked = {(h.key, h.needle.kind): h.name_only for h in report.hits}
    assert marked == {((("id", 1),), "name"): True, ((("id", 2),), "name"): False, ((("id", 2),), "phone"): False}
    assert "a namesake?" in report.hits[0].line() and "namesake" not in report.hits[1].line()
