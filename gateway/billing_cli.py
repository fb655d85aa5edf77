"""``metacloud billing ...``: operator commands that need the database and Temporal (not a login).

* ``close --org SLUG --period 2026-11``: close the month now (no grace), write, push and collect the
  invoice, print it. Usage of the month that arrives later lands on the next invoice as an adjustment.
* ``sync-events --since 2026-11-01``: apply every Stripe event since then that we have not (missed
  webhooks: an outage, a wrong secret); each is applied once, in any order.
* ``set-plan --org SLUG --plan enterprise --collection invoice``: a contract's plan and collection.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from tenants.settings import Settings

__all__ = ["add_billing_commands"]


def add_billing_commands(sub: Any) -> None:
    p = sub.add_parser("billing", help="billing operations: close a period, recover Stripe events, set a plan")
    bsub = p.add_subparsers(dest="billing_command", required=True)
    c = bsub.add_parser("close", help="close a month for one org now (skips the grace) and print its invoice")
    c.add_argument("--org", required=True, help="the org's slug")
    c.add_argument("--period", required=True, help="YYYY-MM")
    c.add_argument("--no-wait", action="store_true", help="start the close and return")
    c.set_defaults(func=_cmd_close)
    e = bsub.add_parser("sync-events", help="apply Stripe events missed since a date (idempotent)")
    e.add_argument("--since", required=True, help="YYYY-MM-DD (UTC)")
    e.set_defaults(func=_cmd_sync_events)
    s = bsub.add_parser("set-plan", help="set an org's plan now (Enterprise contracts)")
    s.add_argument("--org", required=True)
    s.add_argument("--plan", required=True, choices=["free", "payg", "enterprise"])
    s.add_argument("--collection", choices=["card", "invoice"], default=None)
    s.add_argument("--days-until-due", type=int, default=None)
    s.set_defaults(func=_cmd_set_plan)


def _fail(message: str) -> int:
    print(f"metacloud: {message}", file=sys.stderr)
    return 2


async def _org_id(sessions: Any, slug: str) -> Any:
    from sqlalchemy import select

    from tenants.db import unscoped_session
    from tenants.models import Org

    async with unscoped_session(sessions, reason="an operator names the org by slug") as s:
        return (await s.execute(select(Org.id).where(Org.slug == slug))).scalar_one_or_none()


def _run(settings: Settings, body: Any) -> int:
    from tenants.db import create_app_engine, create_sessionmaker

    if not settings.database_url:
        return _fail("set DATABASE_URL (the dev stack prints it) to reach the database")

    async def run() -> int:
        engine = create_app_engine(settings)
        try:
            rc: int = await body(create_sessionmaker(engine))
            return rc
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _cmd_close(settings: Settings, args: argparse.Namespace) -> int:
    from billing.dunning import format_money
    from billing.ledger.periods import parse_period
    from tenants.errors import InvalidInput
    from workflows.billing.client import close_now
    from workflows.client import connect

    try:
        period = parse_period(args.period)
    except InvalidInput as exc:
        return _fail(exc.message)

    async def body(sessions: Any) -> int:
        org_id = await _org_id(sessions, args.org)
        if org_id is None:
            return _fail(f"no organization {args.org!r}")
        client = await connect(settings)
        result = await close_now(client, settings.temporal_task_queue, org_id=str(org_id), period=period,
                                 timeout=None if args.no_wait else 300.0)
        if result.status == "started":
            print(f"closing {args.org} {period}: workflow billing-close-{org_id}-{period}")
        elif result.invoice_id is None:
            print(f"{args.org} {period}: nothing to bill")
        else:
            print(f"{args.org} {period}: invoice {result.number} {format_money(result.total_cents)} "
                  f"status={result.status} payment={result.payment} stripe={result.stripe_invoice_id}")
        return 0

    return _run(settings, body)


def _cmd_sync_events(settings: Settings, args: argparse.Namespace) -> int:
    from billing.stripe_gateway import StripeGateway
    from billing.webhooks import recover_events
    from gateway.runtime import GatewayRuntime, TemporalHandle
    from gateway.webhooks import run_effects
    from tenants.db import create_app_engine

    try:
        since = datetime.strptime(args.since, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return _fail("--since is a date, YYYY-MM-DD")

    async def body(sessions: Any) -> int:
        gateway = StripeGateway.from_settings(settings)
        report = await recover_events(sessions, gateway, since=since, public_url=settings.public_url)
        runtime = GatewayRuntime(settings=settings, engine=create_app_engine(settings), sessions=sessions,
                                 temporal=TemporalHandle(settings))
        await run_effects(runtime, settings, report.effects, gateway)
        await runtime.engine.dispose()
        print(f"{report.seen} events since {since:%Y-%m-%d}: {report.applied} applied, {report.duplicates} already known")
        return 0

    return _run(settings, body)


def _cmd_set_plan(settings: Settings, args: argparse.Namespace) -> int:
    from billing import plans
    from billing.ledger.accounts import get_account
    from tenants.db import tenant_session
    from tenants.scope import Principal, TenantScope

    async def body(sessions: Any) -> int:
        org_id = await _org_id(sessions, args.org)
        if org_id is None:
            return _fail(f"no organization {args.org!r}")
        scope = TenantScope(org_id=org_id, principal=Principal(kind="operator", id="cli", display="metacloud CLI"),
                            org_slug=args.org, permissions=frozenset({"billing:manage", "billing:read"}))
        async with tenant_session(sessions, scope) as s:
            if args.days_until_due is not None:
                (await get_account(s, org_id)).days_until_due = args.days_until_due
            await plans.set_plan(scope, s, args.plan, action="plan.set_by_operator", collection=args.collection)
        print(f"{args.org}: plan {args.plan}" + (f", collection {args.collection}" if args.collection else ""))
        return 0

    return _run(settings, body)
