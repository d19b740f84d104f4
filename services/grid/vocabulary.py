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
