"""The goals table of `make bench-all` (bench/all.py, bench.harness.goal): verdicts, missing results, and
the README section it rewrites."""

import json

import pytest

from bench import all as bench_all, harness


def test_a_ratio_goal_passes_only_within_its_ratio():
    assert harness.goal("get_unit p50", 2.4, "<= 2.5x floor", floor=1.0, ratio_target=2.5)["verdict"] == "pass"
    missed = harness.goal("get_unit p50", 2.6, "<= 2.5x floor", floor=1.0, ratio_target=2.5)
    assert (missed["verdict"], missed["ratio"]) == ("MISS", 2.6)


def test_a_bounded_goal_and_a_ratio_goal_must_both_hold():
    assert harness.goal("cpu", 7.9, "<= 8 CPU-s", bound=8, unit="CPU-s")["verdict"] == "pass"
    assert harness.goal("cpu", 8.1, "<= 8 CPU-s", bound=8, unit="CPU-s")["verdict"] == "MISS"
    both = harness.goal("p50", 30.0, "<= 3x and <= 25 ms", floor=12.0, ratio_target=3, bound=25)
    assert both["verdict"] == "MISS"  # within the ratio, over the bound


def test_a_ratio_goal_without_a_floor_is_a_miss():
    assert harness.goal("p50", 1.0, "<= 2x floor", floor=None, ratio_target=2)["verdict"] == "MISS"


def test_a_bench_that_wrote_no_goals_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "VAR", str(tmp_path))
    assert bench_all.goals_of("legal", "none.json", 1)[0]["verdict"] == "MISS"
    (tmp_path / "empty.json").write_text(json.dumps({"client": {}}))
    assert bench_all.goals_of("legal", "empty.json", 0)[0]["target"] == "it wrote no goals"
    (tmp_path / "good.json").write_text(json.dumps({"goals": [harness.goal("x", 1.0, "<= 2", bound=2)]}))
    assert bench_all.goals_of("legal", "good.json", 0) == [
        {**harness.goal("x", 1.0, "<= 2", bound=2), "bench": "legal"}
    ]


STAMP = {"date": "2026-11-30 06:00 UTC", "cpus": 2, "machine": "cpu", "python": "3.11.7", "load_before": 1.5,
         "load_after": 2.5, "load_peak": 3.0, "minutes": 12.0}  # fmt: skip


def test_the_markdown_table_has_a_row_per_goal_and_the_stamp():
    goals = [harness.goal("a", 1.0, "<= 2x floor", floor=1.0, ratio_target=2), harness.goal("b", 9.0, "<= 8", bound=8)]
    table = bench_all.markdown(goals, STAMP).splitlines()
    assert "2026-11-30 06:00 UTC" in table[0] and "load average 1.50 before, 2.50 after" in table[0]
    assert table[2] == "| case | figure | floor | ratio | target | verdict |"
    assert table[4:] == [
        "| a | 1.00 ms | 1.00 ms | 1.00x | <= 2x floor | pass |",
        "| b | 9.00 ms | - | - | <= 8 | **MISS** |",
    ]


def test_the_readme_section_between_the_markers_is_replaced_and_the_rest_kept():
    text = f"intro\n{bench_all.START}\nold table\n{bench_all.END}\nrest\n"
    assert bench_all.with_section(text, "new") == f"intro\n{bench_all.START}\nnew\n{bench_all.END}\nrest\n"
    with pytest.raises(ValueError):
        bench_all.with_section("no markers here", "new")


def test_the_readme_has_the_markers():
    with open(bench_all.README) as readme:
        bench_all.with_section(readme.read(), "check")
