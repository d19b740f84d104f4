"""The gateways' signed inbound webhook (services.notices.webhook): secrets from the environment or the
config, the signature recipe and its time window, and each refusal's status, in order — and no input,
however hostile, answered with a 500."""

import hashlib
import hmac
import json
import logging

import pytest
from hypothesis import given, settings, strategies as st
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.notices import webhook
from services.notices.schemas import RecordInbound
from shared.errors import Conflict, NotFound
from shared.validation import load

SECRET = "sms-inbound-secret-0123456789"
SECRETS = {"sms": SECRET.encode()}
NOW = 1_790_000_000
PHONE = "13800000100"


def signed_headers(body, secret=SECRET, timestamp=NOW):
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Grassroots-Timestamp": str(timestamp), "X-Grassroots-Signature": f"sha256={mac}"}


def request(body, headers=None, gateway="sms", content_type="application/json"):
    builder = EnvironBuilder(
        method="POST", path=f"/gateways/{gateway}/inbound", data=body, headers=headers or {}, content_type=content_type
    )
    return Request(builder.get_environ())


class Recorder:
    """``record`` and ``count`` as the service gives them: the schema loads the fields."""

    def __init__(self, raises=None):
        self.raises = raises
        self.recorded = []
        self.counted = []

    def record(self, fields):
        loaded = load(RecordInbound(), fields)
        if self.raises is not None:
            raise self.raises
        self.recorded.append(loaded)
        return {"id": "1", "outcome": "acknowledged"}

    def count(self, gateway, kind, outcome):
        self.counted.append((gateway, kind, outcome))


def answer(body, headers=None, gateway="sms", recorder=None, secrets=SECRETS, **options):
    recorder = recorder or Recorder()
    headers = signed_headers(body) if headers is None else headers
    response = webhook.handle(
        request(body, headers, gateway, **options), gateway, secrets, recorder.record, recorder.count, now=lambda: NOW
    )
    return response.status_code, json.loads(response.get_data()), recorder


REPORT = json.dumps({"kind": "sms_reply", "gateway_event_id": "e-1", "from_phone": PHONE, "text": "收到"}).encode()


def test_the_signature_recipe():
    """The recipe docs/gateways.md shows: HMAC-SHA256 over "<timestamp>." and the raw body."""
    expected = "sha256=" + hmac.new(SECRET.encode(), b"1790000000." + REPORT, hashlib.sha256).hexdigest()
    assert webhook.signature(SECRET.encode(), "1790000000", REPORT) == expected


def test_a_signed_report_is_recorded_with_the_urls_gateway():
    status, body, recorder = answer(REPORT)
    assert (status, body) == (200, {"id": "1", "outcome": "acknowledged"})
    assert recorder.recorded[0]["gateway"] == "sms" and recorder.recorded[0]["from_phone"] == PHONE


def test_a_report_may_name_our_delivery_id_as_posted():
    body = json.dumps({"kind": "sms_reply", "gateway_event_id": "e-2", "delivery_id": "48213", "text": "1"}).encode()
    status, _body, recorder = answer(body)
    assert status == 200
    assert (recorder.recorded[0]["delivery_id"], recorder.recorded[0]["in_reply_to"]) == (48213, None)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing signature"),
        ({"X-Grassroots-Signature": "sha256=00"}, "missing or malformed timestamp"),
        (signed_headers(REPORT, secret="another-secret-0123456789"), "bad signature"),
        (signed_headers(REPORT + b" "), "bad signature"),  # the body was changed after signing
        (signed_headers(REPORT, timestamp=NOW - 301), "timestamp outside the allowed window"),
        (signed_headers(REPORT, timestamp=NOW + 301), "timestamp outside the allowed window"),
        ({**signed_headers(REPORT), "X-Grassroots-Timestamp": "1790000000.5"}, "missing or malformed timestamp"),
        ({**signed_headers(REPORT), "X-Grassroots-Signature": "sha256=é"}, "bad signature"),
    ],
)
def test_an_unsigned_or_badly_signed_report_is_refused_and_logged_without_the_phone(headers, reason, caplog):
    caplog.set_level(logging.INFO)
    status, body, recorder = answer(REPORT, headers=headers)
    assert (status, body["error"], body["message"]) == (401, "unauthenticated", reason)
    assert recorder.recorded == [] and recorder.counted == [("sms", "unknown", "unsigned")]
    assert caplog.records and all(PHONE not in str(r.__dict__) for r in caplog.records)


def test_within_the_window_a_signature_holds():
    assert answer(REPORT, headers=signed_headers(REPORT, timestamp=NOW - 299))[0] == 200
    assert answer(REPORT, headers=signed_headers(REPORT, timestamp=NOW + 299))[0] == 200


def test_a_gateway_without_a_secret_takes_no_report():
    assert answer(REPORT, gateway="voice")[:2] == (
        401,
        {"error": "unauthenticated", "message": "no inbound secret is configured for this gateway"},
    )


