"""The UTC day and month a spend is counted in, and when each ends. Pure."""

from __future__ import annotations

import calendar
import time


class Periods:
    """`names(now)` -> ("YYYYMMDD", "YYYYMM") of the wall-clock time `now`, remembered per
    minute (a minute never straddles two days)."""

    __slots__ = ("_minute", "_names")

    def __init__(self) -> None:
        self._minute = -1
        self._names = ("", "")

    def names(self, now: float) -> tuple[str, str]:
        minute = int(now // 60)
        if minute != self._minute:
            day = time.strftime("%Y%m%d", time.gmtime(now))
            self._minute, self._names = minute, (day, day[:6])
        return self._names


def day_ends_in_s(now: float) -> float:
    """Seconds until the next 00:00 UTC."""
    return 86400.0 - now % 86400.0


def month_ends_in_s(now: float) -> float:
    """Seconds until the first of next month, 00:00 UTC."""
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) - now
