"""PRC resident identity numbers (GB 11643-1999)."""

import datetime as dt
import re

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_ID_SHAPE = re.compile(r"^[1-9]\d{16}[\dX]$")


def check_digit(first17):
    return _CHECK_CHARS[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_number_problem(value):
    """None if ``value`` is a valid 18-character ID number, else why not."""
    if not isinstance(value, str) or not _ID_SHAPE.match(value):
        return "Must be 18 characters: 17 digits and a digit or X."
    if birth_date_of(value) is None:
        return "Embedded birth date is not a real date."
    if check_digit(value[:17]) != value[17]:
        return "Check digit does not match."
    return None


def birth_date_of(value):
    try:
        return dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def normalise_id_number(value):
    return value.strip().upper() if isinstance(value, str) else value


def make_id_number(region6, birth, sequence3):
    """Build a valid ID number (used by the seeders and tests)."""
    first17 = f"{region6}{birth:%Y%m%d}{sequence3:03d}"
    return first17 + check_digit(first17)
