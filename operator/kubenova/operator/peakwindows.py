"""Whether a moment falls in one of a pool's daily re-balance windows (UTC). Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def inside(windows: Iterable[tuple[str, str]], now: dt.datetime) -> bool:
    """`windows`: (start, end) as HH:MM; an end before the start crosses midnight; no
    windows at all means always."""
    spans = list(windows)
    if not spans:
        return True
    t = now.astimezone(dt.UTC)
    minute = t.hour * 60 + t.minute
    for start, end in spans:
        a, b = _minutes(start), _minutes(end)
        if (a <= minute < b) if a <= b else (minute >= a or minute < b):
            return True
    return False
