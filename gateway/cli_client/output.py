"""Human output: aligned tables and people's units. ``--json`` bypasses all of this."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["age", "cores", "gib", "print_json", "table"]

GiB = 1 << 30


def table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str = "") -> None:
    if not rows:
        if empty:
            print(empty, file=out)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (list(headers), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip(), file=out)


def print_json(out: TextIO, value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out)


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(ts: str | None, now: datetime | None = None) -> str:
    """``"42s"``, ``"5m"``, ``"3h"``, ``"2d"`` since ``ts``; ``"-"`` when unknown."""
    then = _parse(ts)
    if then is None:
        return "-"
    secs = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def cores(value: float | int | None) -> str:
    return "-" if value is None else f"{float(value):g}"


def gib(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{n / GiB:.1f}".removesuffix(".0") + "Gi"
