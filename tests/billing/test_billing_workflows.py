"""The billing workflows on a real Temporal server with the real activities and the Stripe stand-in:
the manual close, its idempotent re-run, the monthly fan-out, and the Schedule."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from billing.ledger.periods import Period, current_period
from billing.stripe_gateway import StripeGateway
from tenants.settings import Settings
from tests.billing.helpers import add_usage
from tests.billing.world import payg_org, stripe_invoices_of, usage
from tests.temporal_helpers import wait_for_poller
from workflows.billing.activities import BillingActivities
from workflows.billing.client import close_now, ensure_schedule
from workflows.billing.types import CloseResult, MonthlyCloseInput, close_workflow_id
from workflows.billing.workflow import BILLING_WORKFLOWS

pytestmark = pytest.mark.usefixtures("db")


@pytest.fixture
async def worker(temporal_client: Client, db: async_sessionmaker[AsyncSession], bsettings: Settings,
                 gateway: StripeGateway) -> AsyncIterator[str]:
    queue = bsettings.temporal_task_queue
    acts = BillingActivities(db, bsettings, gateway=gateway)
    async with Worker(temporal_client, task_queue=queue, workflows=list(BILLING_WORKFLOWS), activities=acts.all()):
        await wait_for_poller(temporal_client, queue)
        yield queue


async def test_closing_a_period_now_bills_it_once_however_often_it_is_asked(
        temporal_client: Client, worker: str, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    o = await payg_org(db, gateway, bsettings)
    await usage(owner_conn, o.org.id, period, gpus=1)
    first = await close_now(temporal_client, worker, org_id=str(o.org.id), period=period)
    # 80 vCPU-hours ($3.20) and 160 GiB-hours ($0.80) above the allowance, 10 A100-hours ($25.00)
    assert (first.status, first.payment, first.total_cents) == ("paid", "paid", 2900)
    again = await close_now(temporal_client, worker, org_id=str(o.org.id), period=period)
    assert (again.invoice_id, again.stripe_invoice_id, again.total_cents) == (
        first.invoice_id, first.stripe_invoice_id, 2900)
    found = await stripe_invoices_of(gateway, await _customer(gateway, first), uuid.UUID(first.invoice_id or ""))
    assert len(found) == 1 and found[0]["amount_paid"] == 2900


async def _customer(gateway: StripeGateway, result: CloseResult) -> str:
    inv = (await gateway.v1.invoices.retrieve_async(result.stripe_invoice_id or "")).to_dict()
    return str(inv["customer"])


async def test_the_monthly_close_starts_one_close_per_billable_org(
        temporal_client: Client, worker: str, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings, period: Period) -> None:
    orgs = [await payg_org(db, gateway, bsettings) for _ in range(2)]
    for o in orgs:
        await usage(owner_conn, o.org.id, period)
    started = await temporal_client.execute_workflow(
        "billing.monthly-close", MonthlyCloseInput(period=period, grace_s=0), id=f"monthly-{uuid.uuid4()}",
        task_queue=worker, result_type=int)
    assert started == 2
    for o in orgs:
        result = await temporal_client.get_workflow_handle(close_workflow_id(str(o.org.id), period),
                                                           result_type=CloseResult).result()
        assert (result.status, result.total_cents) == ("paid", 400)


async def test_the_schedule_is_created_once(temporal_client: Client, bsettings: Settings) -> None:
    queue = bsettings.temporal_task_queue
    await ensure_schedule(temporal_client, queue)
    await ensure_schedule(temporal_client, queue)  # a second worker starting: no error, no second schedule
    handle = temporal_client.get_schedule_handle(f"billing.monthly-close-{queue}")
    described = await handle.describe()
    assert described.schedule.spec.calendars[0].day_of_month[0].start == 1
    await handle.delete()


async def test_the_current_month_can_be_closed_early_without_waiting_for_its_end(
        temporal_client: Client, worker: str, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        gateway: StripeGateway, bsettings: Settings) -> None:
    o = await payg_org(db, gateway, bsettings)
    this_month = current_period(datetime.now(UTC))
    await add_usage(owner_conn, o.org.id, start=this_month.start, hours=5, vcpu_millis=12_000)
    result = await close_now(temporal_client, worker, org_id=str(o.org.id), period=this_month, timeout=60)
    assert (result.status, result.total_cents) == ("paid", 80)  # 20 vCPU-hours above the allowance at $0.04
