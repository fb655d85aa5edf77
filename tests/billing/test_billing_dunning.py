"""Dunning under the time-skipping test server: a failed payment -> retries -> blocked submissions after
the grace -> restored on payment; Enterprise invoice collection gets no card retries."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from billing.ledger.accounts import get_account
from billing.ledger.periods import Period
from billing.stripe_gateway import StripeGateway, webhook_secret
from tenants.db import tenant_session
from tenants.scope import TenantScope
from tenants.settings import Settings
from tests.billing.helpers import invoice_event, signed
from tests.billing.world import close, payg_org, usage
from tests.factories import make_api_key
from workflows.billing.activities import BillingActivities
from workflows.billing.types import DunningInput, DunningState, DunningStep
from workflows.billing.workflow import DunningWorkflow

pytestmark = pytest.mark.usefixtures("db")

JOB = {"name": "train", "image": "python:3.12", "command": ["python", "-c", "print(1)"],
       "resources": {"cpu": 1, "memory": "1Gi"}}


def _stubs(calls: list[str]) -> list[Any]:
    @activity.defn(name="billing.dunning-start")
    async def start(inp: DunningStep) -> DunningState:
        calls.append("start")
        return DunningState(settled=False, state="past_due")

    @activity.defn(name="billing.dunning-retry")
    async def retry(inp: DunningStep) -> DunningState:
        calls.append("retry")
        return DunningState(settled=False, state="past_due")

    @activity.defn(name="billing.dunning-block")
    async def block(inp: DunningStep) -> DunningState:
        calls.append("block")
        return DunningState(settled=False, state="blocked")

    @activity.defn(name="billing.dunning-check")
    async def check(inp: DunningStep) -> DunningState:
        calls.append("check")
        return DunningState(settled=len([c for c in calls if c == "check"]) >= 2, state="blocked")

    return [start, retry, block, check]


@pytest.mark.parametrize(("collection", "expected"), [
    ("card", ["start", "retry", "retry", "retry", "block", "check", "check"]),
    ("invoice", ["start", "block", "check", "check"]),  # Enterprise on invoice collection: no card retries
])
async def test_dunning_retries_cards_then_blocks_after_the_grace(
        time_skipping_env: WorkflowEnvironment, collection: str, expected: list[str]) -> None:
    calls: list[str] = []
    queue = f"dunning-{uuid.uuid4().hex[:6]}"
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[DunningWorkflow],
                      activities=_stubs(calls)):
        now = await time_skipping_env.get_current_time()
        due = (now + timedelta(days=30)).isoformat() if collection == "invoice" else None
        result = await time_skipping_env.client.execute_workflow(
            DunningWorkflow.run, DunningInput(org_id=str(uuid.uuid4()), invoice_id=str(uuid.uuid4()),
                                              failed_at=now.isoformat(), collection=collection, due_at=due),
            id=f"billing-dunning-{uuid.uuid4()}", task_queue=queue)
    assert result == "restored" and calls == expected


async def test_a_failed_payment_leads_through_dunning_to_blocked_submissions_and_back(
        time_skipping_env: WorkflowEnvironment, http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection, gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings, card="pm_card_chargeCustomerFail")
    await usage(owner_conn, o.org.id, period)
    out = await close(db, gateway, o.org.id, period)
    assert out.payment == "failed"
    key = {"Authorization": f"Bearer {await make_api_key(db, o.org, role='owner')}"}
    jobs_url = f"/api/v1/orgs/{o.org.slug}/jobs"
    scope = TenantScope.for_system(o.org.id, "test")

    async def state() -> str:
        async with tenant_session(db, scope) as s:
            return (await get_account(s, o.org.id)).dunning_state

    assert await state() == "past_due"
    assert (await http.post(jobs_url, json=JOB, headers=key)).status_code == 201  # still within the grace
    page = await http.get(f"/orgs/{o.org.slug}/billing", headers={**key, "accept": "text/html"})
    assert "Payment failed." in page.text and "or new jobs will be paused" in page.text

    env = time_skipping_env
    queue = f"dunning-{uuid.uuid4().hex[:6]}"
    acts = BillingActivities(db, bsettings, gateway=gateway)
    async with Worker(env.client, task_queue=queue, workflows=[DunningWorkflow], activities=acts.all()):
        # The workflow's clock is the test server's: the failure happened "now" on it.
        failed_at = await env.get_current_time()
        async with tenant_session(db, scope) as s:
            account = await get_account(s, o.org.id)
            account.past_due_since, account.grace_until = failed_at, failed_at + timedelta(days=7)
        handle = await env.client.start_workflow(
            DunningWorkflow.run, DunningInput(org_id=str(o.org.id), invoice_id=out.invoice_id,
                                              failed_at=failed_at.isoformat()),
            id=f"billing-dunning-{out.invoice_id}", task_queue=queue)
        await env.sleep(timedelta(days=6))  # three card retries, all declined
        assert await state() == "past_due"
        await env.sleep(timedelta(days=2))  # the grace is over
        assert await state() == "blocked"

        refused = await http.post(jobs_url, json=JOB, headers=key)
        assert refused.status_code == 402
        assert "unpaid" in refused.json()["detail"] and f"/orgs/{o.org.slug}/billing" in refused.json()["detail"]

        # The customer pays (in Stripe's hosted page, say): the webhook restores submissions at once.
        secret = webhook_secret(bsettings) or ""
        body, headers = signed(invoice_event("evt_dun_paid", "invoice.paid", out.stripe_invoice_id or "",
                                             status="paid", created=int(time.time())), secret)
        assert (await http.post("/webhooks/stripe", content=body, headers=headers)).status_code == 200
        assert await state() == "ok"
        assert (await http.post(jobs_url, json=JOB, headers=key)).status_code == 201
        await handle.signal("settled")
        assert await handle.result() == "restored"
