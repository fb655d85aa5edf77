"""Billing accounts: one per org, made on first use; the Stripe customer made once per org.

``ensure_customer`` is idempotent under retries and concurrency: it first commits our intent (a key),
then, holding the account row, looks the customer up by the org's id in Stripe's metadata and creates
one (with the intent as idempotency key) only if none exists, and records its id. A retry after a crash
between Stripe's answer and our commit finds the customer by metadata instead of making a second.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger.models import BillingAccount
from billing.stripe_gateway import CardInfo, StripeGateway
from tenants.db import new_id, tenant_session, utcnow
from tenants.models import Membership, Org, User
from tenants.scope import TenantScope

__all__ = ["BILLING_ROLES", "billing_contacts", "ensure_customer", "find_account", "get_account", "record_card"]

BILLING_ROLES = ("owner", "admin", "billing")  # who hears about invoices and failed payments


async def find_account(session: AsyncSession, org_id: uuid.UUID) -> BillingAccount | None:
    return (await session.execute(select(BillingAccount).where(BillingAccount.org_id == org_id))).scalar_one_or_none()


async def get_account(session: AsyncSession, org_id: uuid.UUID, *, lock: bool = False) -> BillingAccount:
    """The org's account, created on first use (concurrent first uses make one row)."""
    await session.execute(pg_insert(BillingAccount).values(id=new_id(), org_id=org_id, collection="card",
                                                           days_until_due=30, currency="usd", dunning_state="ok")
                          .on_conflict_do_nothing(index_elements=["org_id"]))
    query = select(BillingAccount).where(BillingAccount.org_id == org_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one()


async def billing_contacts(session: AsyncSession, org_id: uuid.UUID) -> list[str]:
    rows = await session.execute(
        select(User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id, Membership.role.in_(BILLING_ROLES)).order_by(User.email))
    return [r for (r,) in rows]


async def record_card(session: AsyncSession, account: BillingAccount, card: CardInfo, *, event_at: int) -> None:
    account.payment_method_id = card.id
    account.card_brand, account.card_last4, account.card_exp = card.brand, card.last4, card.exp
    account.payment_method_event_at = max(account.payment_method_event_at or 0, event_at)
    account.updated_at = utcnow()
    await session.flush()


async def ensure_customer(sessions: async_sessionmaker[AsyncSession], scope: TenantScope,
                          gateway: StripeGateway) -> str:
    async with tenant_session(sessions, scope) as s:
        account = await get_account(s, scope.org_id)
        if account.stripe_customer_id:
            return account.stripe_customer_id
        if not account.customer_intent_key:
            account.customer_intent_key = f"mc-customer-{uuid.uuid4()}"  # committed before Stripe hears of it
    async with tenant_session(sessions, scope) as s:
        account = await get_account(s, scope.org_id, lock=True)  # one creator at a time per org
        if account.stripe_customer_id:
            return account.stripe_customer_id
        org = await s.get(Org, scope.org_id)
        assert org is not None
        customer = await gateway.find_customer(str(scope.org_id))
        if customer is None:
            contacts = await billing_contacts(s, scope.org_id)
            customer = await gateway.create_customer(
                org_id=str(scope.org_id), org_slug=org.slug, name=org.name, email=contacts[0] if contacts else None,
                idempotency_key=account.customer_intent_key or f"mc-customer-{scope.org_id}")
        account.stripe_customer_id = customer
        account.updated_at = utcnow()
        return customer
