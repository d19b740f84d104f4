"""The notices service's fixed vocabularies (CAP 1.2 words where CAP has them)."""

from services.grid.client import LEVELS as GRID_LEVELS, TAGS as GRID_TAGS

CATEGORIES = ("epidemic_prevention", "legal_publicity", "community_activity", "policy", "emergency")
SEVERITIES = ("minor", "moderate", "severe", "extreme")
URGENT_SEVERITIES = ("severe", "extreme")  # two-person approval, quiet hours overridden, @all in chat groups
URGENCIES = ("immediate", "expected", "future")
MSG_TYPES = ("alert", "update", "cancel")
CHANNELS = ("sms", "voice_call", "app_push", "chat_group")
PERSONAL_CHANNELS = ("sms", "voice_call", "app_push")  # one delivery per resident; chat_group is per small grid
STATUSES = ("draft", "approved", "published", "cancelled", "expired")
# Who is followed up when they do not acknowledge in time.
VULNERABLE_TAGS = ("elderly_alone", "disabled", "chronic_illness", "quarantined")
# An audience is chosen by the grid's own words: its residents' tags and its unit levels.
TAGS = GRID_TAGS
LEVELS = GRID_LEVELS
DIRECT = "direct"  # a notice row's kind for send_direct messages
# Gateways that report residents' SMS replies and keypresses (services/notices/inbound.py): each one's
# name and the channel of our posts it carries; each kind of report and the gateway that makes it.
INBOUND_GATEWAYS = {"sms": "sms", "voice": "voice_call"}
INBOUND_KINDS = {"sms_reply": "sms", "keypress": "voice"}
