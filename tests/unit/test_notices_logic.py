"""Notices pure logic: quiet hours, rate limits, templates, robot payloads, retry backoff."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.notices.audience import quiet_hours_end
from services.notices.channels import ChatRobot, Outbound, RateLimiter
from services.notices.delivery import RetryPolicy
from services.notices.templates import render
from services.notices.units import outermost
from shared.errors import ValidationError

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(hour, minute=0):
    return dt.datetime(2026, 11, 26, hour, minute, tzinfo=SHANGHAI).astimezone(dt.UTC)


def test_quiet_hours_same_day_and_overnight():
    start, end = dt.time(12, 0), dt.time(14, 0)
    assert quiet_hours_end(at(13), start, end, SHANGHAI) == at(14)
    assert quiet_hours_end(at(11, 59), start, end, SHANGHAI) is None
    night, morning = dt.time(22, 0), dt.time(7, 0)
    assert quiet_hours_end(at(23), night, morning, SHANGHAI) == at(7) + dt.timedelta(days=1)
    assert quiet_hours_end(at(6, 30), night, morning, SHANGHAI) == at(7)
    assert quiet_hours_end(at(7), night, morning, SHANGHAI) is None


def test_rate_limiter_grants_a_second_of_tokens_then_refills():
    now = [0.0]
    limiter = RateLimiter({"sms": 10}, clock=lambda: now[0])
    assert limiter.take("sms", 100) == 10
    assert limiter.take("sms", 5) == 0
    now[0] = 0.5
    assert limiter.take("sms", 100) == 5
    limiter.give_back("sms", 3)
    assert limiter.take("sms", 100) == 3
    assert limiter.take("app_push", 7) == 7  # no limit configured


def test_templates_check_their_params():
    title, body = render("check_in", {"when": "tomorrow 10:00"})
    assert "tomorrow 10:00" in body and title
    with pytest.raises(ValidationError) as err:
        render("check_in", {"when": "x", "extra": "y"})
    assert "params" in err.value.fields
    with pytest.raises(ValidationError):
        render("consultation_reminder", {"station": "A"})


def test_robot_payloads_mention_everyone_only_when_severe():
    message = Outbound(1, 2, "chat_group", "http://robot", "Storm", "Stay in", "severe", mention_all=True)
    assert ChatRobot().payload(message) == {
        "msgtype": "text",
        "text": {"content": "【Storm】\nStay in", "mentioned_list": ["@all"]},
    }
    message.mention_all = False
    assert ChatRobot().payload(message)["msgtype"] == "markdown"


def test_backoff_doubles_up_to_a_cap():
    policy = RetryPolicy(max_attempts=5, base_seconds=2, cap_seconds=5)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert [(policy.next_attempt(n, now) - now).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 5, 5]


def test_outermost_units_drop_nested_ones():
    assert outermost({1: "/1/", 5: "/1/5/", 7: "/2/7/"}) == {1: "/1/", 7: "/2/7/"}
    assert outermost({12: "/1/12/", 1: "/1/2/"}) == {12: "/1/12/", 1: "/1/2/"}
