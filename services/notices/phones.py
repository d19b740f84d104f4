"""Phone numbers as gateways report them: one canonical form, so that a report's number and a
recipient's stored one (the grid's 11-digit mainland mobile) give the same blind index."""

import re
import unicodedata

from shared.validation import phone_problem

MAX_LENGTH = 30  # characters of a reported number, separators and country prefix included
_SEPARATORS = re.compile(r"[\s\-().]")
_COUNTRY_PREFIXES = ("+86", "0086", "86")


def canonical_phone(value):
    """The 11-digit mainland mobile number ``value`` names — full-width digits made ASCII, spaces,
    dashes, dots and brackets dropped, a ``+86``, ``0086`` or ``86`` country prefix removed — or None
    when it names none."""
    if not isinstance(value, str) or len(value) > MAX_LENGTH:
        return None
    digits = _SEPARATORS.sub("", unicodedata.normalize("NFKC", value))
    for prefix in _COUNTRY_PREFIXES:
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix) :]
            break
    return digits if phone_problem(digits) is None else None
