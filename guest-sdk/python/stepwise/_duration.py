"""Inngest's duration strings ("1s", "10m", "1h30m", "24h", "7d").

Users port functions from Inngest, where durations are strings (or
`timedelta`s in its Python SDK); accepting both keeps a port a copy-paste.
"""

import re
from datetime import timedelta

from ._errors import NonRetriableError

# The longest sleep or wait, as in Inngest: one year.
MAX_DURATION_MS = 365 * 24 * 60 * 60 * 1000
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)([a-z]*)")


def parse_duration(value) -> int:
    """Milliseconds of an Inngest duration ("30s", "1h30m", "7d"), a
    `timedelta`, or a number of seconds."""
    if isinstance(value, timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = int(value * 1000)
    elif isinstance(value, str):
        ms = _parse_duration_text(value)
    else:
        raise NonRetriableError(
            f'invalid duration {value!r}: give a string such as "30s", a timedelta or seconds'
        )
    if ms < 0 or ms > MAX_DURATION_MS:
        raise NonRetriableError(f"invalid duration {value!r}: it must be between 0 and a year")
    return ms


def _parse_duration_text(text: str) -> int:
    def complain(why):
        return NonRetriableError(
            f"invalid duration {text!r}: {why}; write it as Inngest does, "
            f'e.g. "30s", "10m", "1h30m", "7d" (units ms, s, m, h, d, w)'
        )

    rest = text.strip()
    if not rest:
        raise complain("it is empty")
    total = 0
    while rest:
        match = _PART.match(rest)
        if not match:
            raise complain("expected a number")
        number, unit = match.groups()
        if not unit:
            raise complain("a number has no unit")
        if unit not in _UNITS_MS:
            raise complain(f"unknown unit {unit!r}")
        total += int(number) * _UNITS_MS[unit]
        rest = rest[match.end():]
    return total
