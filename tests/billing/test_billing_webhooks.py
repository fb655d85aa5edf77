"""``/webhooks/stripe`` through the real app: forged events refused, duplicates applied once, any order
ends right, and missed events recovered from Stripe's event list."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from billing.entitlements import submission_block
from billing.ledger.accounts import get_account
from billing.ledger.models import Invoice, StripeEvent
from billing.ledger.periods import Period
from billing.stripe_gateway import StripeGateway, webhook_secret
from billing.webhooks import recover_events
from tenants.db import tenant_session, unscoped_session
from tenants.models import AuditEvent
from tenants.scope import TenantScope
from tenants.settings import Settings
from tests.billing.helpers import invoice_event, signed
from tests.billing.world import PaygOrg, close, payg_org, usage
from tests.factories import make_api_key, make_org, make_user

pytestmark = pytest.mark.usefixtures("db")


async def _failed_invoice(db: async_sessionmaker[AsyncSession], conn: asyncpg.Connection, gateway: StripeGateway,
                          settings: Settings, period: Period) -> tuple[PaygOrg, Invoice]:
    o = await payg_org(db, gateway, settings, card="pm_card_chargeCustomerFail")
    await usage(conn, o.org.id, period)
    out = await close(db, gateway, o.org.id, period)
    assert out.payment == "failed"
    return o, await _invoice(db, o.org.id)


async def _invoice(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID) -> Invoice:
    async with tenant_session(db, TenantScope.for_system(org_id, "test")) as s:
        return (await s.execute(select(Invoice).where(Invoice.org_id == org_id))).scalar_one()


async def _dunning_state(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID) -> str:
    async with tenant_session(db, TenantScope.for_system(org_id, "test")) as s:
        return (await get_account(s, org_id)).dunning_state


async def _post(http: httpx.AsyncClient, event: dict[str, object], secret: str) -> httpx.Response:
    body, headers = signed(event, secret)
    return await http.post("/webhooks/stripe", content=body, headers=headers)


async def test_a_forged_webhook_is_refused_and_changes_nothing(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o, inv = await _failed_invoice(db, owner_conn, gateway, bsettings, period)
    event = invoice_event("evt_forged_1", "invoice.paid", inv.stripe_invoice_id or "", status="paid",
                          created=int(time.time()))
    resp = await _post(http, event, "whsec_attacker")
    assert resp.status_code == 400 and resp.json()["code"] == "bad_signature"
    unsigned = await http.post("/webhooks/stripe", content=b'{"id": "evt_x"}', headers={"content-type": "application/json"})
    assert unsigned.status_code == 400
    assert (await _invoice(db, o.org.id)).status == "open"
    async with unscoped_session(db, reason="test") as s:
        assert (await s.execute(select(func.count()).select_from(StripeEvent))).scalar() == 0


async def test_a_duplicated_event_stream_is_applied_once(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o, inv = await _failed_invoice(db, owner_conn, gateway, bsettings, period)
    secret = webhook_secret(bsettings) or ""
    now = int(time.time())
    paid = invoice_event("evt_dup_paid", "invoice.paid", inv.stripe_invoice_id or "", status="paid", created=now)
    answers = [(await _post(http, paid, secret)).json() for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert (await _invoice(db, o.org.id)).status == "paid"
    assert await _dunning_state(db, o.org.id) == "ok"
    async with unscoped_session(db, reason="test") as s:
        recovered = (await s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.org_id == o.org.id, AuditEvent.action == "billing.payment_recovered"))).scalar()
    assert recovered == 1


async def test_a_reordered_event_stream_ends_in_the_newest_state(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o, inv = await _failed_invoice(db, owner_conn, gateway, bsettings, period)
    secret, sid, t = webhook_secret(bsettings) or "", inv.stripe_invoice_id or "", int(time.time())
    finalized = invoice_event("evt_ro_fin", "invoice.finalized", sid, status="open", created=t - 30)
    failed = invoice_event("evt_ro_fail", "invoice.payment_failed", sid, status="open", created=t - 20,
                           error="Your card was declined.")
    paid = invoice_event("evt_ro_paid", "invoice.paid", sid, status="paid", created=t - 10)
    for event in (paid, failed, finalized, failed):  # newest first, then the older ones, one twice
        assert (await _post(http, event, secret)).status_code == 200
    after = await _invoice(db, o.org.id)
    assert (after.status, after.stripe_status) == ("paid", "paid")
    assert await _dunning_state(db, o.org.id) == "ok"  # the stale failure did not put it back in dunning
    voided = invoice_event("evt_ro_void", "invoice.voided", sid, status="void", created=t)
    await _post(http, voided, secret)
    assert (await _invoice(db, o.org.id)).status == "paid"  # paid is final


async def test_a_failed_payment_event_starts_dunning_and_a_paid_one_ends_it(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period, temporal_client: Client) -> None:
    o, inv = await _failed_invoice(db, owner_conn, gateway, bsettings, period)
    async with tenant_session(db, TenantScope.for_system(o.org.id, "test")) as s:
        account = await get_account(s, o.org.id)
        account.dunning_state, account.dunning_invoice_id = "ok", None  # as if the close had not seen the failure
    secret, sid, t = webhook_secret(bsettings) or "", inv.stripe_invoice_id or "", int(time.time())
    failed = invoice_event("evt_pf_1", "invoice.payment_failed", sid, status="open", created=t, error="declined")
    assert (await _post(http, failed, secret)).json()["outcome"] == "dunning started"
    assert await _dunning_state(db, o.org.id) == "past_due"
    handle = temporal_client.get_workflow_handle(f"billing-dunning-{inv.id}")
    assert (await handle.describe()).workflow_type == "billing.dunning"
    paid = invoice_event("evt_pf_2", "invoice.paid", sid, status="paid", created=t + 1)
    assert (await _post(http, paid, secret)).json()["outcome"] == "invoice paid; dunning settled"
    assert await _dunning_state(db, o.org.id) == "ok"
    await handle.terminate("test over: no worker runs this queue")


async def test_missed_events_are_recovered_from_stripes_event_list(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, gateway: StripeGateway,
        bsettings: Settings, period: Period) -> None:
    o, inv = await _failed_invoice(db, owner_conn, gateway, bsettings, period)
    since = datetime.now(UTC) - timedelta(seconds=2)
    # The customer pays in Stripe (a new card, Stripe's own retry); our webhook endpoint was down meanwhile.
    setup = await gateway.confirm_test_card(customer=inv.stripe_customer_id or "", org_id=str(o.org.id),
                                            test_card="pm_card_visa")
    await gateway.set_default_payment_method(inv.stripe_customer_id or "", setup.payment_method or "")
    assert (await gateway.pay(inv.stripe_invoice_id or "")).paid
    assert (await _invoice(db, o.org.id)).status == "open"
    report = await recover_events(db, gateway, since=since)
    assert report.applied >= 2  # invoice.payment_succeeded, payment_intent.succeeded, ...
    assert (await _invoice(db, o.org.id)).status == "paid"
    assert await _dunning_state(db, o.org.id) == "ok"
    again = await recover_events(db, gateway, since=since)
    assert again.applied == 0 and again.duplicates == report.seen
    async with tenant_session(db, TenantScope.for_system(o.org.id, "test")) as s:
        assert await submission_block(s, o.org.id) is None


async def test_card_changes_apply_in_order_and_only_to_the_default_card(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], bsettings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    async with tenant_session(db, TenantScope.for_system(org.id, "test")) as s:
        account = await get_account(s, org.id)
        account.stripe_customer_id, account.payment_method_id = f"cus_{org.id.hex[:12]}", "pm_default"
        account.card_brand, account.card_last4, account.card_exp = "visa", "4242", "12/2030"
    secret, t = webhook_secret(bsettings) or "", int(time.time())

    def pm_event(event_id: str, pm: str, exp_year: int, created: int) -> dict[str, object]:
        return {"id": event_id, "object": "event", "type": "payment_method.updated", "created": created,
                "data": {"object": {"id": pm, "object": "payment_method", "customer": f"cus_{org.id.hex[:12]}",
                                    "card": {"brand": "visa", "last4": "4242", "exp_month": 1,
                                             "exp_year": exp_year}}}}

    outcomes = [(await _post(http, e, secret)).json()["outcome"] for e in (
        pm_event("evt_pm_new", "pm_default", 2032, t), pm_event("evt_pm_old", "pm_default", 2031, t - 60),
        pm_event("evt_pm_other", "pm_other", 2040, t + 1))]
    assert outcomes == ["card details updated", "stale", "not the default payment method"]
    api = (await http.get(f"/api/v1/orgs/{org.slug}/billing",
                          headers={"Authorization": f"Bearer {await make_api_key(db, org, 'owner')}"})).json()
    assert api["payment_method"] == {"brand": "visa", "last4": "4242", "exp": "01/2032"}
