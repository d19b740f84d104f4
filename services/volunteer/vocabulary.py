"""The volunteer service's fixed vocabularies."""

from shared.auth import UNIT_ROLES

SKILLS = (
    "delivery",
    "medical",
    "elderly_care",
    "legal_aid",
    "translation",
    "driving",
    "psychological_support",
    "it_support",
)
REQUEST_KINDS = ("groceries", "medicine", "masks", "escort", "check_in", "other")
URGENCIES = ("low", "normal", "high", "critical")
REQUEST_STATUSES = ("open", "offered", "matched", "completed", "confirmed", "unmatched", "cancelled")
OFFER_STATUSES = ("pending", "accepted", "declined", "expired", "withdrawn")
PLEDGE_STATUSES = ("open", "fulfilled")
# Which skills serve which kind of request (any of them counts as a fit).
KIND_SKILLS = {
    "groceries": ("delivery", "driving"),
    "medicine": ("delivery", "medical"),
    "masks": ("delivery",),
    "escort": ("elderly_care", "driving"),
    "check_in": ("elderly_care", "psychological_support", "medical"),
    "other": (),
}
ACTIVE_TASK_STATUSES = ("matched",)
# Roles that act on requests, volunteers and shifts within their unit scope (the full request record).
STAFF_ROLES = UNIT_ROLES
