"""The grid's fixed vocabularies."""

LEVELS = ("district", "street", "community", "grid_large", "grid_medium", "grid_small")
DEPTH = {level: depth for depth, level in enumerate(LEVELS)}

# The Party organisation a unit carries, by level (six-level architecture).
PARTY_ORG_TYPES = {
    "district": "comprehensive_committee",  # 综合党委
    "street": "comprehensive_committee",  # 综合党委
    "community": "general_branch",  # 党总支
    "grid_large": "branch",  # 党支部
    "grid_medium": "branch",  # 党支部
    "grid_small": "group",  # 党小组
}

STAFF_ROLES = ("grid_worker", "grid_leader", "party_secretary", "officer")

TAGS = (
    "quarantined",
    "elderly_alone",
    "disabled",
    "chronic_illness",
    "pregnant",
    "low_income",
    "party_member",
    "needs_assistance",
)

VISIT_OUTCOMES = ("seen_ok", "seen_concern", "absent", "refused")

INCIDENT_CATEGORIES = ("dispute", "public_health", "safety_hazard", "resident_need", "infrastructure", "other")
DEPARTMENTS = ("health", "political_legal", "civil_affairs", "housing", "emergency")
INCIDENT_STATUSES = ("open", "escalated", "resolved")
# Who reported an incident: staff (report_incident), a service (raised for volunteer), a resident (report_problem).
INCIDENT_SOURCES = ("staff", "service", "resident")
DEPARTMENT_LEVEL = "department"

DEFAULT_DEPARTMENTS = {
    "dispute": "political_legal",
    "public_health": "health",
    "safety_hazard": "emergency",
    "resident_need": "civil_affairs",
    "infrastructure": "housing",
    "other": "civil_affairs",
}

# Seconds an incident may wait at each level before it climbs by itself.
DEFAULT_DEADLINES = {
    "grid_small": 24 * 3600,
    "grid_medium": 24 * 3600,
    "grid_large": 48 * 3600,
    "community": 48 * 3600,
    "street": 72 * 3600,
    "district": 72 * 3600,
}

# ---- the data lifecycle (PIPL): services/grid/retention.py -----------------

DAY = 24 * 3600

# Each tag's purpose (why the grid keeps it), how long a released tag (untagged, or past its ``until``)
# is kept before it is purged everywhere (``retention``, seconds), and how long a tag set without
# ``until`` may stand before it lapses by itself (``max_age``, seconds; None: until taken off).
# config.yml's TAG_POLICIES overrides any of these per tag.
DEFAULT_TAG_POLICIES = {
    "quarantined": {
        "purpose": "epidemic control: home quarantine follow-up",
        "retention": 14 * DAY,
        "max_age": 60 * DAY,
    },
    "elderly_alone": {
        "purpose": "care of elderly residents living alone: check-in visits, notices by voice call",
        "retention": 30 * DAY,
        "max_age": None,
    },
    "disabled": {
        "purpose": "assistance and accessible notices for residents with a disability",
        "retention": 30 * DAY,
        "max_age": None,
    },
    "chronic_illness": {
        "purpose": "health follow-up and care plans for residents with a chronic illness",
        "retention": 30 * DAY,
        "max_age": None,
    },
    "pregnant": {
        "purpose": "maternal care follow-up",
        "retention": 30 * DAY,
        "max_age": 300 * DAY,
    },
    "low_income": {
        "purpose": "social assistance (civil affairs)",
        "retention": 90 * DAY,
        "max_age": 365 * DAY,
    },
    "party_member": {
        "purpose": "Party organisation membership: duty posts and branch life",
        "retention": 30 * DAY,
        "max_age": None,
    },
    "needs_assistance": {
        "purpose": "volunteer help with daily needs",
        "retention": 30 * DAY,
        "max_age": None,
    },
}

# Seconds an access log row is kept (3 years), and the purpose a pii read records when its caller
# gives none (context data ``purpose``), by method.
DEFAULT_ACCESS_LOG_RETENTION = 3 * 365 * DAY
DEFAULT_READ_PURPOSES = {
    "get_resident": "resident record consulted",
    "find_residents": "resident list consulted",
    "get_residents": "residents looked up by id",
    "find_resident_columns": "notice delivery",
    "access_log": "access log read on the resident's behalf",
}
ERASED = "[erased]"
