"""The legal service's fixed vocabularies."""

SPECIALTIES = (
    "family",
    "labour",
    "housing_property",
    "contract",
    "neighbour_dispute",
    "consumer",
    "administrative",
    "criminal_defence",
)
MODES = ("in_person", "phone", "video")
CONSULTATION_STATUSES = ("booked", "cancelled", "completed", "no_show")
OUTCOMES = ("advice_given", "referred", "mediation", "legal_aid_application", "litigation")
STATION_LEVELS = ("street", "community")
MEDIATOR_KINDS = ("judicial", "social")
CASE_CATEGORIES = ("neighbour", "family", "property", "labour", "consumer", "other")
CASE_STATUSES = ("open", "in_progress", "closed")
CASE_OUTCOMES = ("agreement", "no_agreement", "referred_to_court", "withdrawn")
HOLD_RECORDS = ("consultation", "case")  # what a legal hold may be set on
