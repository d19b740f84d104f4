"""The event retry schedule (shared.handlers.RetrySchedule), its tiers and the queue type setting
(shared.queues), as pure logic: delays stay within their bounds and their tier's TTL, the shortest
possible delays cover the horizon, attempts and tiers stay few, bad settings stop the service."""

import math
import random

import pytest
from hypothesis import given, settings, strategies as st
from kombu import Queue

from shared import queues
from shared.handlers import (
    ATTEMPT_HEADER,
    DEAD_QUEUE_ARGUMENTS,
    MAX_ATTEMPTS_LIMIT,
    RetrySchedule,
    RetryScheduleError,
    attempt_of,
    tier_name,
    tier_queue,
)

# Schedules an operator could configure: a base from 1 ms to a minute, a cap from the base to a day,
# a horizon up to a week, as long as the cap is not so far below the horizon that it would need
# more than MAX_ATTEMPTS_LIMIT attempts (refused: see test_a_schedule_needing_too_many_attempts_is_refused).
bases = st.integers(min_value=1, max_value=60_000)
caps = st.integers(min_value=1, max_value=24 * 3600 * 1000)
horizons = st.integers(min_value=0, max_value=7 * 24 * 3600 * 1000)


@st.composite
def schedules(draw):
    base = draw(bases)
    cap = draw(caps.filter(lambda c: c >= base))
    horizon = draw(horizons.filter(lambda h: h <= (cap + 1) // 2 * (MAX_ATTEMPTS_LIMIT // 2)))
    return RetrySchedule(base_ms=base, max_delay_ms=cap, horizon_ms=horizon)


def retries(schedule):
    """The failed attempts after which a message is retried (not the last one)."""
    return range(1, schedule.max_attempts)


@settings(max_examples=300)
@given(schedules(), st.randoms(use_true_random=False))
def test_each_delay_is_jittered_within_its_bounds_and_its_tiers_ttl(schedule, rng):
    for attempt in retries(schedule):
        delay = schedule.delay_ms(attempt)
        assert delay == min(schedule.max_delay_ms, schedule.base_ms * 2 ** (attempt - 1))
        assert delay in schedule.tiers  # the tier's TTL is the delay itself
        jittered = schedule.jittered_ms(attempt, rng)
        assert delay / 2 <= schedule.shortest_ms(attempt) <= jittered <= delay <= schedule.max_delay_ms


@settings(max_examples=300)
@given(schedules())
def test_the_shortest_delays_cover_the_horizon_with_no_attempt_to_spare(schedule):
    shortest = [schedule.shortest_ms(attempt) for attempt in retries(schedule)]
    assert sum(shortest) >= schedule.horizon_ms
    if shortest:  # one retry fewer would not cover it
        assert sum(shortest[:-1]) < schedule.horizon_ms
    else:
        assert schedule.horizon_ms == 0 and schedule.max_attempts == 1


@settings(max_examples=300)
@given(schedules())
def test_attempts_and_tiers_stay_few(schedule):
    doublings = math.log2(schedule.max_delay_ms / schedule.base_ms)
    # Doubling up to the cap, then the cap (≥ half of it counted each time) for the rest of the horizon.
    assert schedule.max_attempts <= doublings + 2 + 2 * schedule.horizon_ms / schedule.max_delay_ms + 1
    assert schedule.max_attempts < MAX_ATTEMPTS_LIMIT
    assert len(schedule.tiers) <= doublings + 2 <= 34
    assert list(schedule.tiers) == sorted(set(schedule.tiers))
    assert set(schedule.tiers) == {schedule.delay_ms(attempt) for attempt in retries(schedule)}


def test_the_default_schedule_spans_an_hour_in_ten_tiers():
    schedule = RetrySchedule.from_config({})
    assert (schedule.base_ms, schedule.max_delay_ms, schedule.horizon_ms) == (1000, 300_000, 3_600_000)
    assert schedule.max_attempts == 33
    assert [tier_name("grid", d) for d in schedule.tiers] == [
        f"grid.retry.{s}s" for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 300)
    ]
    shortest = sum(schedule.shortest_ms(a) for a in retries(schedule))
    longest = sum(schedule.delay_ms(a) for a in retries(schedule))
    assert shortest >= 3600_000 and longest <= 2.1 * 3600_000  # at least the hour, about two at most


def test_jitter_reaches_both_ends_of_the_range():
    class Ends:
        def __init__(self, pick):
            self.pick = pick

        def randint(self, low, high):
            return low if self.pick == "low" else high

    schedule = RetrySchedule.from_config({})
    assert schedule.jittered_ms(3, Ends("low")) == 2000 and schedule.jittered_ms(3, Ends("high")) == 4000
    seen = {schedule.jittered_ms(1, random.Random(seed)) for seed in range(200)}
    assert min(seen) >= 500 and max(seen) <= 1000 and len(seen) > 50  # spread, not one value


def test_settings_come_as_numbers_or_as_text_from_the_environment():
    schedule = RetrySchedule.from_config(
        {
            "EVENT_RETRY_BASE_SECONDS": "0.5",  # config.yml's ${VAR:default} as the environment gave it
            "EVENT_RETRY_MAX_DELAY_SECONDS": 60,
            "EVENT_RETRY_HORIZON_SECONDS": 600.0,
        }
    )
    assert (schedule.base_ms, schedule.max_delay_ms, schedule.horizon_ms) == (500, 60_000, 600_000)
    assert RetrySchedule.from_config({"EVENT_RETRY_HORIZON_SECONDS": 0}).max_attempts == 1  # no retries


@pytest.mark.parametrize(
    "config",
    [
        {"EVENT_RETRY_BASE_SECONDS": 0},
        {"EVENT_RETRY_BASE_SECONDS": 0.0001},  # rounds to 0 ms
        {"EVENT_RETRY_BASE_SECONDS": -1},
        {"EVENT_RETRY_BASE_SECONDS": "soon"},
        {"EVENT_RETRY_BASE_SECONDS": True},
        {"EVENT_RETRY_BASE_SECONDS": None},
        {"EVENT_RETRY_BASE_SECONDS": [1]},
        {"EVENT_RETRY_HORIZON_SECONDS": "nan"},
        {"EVENT_RETRY_HORIZON_SECONDS": float("inf")},
        {"EVENT_RETRY_HORIZON_SECONDS": -5},
        {"EVENT_RETRY_MAX_DELAY_SECONDS": 0.5},  # below the base (1 s)
        {"EVENT_RETRY_MAX_DELAY_SECONDS": 50 * 24 * 3600},  # above RabbitMQ's largest TTL
    ],
)
def test_a_setting_that_makes_no_schedule_is_refused(config):
    with pytest.raises(RetryScheduleError, match="EVENT_RETRY_"):
        RetrySchedule.from_config(config)


def test_a_schedule_needing_too_many_attempts_is_refused():
    with pytest.raises(RetryScheduleError, match="more than 1000 attempts"):
        RetrySchedule.from_config({"EVENT_RETRY_MAX_DELAY_SECONDS": 1, "EVENT_RETRY_HORIZON_SECONDS": 24 * 3600})


def test_tier_names_say_their_delay():
    assert tier_name("notices", 300_000) == "notices.retry.300s"
    assert tier_name("picky", 50) == "picky.retry.50ms"
    assert tier_name("picky", 1500) == "picky.retry.1500ms"


# --- the attempt header: only ever 1..max_attempts ------------------------------------------------


@given(
    schedules(),
    st.one_of(
        st.none(),
        st.integers(),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
)
def test_the_attempt_header_is_trusted_only_within_the_schedule(schedule, value):
    headers = {} if value is None else {ATTEMPT_HEADER: value}
    attempt = attempt_of(headers, schedule.max_attempts)
    assert 1 <= attempt <= schedule.max_attempts
    if value is None:
        assert attempt == 1
    elif type(value) is int and 1 <= value <= schedule.max_attempts:
        assert attempt == value
    else:
        assert attempt == schedule.max_attempts  # the last: a failure dead-letters it


# --- the queues: tiers, dead letters, queue type --------------------------------------------------


def test_a_tier_dead_letters_back_under_the_messages_own_routing_key():
    queue = tier_queue("grid", 4000, {})
    assert queue.name == queue.exchange.name == "grid.retry.4s"
    assert (queue.exchange.type, queue.exchange.durable, queue.routing_key, queue.durable) == ("topic", True, "#", True)
    # No x-dead-letter-routing-key: an expired retry goes back to the queue it was published for.
    assert queue.queue_arguments == {"x-message-ttl": 4000, "x-dead-letter-exchange": ""}


def test_quorum_mode_makes_every_durable_queue_quorum_and_tier_dead_lettering_at_least_once():
    quorum = {"QUEUE_TYPE": "quorum"}
    assert tier_queue("grid", 4000, quorum).queue_arguments == {
        "x-message-ttl": 4000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # at-least-once needs it; no length limit makes it refuse anything
        "x-queue-type": "quorum",
    }
    assert queues.durable_arguments(quorum, DEAD_QUEUE_ARGUMENTS) == {**DEAD_QUEUE_ARGUMENTS, "x-queue-type": "quorum"}
    assert queues.durable_arguments({"QUEUE_TYPE": "classic"}, DEAD_QUEUE_ARGUMENTS) == DEAD_QUEUE_ARGUMENTS
    assert queues.durable_arguments(quorum) == {"x-queue-type": "quorum"}
    # nameko's queues, as built: durable ones become quorum; what a quorum queue cannot be stays as it is.
    durable = queues.apply(Queue("evt-a-b--c.d", durable=True), quorum)
    assert durable.queue_arguments == {"x-queue-type": "quorum"}
    for kind in ({"exclusive": True}, {"auto_delete": True}, {"durable": False}):
        assert not queues.apply(Queue("q", **kind), quorum).queue_arguments


def test_the_dead_queue_is_bounded_but_refuses_rather_than_drops():
    assert DEAD_QUEUE_ARGUMENTS["x-overflow"] == "reject-publish"
    assert "x-message-ttl" not in DEAD_QUEUE_ARGUMENTS  # nothing expires out of it either


def test_the_queue_type_comes_from_the_config_then_the_environment(monkeypatch):
    monkeypatch.delenv("GRASSROOTS_QUEUE_TYPE", raising=False)
    assert queues.queue_type({}) == "classic"
    monkeypatch.setenv("GRASSROOTS_QUEUE_TYPE", "quorum")
    assert queues.queue_type({}) == "quorum"
    assert queues.queue_type({"QUEUE_TYPE": ""}) == "quorum"  # config.yml with the variable unset
    assert queues.queue_type({"QUEUE_TYPE": "classic"}) == "classic"
    assert queues.queue_type({"QUEUE_TYPE": " Quorum "}) == "quorum"


@pytest.mark.parametrize("value", ["stream", "quorom", "x" * 500, 1, True, ["quorum"]])
def test_any_other_queue_type_is_refused_with_a_clear_error(value):
    with pytest.raises(queues.QueueTypeError, match=r"GRASSROOTS_QUEUE_TYPE .* must be 'classic' or 'quorum'") as err:
        queues.queue_type({"QUEUE_TYPE": value})
    assert len(str(err.value)) < 200
