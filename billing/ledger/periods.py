"""Billing periods: calendar months in UTC, named ``"YYYY-MM"``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tenants.errors import InvalidInput

__all__ = ["Period", "current_period", "parse_period", "previous_period"]

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


class Period(str):
    """A month: ``Period("2026-11").start`` / ``.end`` are UTC instants, ``end`` exclusive."""

    __slots__ = ()

    @property
    def start(self) -> datetime:
        y, m = int(self[:4]), int(self[5:7])
        return datetime(y, m, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        y, m = int(self[:4]), int(self[5:7])
        return datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)

    @property
    def compact(self) -> str:
        return self.replace("-", "")

    def shift(self, months: int) -> Period:
        index = int(self[:4]) * 12 + int(self[5:7]) - 1 + months
        return Period(f"{index // 12:04d}-{index % 12 + 1:02d}")


def parse_period(text: str, *, field: str = "period") -> Period:
    match = _PERIOD.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInput("A period is a month written YYYY-MM, e.g. 2026-11.", field_errors={field: "use YYYY-MM"})
    return Period(text.strip())


def current_period(now: datetime) -> Period:
    now = now.astimezone(UTC)
    return Period(f"{now.year:04d}-{now.month:02d}")


def previous_period(now: datetime) -> Period:
    return current_period(now).shift(-1)
