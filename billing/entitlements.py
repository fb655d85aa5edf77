"""What an org's plan lets it have allocated at once, read from data (``plan_entitlements`` plus
per-org overrides), and whether it may submit work at all.

Callers in other packages get plain values (``Caps``), never models: the metascheduler in
``connectors`` receives caps as data and stays independent of billing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.dunning import banner
from billing.models import OrgEntitlement, Plan, PlanEntitlement
from tenants.models import Org

__all__ = ["Caps", "SubmissionBlock", "caps_for", "caps_for_orgs", "submission_block", "upgrade_url"]


@dataclass(frozen=True, slots=True)
class Caps:
    """Most an org may have allocated at once across its clusters; ``None`` = unlimited, ``0`` = none."""

    plan: str
    plan_title: str
    cpu_millis: int | None
    memory_bytes: int | None
    gpus: int | None
    upgrade_url: str  # where a person lifts the cap, e.g. "/orgs/acme/billing"

    @property
    def unlimited(self) -> bool:
        return self.cpu_millis is None and self.memory_bytes is None and self.gpus is None


@dataclass(frozen=True, slots=True)
class SubmissionBlock:
    """Why an org may not submit new work (e.g. unpaid invoices); ``status`` is 402 or 403."""

    status: int
    reason: str
    code: str = "submission_blocked"


def upgrade_url(org_slug: str) -> str:
    return f"/orgs/{org_slug}/billing"


async def caps_for_orgs(session: AsyncSession, org_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Caps]:
    """Caps of several orgs in three queries (the scheduler asks for every org with queued work).

    An org whose plan has no entitlement rows is unlimited for the missing resources.
    """
    ids = list(set(org_ids))
    if not ids:
        return {}
    orgs = (await session.execute(select(Org.id, Org.slug, Org.plan).where(Org.id.in_(ids)))).all()
    plan_names = {o.plan for o in orgs}
    titles: dict[str, str] = {n: t for n, t in (await session.execute(
        select(Plan.name, Plan.title).where(Plan.name.in_(plan_names)))).all()}
    per_plan: dict[str, dict[str, int | None]] = {}
    for e in (await session.execute(select(PlanEntitlement).where(PlanEntitlement.plan.in_(plan_names)))).scalars():
        per_plan.setdefault(e.plan, {})[e.resource] = e.cap
    overrides: dict[uuid.UUID, dict[str, int | None]] = {}
    for o in (await session.execute(select(OrgEntitlement).where(OrgEntitlement.org_id.in_(ids)))).scalars():
        overrides.setdefault(o.org_id, {})[o.resource] = o.cap
    result: dict[uuid.UUID, Caps] = {}
    for org_id, slug, plan in orgs:
        caps = {**per_plan.get(plan, {}), **overrides.get(org_id, {})}
        result[org_id] = Caps(plan=plan, plan_title=titles.get(plan, plan.title()), cpu_millis=caps.get("cpu_millis"),
                              memory_bytes=caps.get("memory_bytes"), gpus=caps.get("gpus"),
                              upgrade_url=upgrade_url(slug))
    return result


async def caps_for(session: AsyncSession, org_id: uuid.UUID) -> Caps:
    found = await caps_for_orgs(session, [org_id])
    if org_id not in found:
        raise LookupError(f"no org {org_id}")
    return found[org_id]


async def submission_block(session: AsyncSession, org_id: uuid.UUID) -> SubmissionBlock | None:
    """Dunning (``billing.dunning``): an org whose unpaid invoice is past its grace may not submit new
    jobs (402, with the reason and where to pay); running work and data are untouched."""
    found = await banner(session, org_id)
    if found is None or found.state != "blocked":
        return None
    slug = (await session.execute(select(Org.slug).where(Org.id == org_id))).scalar_one_or_none() or ""
    return SubmissionBlock(status=402, code="payment_required",
                           reason=f"{found.message} Pay or update the card at {upgrade_url(slug)}.")