def test_an_unknown_gateway_is_not_found():
    assert answer(REPORT, gateway="email")[0] == 404


def test_a_body_over_16_kib_is_refused_before_its_signature_is_checked():
    big = b'{"text": "' + b"1" * (16 * 1024) + b'"}'
    assert answer(big, headers={})[0] == 413


@pytest.mark.parametrize(
    ("body", "options", "status", "field"),
    [
        (b"not json", {}, 400, "_body"),
        (b"[1, 2]", {}, 400, "_body"),
        (b"\xff\xfe", {}, 400, "_body"),
        (b"[" * 5000 + b"]" * 5000, {}, 400, "_body"),
        (REPORT, {"content_type": "text/plain"}, 415, None),
        (json.dumps({"gateway": "voice", "kind": "keypress"}).encode(), {}, 400, "gateway"),
        (json.dumps({"kind": "sms_reply", "gateway_event_id": "e"}).encode(), {}, 400, "from_phone"),
        (
            json.dumps({"kind": "sms_reply", "gateway_event_id": "e", "from_phone": "1", "text": "1"}).encode(),
            {},
            400,
            "from_phone",
        ),
        (
            json.dumps({"kind": "sms_reply", "gateway_event_id": "e", "in_reply_to": 5, "text": "1"}).encode(),
            {},
            400,
            "in_reply_to",
        ),
        (
            json.dumps({"kind": "sms_reply", "gateway_event_id": "e", "delivery_id": "sms-1", "text": "1"}).encode(),
            {},
            400,
            "delivery_id",
        ),
        (json.dumps({"kind": "sms_reply", "surprise": 1}).encode(), {}, 400, "surprise"),
        (
            b'{"kind": "sms_reply", "gateway_event_id": "e", "from_phone": "' + b"9" * 5000 + b'", "text": "1"}',
            {},
            400,
            "from_phone",
        ),
    ],
)
def test_a_signed_but_bad_body_is_refused_naming_the_field(body, options, status, field):
    answered, reply, recorder = answer(body, **options)
    assert answered == status and recorder.recorded == []
    if field is not None:
        assert field in reply["fields"]
        assert "9999999999" not in json.dumps(reply)


@pytest.mark.parametrize(("error", "status"), [(NotFound("no delivery"), 404), (Conflict("ambiguous"), 409)])
def test_the_domains_refusals_keep_their_meaning(error, status):
    answered, reply, _ = answer(REPORT, recorder=Recorder(raises=error))
    assert (answered, reply["error"]) == (status, type(error).__name__.lower())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_no_signed_bytes_make_a_500(body):
    assert answer(body)[0] in (200, 400)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "gateway",
        "kind",
        "gateway_event_id",
        "in_reply_to",
        "delivery_id",
        "from_phone",
        "text",
        "digits",
        "received_at",
        "other",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(FIELD_NAMES, JSON_VALUES | st.sampled_from(["sms", "sms_reply", "1", PHONE]), max_size=8))
def test_no_signed_json_object_makes_a_500(fields):
    body = json.dumps(fields).encode()
    assert answer(body)[0] in (200, 400)


# ---- secrets ---------------------------------------------------------------------------------------


def test_secrets_come_from_the_environment_before_the_config():
    config = {"INBOUND_SECRETS": {"sms": "config-secret-0123456789", "voice": "voice-secret-0123456789"}}
    found = webhook.inbound_secrets(config, environ={"NOTICES_SMS_INBOUND_SECRET": " env-secret-0123456789\n"})
    assert found == {"sms": b"env-secret-0123456789", "voice": b"voice-secret-0123456789"}
    assert webhook.inbound_secrets({}, environ={"NOTICES_VOICE_INBOUND_SECRET": "  "}) == {}


@pytest.mark.parametrize("value", ["short", "non-ascii-秘密-0123456789", "tab\tinside-0123456789"])
def test_a_weak_secret_stops_the_service_naming_the_setting_not_the_value(value):
    with pytest.raises(webhook.InboundSecretError) as error:
        webhook.inbound_secrets({}, environ={"NOTICES_VOICE_INBOUND_SECRET": value})
    assert "NOTICES_VOICE_INBOUND_SECRET" in str(error.value) and value not in str(error.value)


def test_a_signed_request_passes_the_check_and_a_changed_body_does_not():
    body = b'{"kind": "keypress", "digits": "1"}'
    request = webhook.signed_request(
        "http://notices/gateways/voice/inbound", "voice-secret-0123456789", body, "1700000000"
    )
    headers = {name.title(): value for name, value in request.header_items()}
    headers = {
        webhook.TIMESTAMP_HEADER: headers["X-Grassroots-Timestamp"],
        webhook.SIGNATURE_HEADER: headers["X-Grassroots-Signature"],
    }
    secret = b"voice-secret-0123456789"
    assert (request.get_method(), request.data) == ("POST", body)
    assert webhook.signature_problem(secret, headers, body, now=1700000000) is None
    assert webhook.signature_problem(secret, headers, body + b" ", now=1700000000) == "bad signature"
