"""shared.amqp_wire: py-amqp reads frames a hostile publisher crafted without raising (issue 12).

tests/integration/test_hostile_messages.py sends such messages through a real broker; here the
frames it cannot send (py-amqp will not encode a timestamp past year 9999) are read directly.
"""

from struct import pack

import kombu.exceptions
from amqp import serialization
from amqp.basic_message import Message

from shared import amqp_wire

amqp_wire.install()

BASIC = 60  # the class id of basic content


def header_frame(flags, properties):
    return pack(">HxxQ", BASIC, 0) + pack(">H", flags) + properties


def short(data):
    return pack(">B", len(data)) + data


def test_well_formed_properties_read_as_before():
    message = Message()
    message.inbound_header(header_frame(0x8000 | 0x0200, short(b"application/json") + short(b"reply-1")))
    assert message.properties == {"content_type": "application/json", "reply_to": "reply-1"}


def test_properties_that_are_not_utf8_read_with_escapes():
    message = Message()
    message.inbound_header(header_frame(0x8000 | 0x0200, short(b"application/\xffjson") + short(b"\xfe")))
    assert message.properties == {"content_type": "application/\udcffjson", "reply_to": "\udcfe"}


def test_unreadable_properties_become_one_header():
    table = short(b"when") + b"T" + pack(">Q", 2**63)  # a timestamp far past year 9999
    message = Message()
    message.inbound_header(header_frame(0x2000, pack(">I", len(table)) + table))
    assert set(message.properties) == {"application_headers"}
    assert amqp_wire.UNREADABLE_PROPERTIES_HEADER in message.properties["application_headers"]
    assert message.ready  # a bodyless message: still delivered, to be dead-lettered


def test_method_frame_strings_that_are_not_utf8_read_with_escapes():
    args, _ = serialization.loads(
        "sLbss", short(b"ctag") + pack(">Q", 7) + b"\x00" + short(b"x") + short(b"grid.\xff"), 0
    )
    assert args == ["ctag", 7, False, "x", "grid.\udcff"]


# ---- bodies: looked at before kombu unpacks them ------------------------------------------------


def delivery(body=b"{}", headers=None, **properties):
    return Message(body, application_headers=headers or {}, **properties)


def test_a_compressed_body_or_a_codec_as_encoding_is_refused_unread():
    assert amqp_wire.body_problem(delivery(content_type="application/json", content_encoding="utf-8"), 10) is None
    assert amqp_wire.body_problem(delivery(content_encoding="binary"), 10) is None
    assert amqp_wire.body_problem(delivery(content_encoding="UTF-8"), 10) is None
    for compression in ("gzip", "application/x-gzip", "bzip2", "lzma", "anything"):
        problem = amqp_wire.body_problem(delivery(headers={"compression": compression}), 10)
        assert problem and problem.startswith("Compressed bodies")
    for encoding in ("zlib", "bz2", "base64", "utf-16", "\udcff"):
        problem = amqp_wire.body_problem(delivery(content_encoding=encoding), 10)
        assert problem and problem.startswith("The content encoding")


def test_a_body_over_the_limit_is_refused_unread():
    assert amqp_wire.body_problem(delivery(b"x" * 10), 10) is None
    assert amqp_wire.body_problem(delivery(b"x" * 11), 10) == "The body is longer than 10 bytes."
    assert amqp_wire.body_problem(delivery(b"x" * 11), None) is None  # replies: the broker's limit only


def test_the_limit_is_a_positive_integer_setting():
    assert amqp_wire.max_body_bytes({}) == 1024 * 1024
    assert amqp_wire.max_body_bytes({"MAX_MESSAGE_BYTES": 4096}) == 4096
    for bad in (0, -1, "1MB", 1.5, True):
        try:
            amqp_wire.max_body_bytes({"MAX_MESSAGE_BYTES": bad})
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_unpacked_leaves_the_body_as_it_came():
    import zlib

    body = zlib.compress(b"x" * 1_000_000)
    raw = delivery(body, headers={"compression": "gzip", "other": 1}, content_type="application/json")
    raw.delivery_info = {"routing_key": "grid.list_units"}
    message = amqp_wire.unpacked(raw, channel=None)
    assert message.body == body and message.headers == {"other": 1}
    assert message.content_type == "application/json"


def test_json_is_plain_json():
    body = b'{"a": {"__type__": "datetime", "__value__": "2030-01-01T00:00:00"}, "b": [1, "x"]}'
    assert amqp_wire.plain_json(body) == {
        "a": {"__type__": "datetime", "__value__": "2030-01-01T00:00:00"},
        "b": [1, "x"],
    }
    for bad in (b"{", b'"\xff"', b"[" * 100_000):
        try:
            amqp_wire.plain_json(bad)
        except kombu.exceptions.DecodeError as exc:
            assert isinstance(exc.args[0], (ValueError, RecursionError))
            continue
        raise AssertionError(bad[:10])
