"""Plan changes and the payment method: upgrade now, downgrade at the period end, Enterprise by contract.

The plan history (``billing_plan_changes``) is what rating reads: an hour is billed only when the plan
in force then is billable (Pay-as-you-go or Enterprise). ``orgs.plan`` is the plan in force now, what
caps and pages read; a scheduled downgrade moves it when ``apply_due_changes`` runs at the period start.

Setting up a card: in production Stripe Checkout in setup mode (the card never touches our servers),
then the saved card becomes the customer's default; on the local stand-in, which has no Checkout, a
SetupIntent confirmed server-side with a test card (``pm_card_visa``). The adapter decides by settings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger.accounts import ensure_customer, get_account, record_card
from billing.ledger.models import PlanChange
from billing.ledger.periods import current_period
from billing.stripe_gateway import CardInfo, StripeGateway, webhook_secret
from tenants import audit
from tenants.db import tenant_session, utcnow
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.models import Org
from tenants.permissions import Permission
from tenants.scope import Principal, TenantScope
from tenants.settings import Settings

__all__ = [
    "BILLABLE_PLANS",
    "TEST_CARDS",
    "SetupStart",
    "apply_due_changes",
    "cancel_downgrade",
    "finish_checkout",
    "plan_at",
    "plan_history",
    "schedule_downgrade",
    "set_plan",
    "start_payment_setup",
    "upgrade",
]

BILLABLE_PLANS = frozenset({"payg", "enterprise"})
# The stand-in's test cards offered on the dev billing page: one that pays, one whose charges fail.
TEST_CARDS = {"pm_card_visa": "Visa 4242 (pays)", "pm_card_chargeCustomerFail": "Visa 0341 (charges fail)"}


@dataclass(frozen=True, slots=True)
class SetupStart:
    redirect_url: str | None  # Checkout's page (production); None when the card was set at once
    card: CardInfo | None


def _actor(scope: TenantScope) -> str:
    return scope.principal.display or f"{scope.principal.kind}:{scope.principal.id}"


async def _org(session: AsyncSession, org_id: uuid.UUID) -> Org:
    org = await session.get(Org, org_id)
    if org is None:
        raise NotFound("Organization not found.")
    return org


async def _ensure_history(session: AsyncSession, org: Org) -> None:
    """The first change also records the plan the org had since it was created, so rating knows both."""
    exists = (await session.execute(select(PlanChange.id).where(PlanChange.org_id == org.id).limit(1))).first()
    if exists is None:
        session.add(PlanChange(org_id=org.id, plan=org.plan, effective_at=org.created_at, applied_at=org.created_at,
                               actor="history"))
        await session.flush()


async def set_plan(scope: TenantScope, session: AsyncSession, plan: str, *, action: str, ip: str | None = None,
                   collection: str | None = None) -> None:
    """Change the plan now (and drop any scheduled change). Operators use it for Enterprise contracts."""
    org = await _org(session, scope.org_id)
    await _ensure_history(session, org)
    now = utcnow()
    account = await get_account(session, org.id)
    await _cancel_pending(session, org.id, now)
    account.pending_plan, account.pending_plan_at = None, None
    if collection is not None:
        account.collection = collection
    before = org.plan
    org.plan = plan
    session.add(PlanChange(org_id=org.id, plan=plan, effective_at=now, applied_at=now, actor=_actor(scope)))
    await audit.record(session, action=action, actor=scope.principal, org_id=org.id, target_kind="org",
                       target_id=org.id, target_display=org.slug, ip=ip,
                       details={"from": before, "to": plan, "collection": account.collection})


async def upgrade(scope: TenantScope, session: AsyncSession, *, ip: str | None = None) -> bool:
    """Free -> Pay-as-you-go, now. Needs a card on file. True if the plan changed."""
    scope.require(Permission.BILLING_MANAGE)
    org = await _org(session, scope.org_id)
    account = await get_account(session, org.id)
    if org.plan in BILLABLE_PLANS:
        if account.pending_plan:  # "upgrading" while a downgrade is scheduled keeps the plan
            await cancel_downgrade(scope, session, ip=ip)
        return False
    if account.collection == "card" and not account.payment_method_id:
        raise InvalidInput("Add a card before upgrading.", field_errors={"card": "no payment method on file"})
    await set_plan(scope, session, "payg", action="plan.upgraded", ip=ip)
    return True


async def _cancel_pending(session: AsyncSession, org_id: uuid.UUID, now: datetime) -> None:
    pending = (await session.execute(select(PlanChange).where(
        PlanChange.org_id == org_id, PlanChange.applied_at.is_(None), PlanChange.cancelled_at.is_(None)))).scalars()
    for change in pending:
        change.cancelled_at = now


async def schedule_downgrade(scope: TenantScope, session: AsyncSession, *, ip: str | None = None) -> datetime:
    """Pay-as-you-go -> Free at the end of the current period (usage until then is billed)."""
    scope.require(Permission.BILLING_MANAGE)
    org = await _org(session, scope.org_id)
    if org.plan == "free":
        raise Conflict("This organization is on the Free plan already.")
    if org.plan == "enterprise":
        raise Conflict("Enterprise contracts are changed by your account manager.")
    await _ensure_history(session, org)
    now = utcnow()
    at = current_period(now).end
    await _cancel_pending(session, org.id, now)
    session.add(PlanChange(org_id=org.id, plan="free", effective_at=at, actor=_actor(scope)))
    account = await get_account(session, org.id)
    account.pending_plan, account.pending_plan_at = "free", at
    await audit.record(session, action="plan.downgrade_scheduled", actor=scope.principal, org_id=org.id,
                       target_kind="org", target_id=org.id, target_display=org.slug, ip=ip,
                       details={"to": "free", "effective_at": at.isoformat()})
    return at


async def cancel_downgrade(scope: TenantScope, session: AsyncSession, *, ip: str | None = None) -> None:
    scope.require(Permission.BILLING_MANAGE)
    account = await get_account(session, scope.org_id)
    if not account.pending_plan:
        return
    await _cancel_pending(session, scope.org_id, utcnow())
    account.pending_plan, account.pending_plan_at = None, None
    await audit.record(session, action="plan.downgrade_cancelled", actor=scope.principal, org_id=scope.org_id,
                       target_kind="org", target_id=scope.org_id, ip=ip)


async def apply_due_changes(session: AsyncSession, now: datetime) -> int:
    """Scheduled changes whose time has come take effect (unscoped: the monthly close runs it for all)."""
    due = (await session.execute(select(PlanChange).where(
        PlanChange.applied_at.is_(None), PlanChange.cancelled_at.is_(None), PlanChange.effective_at <= now)
        .order_by(PlanChange.effective_at))).scalars().all()
    for change in due:
        org = await session.get(Org, change.org_id)
        change.applied_at = now
        if org is None:
            continue
        before, org.plan = org.plan, change.plan
        account = await get_account(session, org.id)
        account.pending_plan, account.pending_plan_at = None, None
        await audit.record(session, action="plan.downgraded", actor=Principal.system("billing.plan-changes"),
                           org_id=org.id, target_kind="org", target_id=org.id, target_display=org.slug,
                           details={"from": before, "to": change.plan, "scheduled_by": change.actor})
    return len(due)


async def plan_history(session: AsyncSession, org_id: uuid.UUID, until: datetime) -> list[tuple[datetime, str]]:
    """(effective_at, plan) in order, up to ``until``; empty means "the current plan, always"."""
    rows = await session.execute(select(PlanChange.effective_at, PlanChange.plan).where(
        PlanChange.org_id == org_id, PlanChange.cancelled_at.is_(None), PlanChange.effective_at < until)
        .order_by(PlanChange.effective_at, PlanChange.created_at))
    return [(at, plan) for at, plan in rows]


def plan_at(history: list[tuple[datetime, str]], current: str, at: datetime) -> str:
    """The plan in force at ``at`` (pure)."""
    plan = None
    for effective_at, name in history:
        if effective_at <= at:
            plan = name
        else:
            break
    return plan if plan is not None else (history[0][1] if history else current)


async def start_payment_setup(sessions: async_sessionmaker[AsyncSession], scope: TenantScope,
                              gateway: StripeGateway, settings: Settings, *, upgrade_plan: bool,
                              test_card: str = "pm_card_visa", ip: str | None = None) -> SetupStart:
    """Begin saving a card (and upgrading, if asked): Checkout in production, a test card on the stand-in."""
    scope.require(Permission.BILLING_MANAGE)
    if gateway.compat and test_card not in TEST_CARDS:
        raise InvalidInput("Choose one of the test cards.", field_errors={"test_card": "unknown test card"})
    customer = await ensure_customer(sessions, scope, gateway)
    base = f"{settings.public_url}/orgs/{quote(scope.org_slug)}/billing"
    if not gateway.compat:
        session = await gateway.start_setup(
            customer=customer, org_id=str(scope.org_id), cancel_url=base,
            success_url=f"{base}/setup-complete?session_id={{CHECKOUT_SESSION_ID}}&upgrade={int(upgrade_plan)}")
        async with tenant_session(sessions, scope) as s:
            (await get_account(s, scope.org_id)).setup_ref = session.id
        return SetupStart(redirect_url=session.url, card=None)
    secret = webhook_secret(settings)
    if secret:  # the stand-in forgets its webhook targets when it restarts: tell it again, cheaply
        await gateway.register_dev_webhook(f"{settings.public_url}/webhooks/stripe", secret)
    setup = await gateway.confirm_test_card(customer=customer, org_id=str(scope.org_id), test_card=test_card)
    assert setup.payment_method is not None
    card = await gateway.set_default_payment_method(customer, setup.payment_method)
    await _save_card(sessions, scope, card, upgrade_plan=upgrade_plan, ip=ip)
    return SetupStart(redirect_url=None, card=card)


async def finish_checkout(sessions: async_sessionmaker[AsyncSession], scope: TenantScope, gateway: StripeGateway,
                          *, session_id: str, upgrade_plan: bool, ip: str | None = None) -> CardInfo:
    """Back from Checkout (or its webhook): the saved card becomes the default; upgrade if asked."""
    scope.require(Permission.BILLING_MANAGE)
    async with tenant_session(sessions, scope) as s:
        account = await get_account(s, scope.org_id)
        customer, expected = account.stripe_customer_id, account.setup_ref
    if not customer or expected != session_id:
        raise NotFound("That card setup is not this organization's, or it has expired.")
    done = await gateway.finish_checkout(session_id)
    if not done.payment_method:
        raise InvalidInput("The card setup was not completed.", field_errors={"card": "not completed"})
    card = await gateway.set_default_payment_method(customer, done.payment_method)
    await _save_card(sessions, scope, card, upgrade_plan=upgrade_plan, ip=ip)
    return card


async def _save_card(sessions: async_sessionmaker[AsyncSession], scope: TenantScope, card: CardInfo, *,
                     upgrade_plan: bool, ip: str | None) -> None:
    async with tenant_session(sessions, scope) as s:
        account = await get_account(s, scope.org_id)
        await record_card(s, account, card, event_at=int(utcnow().timestamp()))
        account.setup_ref = None
        await audit.record(s, action="payment_method.updated", actor=scope.principal, org_id=scope.org_id,
                           target_kind="payment_method", target_id=card.id, ip=ip,
                           details={"brand": card.brand, "last4": card.last4})
        if upgrade_plan:
            await upgrade(scope, s, ip=ip)
