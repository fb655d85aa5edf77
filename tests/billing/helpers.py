"""Test data for billing: usage records written as metering stores them, orgs on a plan, signed events."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import stripe
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session
from tenants.models import Org

GIB = 1 << 30
HOUR = 3600


async def add_usage(conn: asyncpg.Connection, org_id: uuid.UUID, *, start: datetime, hours: float,
                    vcpu_millis: int = 0, memory_bytes: int = 0, gpus: int = 0, gpu_type: str = "A100",
                    ingested_at: datetime | None = None, late: bool = False) -> None:
    """One record per resource held from ``start`` for ``hours`` (as the agent's records sum up)."""
    end = start + timedelta(seconds=int(hours * HOUR))
    seconds = int((end - start).total_seconds())
    cluster, job = uuid.uuid4(), uuid.uuid4()
    rows = [(r, g, level) for r, g, level in (("vcpu", "", vcpu_millis), ("memory", "", memory_bytes),
                                               ("gpu", gpu_type, gpus)) if level]
    for resource, gpu, level in rows:
        await conn.execute(
            "INSERT INTO usage_records (id, window_start, window_end, org_id, cluster_id, job_id, resource, gpu_type,"
            " allocated, quantity, ingested_at, late) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            uuid.uuid4(), start, end, org_id, cluster, job, resource, gpu, level, level * seconds,
            ingested_at or start, late)


async def set_plan(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, plan: str) -> None:
    async with unscoped_session(db, reason="test factory") as s:
        org = await s.get(Org, org_id)
        assert org is not None
        org.plan = plan


def signed(event: dict[str, Any], secret: str, *, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A body and headers as Stripe sends them (localstripe never sends invoice.paid / payment_failed)."""
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=at or int(time.time()))
    return body.encode(), {"stripe-signature": header, "content-type": "application/json"}


def invoice_event(event_id: str, kind: str, stripe_invoice: str, *, status: str, created: int,
                  metadata: dict[str, str] | None = None, error: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": stripe_invoice, "object": "invoice", "status": status, "metadata": metadata or {}}
    if error:
        obj["last_payment_error"] = {"code": "card_declined", "message": error}
    return {"id": event_id, "object": "event", "type": kind, "created": created, "data": {"object": obj}}
