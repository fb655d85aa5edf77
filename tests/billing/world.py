"""An org on Pay-as-you-go with a card in the Stripe stand-in, usage last month, and its invoice closed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import plans
from billing.ledger.invoices import open_invoice, write_invoice
from billing.ledger.periods import Period
from billing.ledger.push import PushOutcome, push_invoice
from billing.stripe_gateway import StripeGateway
from tenants.db import tenant_session, unscoped_session, utcnow
from tenants.permissions import permissions_for
from tenants.scope import Principal, TenantScope
from tenants.settings import Settings
from tests.billing.helpers import GIB, add_usage
from tests.factories import MadeOrg, MadeUser, make_org, make_user


@dataclass
class PaygOrg:
    org: MadeOrg
    owner: MadeUser
    scope: TenantScope


def owner_scope(org: MadeOrg, user: MadeUser) -> TenantScope:
    return TenantScope(org_id=org.id, principal=Principal(kind="user", id=str(user.id), display=user.email),
                       org_slug=org.slug, role="owner", permissions=permissions_for("owner"))


async def payg_org(db: async_sessionmaker[AsyncSession], gateway: StripeGateway, settings: Settings, *,
                   card: str = "pm_card_visa") -> PaygOrg:
    """Upgraded from the billing flow a year ago (its history moved back, so last month was Pay-as-you-go)."""
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    scope = owner_scope(org, user)
    await plans.start_payment_setup(db, scope, gateway, settings, upgrade_plan=True, test_card=card)
    async with unscoped_session(db, reason="test: the org upgraded long ago") as s:
        await s.execute(text("UPDATE billing_plan_changes SET effective_at = effective_at - interval '365 days' "
                             "WHERE org_id = :o"), {"o": org.id})
        await s.execute(text("UPDATE orgs SET created_at = created_at - interval '366 days' WHERE id = :o"),
                        {"o": org.id})
    return PaygOrg(org=org, owner=user, scope=scope)


async def usage(conn: asyncpg.Connection, org_id: uuid.UUID, period: Period, *, vcpus: int = 16, mem_gib: int = 32,
                gpus: int = 0, hours: float = 10, day: int = 3) -> None:
    """``vcpus`` and ``mem_gib`` for ``hours`` from day ``day`` of ``period`` (half above the free allowance)."""
    await add_usage(conn, org_id, start=period.start + timedelta(days=day - 1), hours=hours,
                    vcpu_millis=vcpus * 1000, memory_bytes=mem_gib * GIB, gpus=gpus)


async def close(db: async_sessionmaker[AsyncSession], gateway: Any, org_id: uuid.UUID, period: Period) -> PushOutcome:
    """What ``billing.close-period`` does, without Temporal: write, open, push and collect."""
    scope = TenantScope.for_system(org_id, "test")
    async with tenant_session(db, scope) as s:
        written = await write_invoice(s, org_id, period)
    assert written is not None
    async with tenant_session(db, scope) as s:
        await open_invoice(s, written.invoice_id, now=utcnow())
    return await push_invoice(db, gateway, org_id, written.invoice_id)


async def stripe_invoices_of(gateway: StripeGateway, customer: str, invoice_id: uuid.UUID) -> list[dict[str, Any]]:
    page = (await gateway.v1.invoices.list_async(params={"customer": customer, "limit": 100})).to_dict()
    return [d for d in page["data"] if (d.get("metadata") or {}).get("mc_invoice_id") == str(invoice_id)
            or str(invoice_id) in (d.get("description") or "")]
