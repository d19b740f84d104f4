"""shared.amqp_wire: py-amqp reads frames a hostile publisher crafted without raising (issue 12).

tests/integration/test_hostile_messages.py sends such messages through a real broker; here the
frames it cannot send (py-amqp will not encode a timestamp past year 9999) are read directly.
"""

from struct import pack

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
