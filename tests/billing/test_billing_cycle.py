"""The billing cycle against the Stripe stand-in: ledger and Stripe agree, and a worker killed at any step
ends with exactly one invoice, one set of items, and at most one successful charge."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import plans
from billing.ledger.accounts import ensure_customer, get_account
from billing.ledger.invoices import write_invoice
from billing.ledger.models import Invoice, InvoiceLine
from billing.ledger.periods import Period
from billing.stripe_gateway import StripeGateway
from billing.usage.rates import create_rate_card
from tenants.db import tenant_session
from tenants.scope import Principal, TenantScope
from tenants.settings import Settings
from tests.billing.world import close, owner_scope, payg_org, stripe_invoices_of, usage
from tests.factories import make_org, make_user

pytestmark = pytest.mark.usefixtures("db")


async def _ledger(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID) -> tuple[Invoice, list[InvoiceLine]]:
    async with tenant_session(db, TenantScope.for_system(org_id, "test")) as s:
        inv = (await s.execute(select(Invoice).where(Invoice.org_id == org_id))).scalar_one()
        lines = list((await s.execute(select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id))).scalars())
        return inv, lines


async def test_stripe_totals_equal_ledger_totals_for_every_invoice(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    orgs = [await payg_org(db, gateway, bsettings) for _ in range(3)]
    await usage(owner_conn, orgs[0].org.id, period, vcpus=16, mem_gib=32, hours=10)  # $3.20 + $0.80
    await usage(owner_conn, orgs[1].org.id, period, vcpus=9, mem_gib=17, gpus=2, hours=7.5, day=12)
    await usage(owner_conn, orgs[2].org.id, period, vcpus=40, mem_gib=100, gpus=1, hours=0.33, day=28)
    for o in orgs:
        await close(db, gateway, o.org.id, period)

    for o in orgs:
        inv, lines = await _ledger(db, o.org.id)
        assert inv.status == "paid" and inv.stripe_step == "collected"
        assert inv.total_cents == sum(line.amount_cents for line in lines) > 0
        found = await stripe_invoices_of(gateway, inv.stripe_customer_id or "", inv.id)
        assert len(found) == 1
        stripe_inv = found[0]
        assert stripe_inv["id"] == inv.stripe_invoice_id
        assert stripe_inv["total"] == inv.total_cents
        assert stripe_inv["amount_paid"] == inv.total_cents
        assert stripe_inv["status"] == "paid"
    first, lines = await _ledger(db, orgs[0].org.id)
    assert first.total_cents == 400  # 80 vCPU-hours at $0.04 and 160 GiB-hours at $0.005 above the allowance
    assert {line.description: line.amount_cents for line in lines} == {"vCPU": 320, "Memory": 80}


async def test_a_declined_card_leaves_the_invoice_open_and_the_org_past_due(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings, card="pm_card_chargeCustomerFail")
    await usage(owner_conn, o.org.id, period)
    out = await close(db, gateway, o.org.id, period)
    assert (out.payment, out.status, out.dunning_started) == ("failed", "open", True)
    inv, _ = await _ledger(db, o.org.id)
    stripe_inv = (await stripe_invoices_of(gateway, inv.stripe_customer_id or "", inv.id))[0]
    assert stripe_inv["total"] == inv.total_cents and stripe_inv["status"] == "open"
    async with tenant_session(db, TenantScope.for_system(o.org.id, "test")) as s:
        account = await get_account(s, o.org.id)
        assert account.dunning_state == "past_due" and account.dunning_invoice_id == inv.id


async def test_writing_the_invoice_twice_returns_the_first(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings)
    await usage(owner_conn, o.org.id, period)
    scope = TenantScope.for_system(o.org.id, "test")
    results = []
    for _ in range(2):
        async with tenant_session(db, scope) as s:
            results.append(await write_invoice(s, o.org.id, period))
    assert results[0] is not None and results[1] is not None
    assert results[0].invoice_id == results[1].invoice_id and (results[0].created, results[1].created) == (True, False)


class Killed(Exception):
    """The worker died right after Stripe answered, before we could record the answer."""


# The calls that change something in Stripe: a kill after each (before we record its answer) is the hard case.
# A kill after a read, or before a call, leaves nothing in Stripe that the retry could duplicate.
STEPS = {"ensure_compat_subscription", "create_item", "create_invoice", "finalize", "pay"}


class KillAfter:
    """The real adapter, except that the process 'dies' right after its ``k``-th changing call returns."""

    def __init__(self, inner: StripeGateway, k: int, steps: set[str] = STEPS) -> None:
        self._inner, self._k, self._steps, self.calls = inner, k, steps, 0
        self.compat = inner.compat

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._steps:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            self.calls += 1
            if self.calls == self._k:
                raise Killed(name)
            return result
        return call


async def test_a_worker_killed_after_any_stripe_call_ends_with_exactly_one_invoice(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings)
    await usage(owner_conn, o.org.id, period, gpus=1)
    k, finished = 0, False
    while not finished:
        k += 1
        # The same month again, as if never billed (a new ledger invoice; the Stripe objects of earlier rounds
        # carry other invoice ids and must not be mistaken for this one's).
        await owner_conn.execute("DELETE FROM invoices WHERE org_id = $1", o.org.id)
        await owner_conn.execute("DELETE FROM usage_period_closes WHERE org_id = $1", o.org.id)
        killer = KillAfter(gateway, k)
        try:
            await close(db, killer, o.org.id, period)
            finished = True  # k is past the last call: nothing was killed
        except Killed:
            await close(db, gateway, o.org.id, period)  # the restarted worker runs the steps again
        inv, lines = await _ledger(db, o.org.id)
        assert inv.status == "paid", f"killed after call {k}"
        found = await stripe_invoices_of(gateway, inv.stripe_customer_id or "", inv.id)
        assert [f["id"] for f in found] == [inv.stripe_invoice_id], f"killed after call {k}: {found}"
        assert found[0]["total"] == found[0]["amount_paid"] == inv.total_cents, f"killed after call {k}"
        assert len(found[0]["lines"]["data"]) == len(lines) + 1  # + the stand-in's $0 subscription line
        pending = await gateway.list_items(customer=inv.stripe_customer_id or "", invoice=None)
        assert pending == [], f"killed after call {k}: items left behind"
    # every step was interrupted once: the subscription (first round only: it is made once), each of the 3
    # items, the invoice, finalize, the payment
    assert killer.calls == k - 1 >= 6


async def test_an_enterprise_contract_uses_its_own_rates_and_is_invoiced_not_charged(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings)
    operator = TenantScope(org_id=o.org.id, principal=Principal(kind="operator", id="ops", display="ops"),
                           org_slug=o.org.slug, permissions=frozenset({"billing:manage", "billing:read"}))
    async with tenant_session(db, operator) as s:
        await plans.set_plan(operator, s, "enterprise", action="plan.set_by_operator", collection="invoice")
        await create_rate_card(s, org_id=o.org.id, effective_from=period.start - timedelta(days=1), allow_past=True,
                               vcpu_hour_micros=20_000, memory_gib_hour_micros=0, gpu_default_hour_micros=0,
                               storage_gib_month_micros=0)
    await owner_conn.execute("UPDATE billing_plan_changes SET effective_at = effective_at - interval '100 days' "
                             "WHERE org_id = $1 AND plan = 'enterprise'", o.org.id)
    await usage(owner_conn, o.org.id, period)
    out = await close(db, gateway, o.org.id, period)
    assert (out.status, out.payment, out.total_cents) == ("open", "sent", 160)  # 80 vCPU-hours at $0.02
    inv, _ = await _ledger(db, o.org.id)
    assert (inv.plan, inv.collection, inv.payment_attempts) == ("enterprise", "invoice", 0)
    assert inv.due_at is not None and inv.due_at - (inv.issued_at or inv.due_at) == timedelta(days=30)
    stripe_inv = (await stripe_invoices_of(gateway, inv.stripe_customer_id or "", inv.id))[0]
    assert (stripe_inv["total"], stripe_inv["amount_paid"]) == (160, 0)


async def test_a_stripe_customer_is_made_once_per_org_under_retries_and_races(
        db: async_sessionmaker[AsyncSession], gateway: StripeGateway) -> None:
    async def customers_of(org_id: uuid.UUID) -> list[str]:
        listed = (await gateway.v1.customers.list_async(params={"limit": 100})).to_dict()["data"]
        return [c["id"] for c in listed if c["metadata"].get("org_id") == str(org_id)]

    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    with pytest.raises(Killed):  # Stripe made the customer; the worker died before recording it
        await ensure_customer(db, owner_scope(org, user), KillAfter(gateway, 1, {"create_customer"}))  # type: ignore[arg-type]
    made = await ensure_customer(db, owner_scope(org, user), gateway)
    assert await customers_of(org.id) == [made]
    other = await make_org(db, members={user.id: "owner"})
    raced = await asyncio.gather(*(ensure_customer(db, owner_scope(other, user), gateway) for _ in range(3)))
    assert len(set(raced)) == 1 and await customers_of(other.id) == [raced[0]]
