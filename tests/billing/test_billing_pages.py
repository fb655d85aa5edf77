"""The billing page and API as people use them: upgrade with a test card, schedule a downgrade, read invoices
(lines, adjustments, printable view), the estimate; who may see and change what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import plans
from billing.ledger.periods import Period, current_period
from billing.stripe_gateway import StripeGateway
from tenants.db import unscoped_session
from tenants.models import AuditEvent, Org
from tenants.settings import Settings
from tests.billing.helpers import GIB, add_usage
from tests.billing.world import close, payg_org, usage
from tests.factories import add_member, make_api_key, make_org, make_user, sign_in

pytestmark = pytest.mark.usefixtures("db")
HTML = {"accept": "text/html"}


async def _actions(db: async_sessionmaker[AsyncSession], org_id: object) -> list[str]:
    async with unscoped_session(db, reason="test") as s:
        return list((await s.execute(select(AuditEvent.action).where(AuditEvent.org_id == org_id)
                                     .order_by(AuditEvent.id))).scalars())


async def test_an_owner_upgrades_with_a_test_card_from_the_billing_page(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], bsettings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    await sign_in(http, db, user, bsettings)
    page = await http.get(f"/orgs/{org.slug}/billing", headers=HTML)
    assert page.status_code == 200 and "Add card and upgrade" in page.text and 'id="plan">Free<' in page.text
    resp = await http.post(f"/orgs/{org.slug}/billing/card", data={"test_card": "pm_card_visa", "upgrade": "1"},
                           headers=HTML)
    assert resp.status_code == 303 and "Pay-as-you-go" in resp.headers["location"]
    page = await http.get(resp.headers["location"], headers=HTML)
    assert 'id="plan">Pay-as-you-go<' in page.text and "Visa ending 4242" in page.text
    assert await _actions(db, org.id) == ["payment_method.updated", "plan.upgraded"]
    api = (await http.get(f"/api/v1/orgs/{org.slug}/billing")).json()
    assert (api["plan"], api["payment_method"]["last4"], api["dunning"]) == ("payg", "4242", None)


async def test_a_bad_test_card_is_named_by_the_field_and_changes_nothing(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], bsettings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    await sign_in(http, db, user, bsettings)
    resp = await http.post(f"/orgs/{org.slug}/billing/card", data={"test_card": "pm_card_bogus", "upgrade": "1"},
                           headers=HTML)
    assert resp.status_code == 422 and "unknown test card" in resp.text
    assert (await http.get(f"/api/v1/orgs/{org.slug}/billing")).json()["plan"] == "free"


async def test_members_cannot_see_billing_and_the_billing_role_can_manage_it(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], bsettings: Settings) -> None:
    owner, member, biller = await make_user(db), await make_user(db), await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    await add_member(db, org, member, "member")
    await add_member(db, org, biller, "billing")
    member_key = {"Authorization": f"Bearer {await make_api_key(db, org, role='member')}"}
    assert (await http.get(f"/api/v1/orgs/{org.slug}/billing", headers=member_key)).status_code == 403
    assert (await http.get(f"/api/v1/orgs/{org.slug}/invoices", headers=member_key)).status_code == 403
    await sign_in(http, db, biller, bsettings)
    resp = await http.post(f"/orgs/{org.slug}/billing/card", data={"test_card": "pm_card_visa", "upgrade": "1"},
                           headers=HTML)
    assert resp.status_code == 303
    assert (await http.get(f"/api/v1/orgs/{org.slug}/billing")).json()["plan"] == "payg"


async def test_a_downgrade_waits_for_the_end_of_the_period(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], gateway: StripeGateway,
        bsettings: Settings) -> None:
    o = await payg_org(db, gateway, bsettings)
    await sign_in(http, db, o.owner, bsettings)
    resp = await http.post(f"/orgs/{o.org.slug}/billing/downgrade", headers=HTML)
    end = current_period(datetime.now(UTC)).end
    assert resp.status_code == 303 and f"{end:%Y-%m-%d}" in resp.headers["location"]
    api = (await http.get(f"/api/v1/orgs/{o.org.slug}/billing")).json()
    assert (api["plan"], api["pending_plan"]) == ("payg", "free")
    assert "Moving to Free on" in (await http.get(f"/orgs/{o.org.slug}/billing", headers=HTML)).text
    async with unscoped_session(db, reason="test: the period ends") as s:
        assert await plans.apply_due_changes(s, end - timedelta(seconds=1)) == 0
        assert await plans.apply_due_changes(s, end) == 1
    async with unscoped_session(db, reason="test") as s:
        assert (await s.get(Org, o.org.id)).plan == "free"  # type: ignore[union-attr]
    assert (await _actions(db, o.org.id))[-2:] == ["plan.downgrade_scheduled", "plan.downgraded"]


async def test_invoices_show_lines_adjustments_and_a_printable_view(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings)
    await usage(owner_conn, o.org.id, period, vcpus=16, mem_gib=16, hours=10)  # 80 vCPU-hours billable: $3.20
    first = await close(db, gateway, o.org.id, period)
    # 5 more vCPU-hours of last month arrive after it closed; this month's usage too. Then this month closes.
    await add_usage(owner_conn, o.org.id, start=period.start + timedelta(days=20), hours=1, vcpu_millis=13_000,
                    ingested_at=datetime.now(UTC), late=True)
    now = current_period(datetime.now(UTC))
    await add_usage(owner_conn, o.org.id, start=now.start, hours=2, vcpu_millis=10_000, memory_bytes=20 * GIB)
    estimate = (await http.get(f"/api/v1/orgs/{o.org.slug}/billing",
                               headers={"Authorization": f"Bearer {await make_api_key(db, o.org, 'owner')}"})).json()
    assert estimate["upcoming"]["period"] == now and estimate["upcoming"]["total_cents"] == 16 + 4 + 20
    second = await close(db, gateway, o.org.id, now)

    key = {"Authorization": f"Bearer {await make_api_key(db, o.org, 'billing')}"}
    listed = (await http.get(f"/api/v1/orgs/{o.org.slug}/invoices", headers=key)).json()["invoices"]
    assert [(i["period"], i["status"], i["total_cents"]) for i in listed] == [
        (now, "paid", second.total_cents), (period, "paid", 320)]
    only = (await http.get(f"/api/v1/orgs/{o.org.slug}/invoices", params={"period": period}, headers=key)).json()
    assert [i["id"] for i in only["invoices"]] == [first.invoice_id]
    detail = (await http.get(f"/api/v1/orgs/{o.org.slug}/invoices/{second.invoice_id}", headers=key)).json()
    assert [(x["description"], x["quantity"], x["unit_price"], x["amount_cents"]) for x in detail["lines"]] == [
        ("vCPU", "4.000000000", "0.04", 16), ("Memory", "8.000000000", "0.005", 4)]
    assert [(x["period"], x["quantity"], x["amount_cents"]) for x in detail["adjustments"]] == [
        (period, "5.000000000", 20)]
    assert detail["total_cents"] == second.total_cents == 40

    await sign_in(http, db, o.owner, bsettings)
    page = await http.get(f"/orgs/{o.org.slug}/billing/invoices/{second.invoice_id}", headers=HTML)
    assert page.status_code == 200 and "late usage of " + period in page.text and "$0.40" in page.text
    printable = await http.get(f"/orgs/{o.org.slug}/billing/invoices/{second.invoice_id}/print", headers=HTML)
    assert printable.status_code == 200 and 'class="invoice-print"' in printable.text
    assert 'header class="top"' not in printable.text
    bad = await http.get(f"/api/v1/orgs/{o.org.slug}/invoices", params={"period": "11-2026"}, headers=key)
    assert bad.status_code == 422


async def test_the_operator_closes_a_period_from_the_console(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], bsettings: Settings) -> None:
    operator = await make_user(db, operator=True)
    await sign_in(http, db, operator, bsettings)
    page = await http.get("/operator/billing", headers=HTML)
    assert page.status_code == 200 and "Close a period now" in page.text
    resp = await http.post("/operator/billing/close", data={"org": "no-such-org", "period": "2026-11"}, headers=HTML)
    assert resp.status_code == 422 and "no organization with that slug" in resp.text
    resp = await http.post("/operator/billing/close", data={"org": "x", "period": "Nov"}, headers=HTML)
    assert resp.status_code == 422 and "use YYYY-MM" in resp.text
