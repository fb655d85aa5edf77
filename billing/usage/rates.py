"""The rate card: versioned prices with effective dates, per plan or per org (Enterprise).

Which card prices a moment ``t`` for an org: the org's own card with the latest ``effective_from <= t``
if the org has one by then, else its plan's, else Pay-as-you-go's (the list prices). A price change
is a new card from an hour on; cards are never edited, so an issued invoice can always be re-derived.

Money: prices are integer micro-dollars per unit people read (vCPU-hour, GiB-hour, GPU-hour,
GiB-month); an amount is an exact ``Fraction`` of micro-dollars until ``to_cents`` rounds it once,
half up, to whole cents (the rounding invoice lines use too).
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.ids import GIB, SECONDS_PER_MONTH
from billing.usage.models import RateCard
from tenants.errors import InvalidInput

__all__ = [
    "DEFAULT_PLAN",
    "Card",
    "CardTimeline",
    "RatedLine",
    "amount_micros",
    "card_timeline",
    "create_rate_card",
    "micros_to_dollars",
    "rate_lines",
    "to_cents",
]

DEFAULT_PLAN = "payg"

# base units per priced unit: millicore-seconds per vCPU-hour, byte-seconds per GiB-hour, ...
_PER_UNIT: dict[str, int] = {
    "vcpu": 1000 * 3600,
    "memory": GIB * 3600,
    "gpu": 3600,
    "storage": GIB * SECONDS_PER_MONTH,
}


@dataclass(frozen=True, slots=True)
class Card:
    id: uuid.UUID
    plan: str | None
    org_id: uuid.UUID | None
    effective_from: datetime
    currency: str
    vcpu_hour_micros: int
    memory_gib_hour_micros: int
    gpu_default_hour_micros: int
    storage_gib_month_micros: int
    free_vcpu_millis: int
    free_memory_bytes: int
    gpu_hour_micros: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, row: RateCard) -> Card:
        return cls(id=row.id, plan=row.plan, org_id=row.org_id, effective_from=row.effective_from,
                   currency=row.currency, vcpu_hour_micros=row.vcpu_hour_micros,
                   memory_gib_hour_micros=row.memory_gib_hour_micros,
                   gpu_default_hour_micros=row.gpu_default_hour_micros,
                   storage_gib_month_micros=row.storage_gib_month_micros, free_vcpu_millis=row.free_vcpu_millis,
                   free_memory_bytes=row.free_memory_bytes,
                   gpu_hour_micros={str(k): int(v) for k, v in (row.gpu_hour_micros or {}).items()})

    def gpu_price(self, gpu_type: str) -> int:
        """Exact key first, then the longest key inside the type (``A100`` in ``NVIDIA-A100-SXM4-80GB``),
        else the default GPU price."""
        if gpu_type in self.gpu_hour_micros:
            return self.gpu_hour_micros[gpu_type]
        lowered = gpu_type.lower()
        matches = [k for k in self.gpu_hour_micros if k and k.lower() in lowered]
        if matches:
            return self.gpu_hour_micros[max(matches, key=len)]
        return self.gpu_default_hour_micros

    def unit_price_micros(self, resource: str, gpu_type: str = "") -> int:
        """Micro-dollars per vCPU-hour, GiB-hour, GPU-hour or GiB-month."""
        if resource == "vcpu":
            return self.vcpu_hour_micros
        if resource == "memory":
            return self.memory_gib_hour_micros
        if resource == "gpu":
            return self.gpu_price(gpu_type)
        if resource == "storage":
            return self.storage_gib_month_micros
        raise ValueError(f"unknown resource {resource!r}")

    def allowance(self, resource: str) -> int:
        """The free level of ``resource`` at any moment (millicores or bytes); none for GPUs and storage."""
        return {"vcpu": self.free_vcpu_millis, "memory": self.free_memory_bytes}.get(resource, 0)


class CardTimeline:
    """The cards that price one org, in effect order: ``at(moment)`` answers which one applies."""

    def __init__(self, org_cards: Sequence[Card], plan_cards: Sequence[Card], default_cards: Sequence[Card]) -> None:
        self._tiers = [sorted(c, key=lambda k: k.effective_from) for c in (org_cards, plan_cards, default_cards)]
        self._starts = [[c.effective_from for c in tier] for tier in self._tiers]

    def at(self, moment: datetime) -> Card | None:
        for tier, starts in zip(self._tiers, self._starts, strict=True):
            i = bisect.bisect_right(starts, moment)
            if i:
                return tier[i - 1]
        return None

    @property
    def empty(self) -> bool:
        return not any(self._tiers)


async def card_timeline(session: AsyncSession, org_id: uuid.UUID, plan: str) -> CardTimeline:
    """Every card that could price this org (its own, its plan's, Pay-as-you-go's), in one query."""
    rows = (await session.execute(select(RateCard).where(or_(
        RateCard.org_id == org_id, RateCard.plan.in_({plan, DEFAULT_PLAN}))))).scalars().all()
    cards = [Card.of(r) for r in rows]
    return CardTimeline([c for c in cards if c.org_id == org_id], [c for c in cards if c.plan == plan],
                        [c for c in cards if c.plan == DEFAULT_PLAN])


def amount_micros(resource: str, quantity: int, unit_price_micros: int) -> Fraction:
    """The exact price of ``quantity`` base units (millicore-seconds, byte-seconds, ...)."""
    return Fraction(quantity * unit_price_micros, _PER_UNIT[resource])


def to_cents(micros: Fraction | int) -> int:
    """Round once, half up (away from zero), to whole cents (10,000 micro-dollars); exact integer math."""
    exact = Fraction(micros) / 10_000
    whole, rest = divmod(abs(exact.numerator), exact.denominator)
    if 2 * rest >= exact.denominator:
        whole += 1
    return whole if exact.numerator >= 0 else -whole


def micros_to_dollars(micros: int) -> Decimal:
    return Decimal(micros) / Decimal(1_000_000)


async def create_rate_card(
    session: AsyncSession, *, effective_from: datetime, vcpu_hour_micros: int, memory_gib_hour_micros: int,
    gpu_default_hour_micros: int, storage_gib_month_micros: int, gpu_hour_micros: Mapping[str, int] | None = None,
    plan: str | None = None, org_id: uuid.UUID | None = None, free_vcpu_millis: int = 8000,
    free_memory_bytes: int = 16 * GIB, note: str = "", now: datetime | None = None, allow_past: bool = False,
) -> Card:
    """A new card for a plan (operators, unscoped session) or an org (its Enterprise contract).

    ``effective_from`` must be on the hour and not in the past: a price change applies from its date,
    and a card that reached back would change usage already rated. ``allow_past`` is for seeding.
    """
    errors: dict[str, str] = {}
    if (plan is None) == (org_id is None):
        errors["plan"] = "give a plan or an org, not both"
    if effective_from.tzinfo is None:
        errors["effective_from"] = "needs a time zone (UTC)"
    elif effective_from.minute or effective_from.second or effective_from.microsecond:
        errors["effective_from"] = "prices change on the hour"
    elif not allow_past and effective_from < (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0):
        errors["effective_from"] = "a price change cannot reach into the past"
    prices = {"vcpu_hour_micros": vcpu_hour_micros, "memory_gib_hour_micros": memory_gib_hour_micros,
              "gpu_default_hour_micros": gpu_default_hour_micros, "storage_gib_month_micros": storage_gib_month_micros,
              **{f"gpu_hour_micros.{k}": v for k, v in (gpu_hour_micros or {}).items()}}
    errors.update({k: "must be a whole, non-negative number of micro-dollars" for k, v in prices.items()
                   if not isinstance(v, int) or v < 0})
    if errors:
        raise InvalidInput("the rate card is not valid", field_errors=errors)
    row = RateCard(plan=plan, org_id=org_id, effective_from=effective_from.astimezone(UTC), currency="usd",
                   vcpu_hour_micros=vcpu_hour_micros, memory_gib_hour_micros=memory_gib_hour_micros,
                   gpu_hour_micros=dict(gpu_hour_micros or {}), gpu_default_hour_micros=gpu_default_hour_micros,
                   storage_gib_month_micros=storage_gib_month_micros, free_vcpu_millis=free_vcpu_millis,
                   free_memory_bytes=free_memory_bytes, note=note)
    session.add(row)
    await session.flush()
    return Card.of(row)


@dataclass(frozen=True, slots=True)
class RatedLine:
    """Billable usage of one resource (and GPU type) priced by one card: what an invoice line shows."""

    resource: str
    gpu_type: str
    quantity: int  # billable base units (millicore-seconds, byte-seconds, GPU-seconds)
    unit_price_micros: int  # per vCPU-hour, GiB-hour, GPU-hour or GiB-month
    card_id: uuid.UUID
    amount: Fraction  # exact micro-dollars

    @property
    def amount_cents(self) -> int:
        return to_cents(self.amount)


def rate_lines(billable: Mapping[tuple[str, str], Mapping[int, int]], timeline: CardTimeline) -> list[RatedLine]:
    """Price billable quantities per hour (``{(resource, gpu_type): {hour epoch: quantity}}``) with the
    card in effect at each hour; one line per resource, GPU type and unit price (a mid-period price
    change gives two lines). Hours no card covers are priced at zero and reported as such by the caller."""
    acc: dict[tuple[str, str, int, uuid.UUID], int] = {}
    for (resource, gpu_type), hours in billable.items():
        for hour, quantity in hours.items():
            if quantity == 0:
                continue
            card = timeline.at(datetime.fromtimestamp(hour, UTC))
            if card is None:
                continue
            key = (resource, gpu_type, card.unit_price_micros(resource, gpu_type), card.id)
            acc[key] = acc.get(key, 0) + quantity
    lines = [RatedLine(resource=r, gpu_type=g, quantity=q, unit_price_micros=p, card_id=c,
                       amount=amount_micros(r, q, p)) for (r, g, p, c), q in acc.items()]
    order = {"vcpu": 0, "memory": 1, "gpu": 2, "storage": 3}
    return sorted(lines, key=lambda ln: (order.get(ln.resource, 9), ln.gpu_type, ln.unit_price_micros))
