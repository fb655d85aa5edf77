"""Billing pages: ``/orgs/{org}/billing`` (plan, card, dunning banner, this month's estimate, invoices by
period), an invoice with its lines and adjustments, a printable invoice; and ``/operator/billing``
(recent invoices of every org, and "close a period now").

Changing the plan or the card needs BILLING_MANAGE (owners, admins, the billing role); reading needs
BILLING_READ. Forms re-render with the message by the field on a problem (422), never a 500.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from sqlalchemy import select

from billing import plans
from billing.dunning import format_money
from billing.ledger.models import Invoice, InvoiceLine
from billing.ledger.periods import current_period, parse_period
from billing.ledger.views import Overview, invoice_detail, overview
from billing.rating import LineDraft
from billing.usage.rates import micros_to_dollars
from gateway.api.billing import stripe_for
from gateway.auth import client_ip, require, require_operator
from gateway.deps import AppSettings, CurrentIdentity, Runtime, Tenant
from gateway.web.context import page_context
from tenants import audit
from tenants.db import tenant_session, unscoped_session, utcnow
from tenants.errors import DomainError, InvalidInput
from tenants.models import Org
from tenants.permissions import Permission
from tenants.scope import TenantScope
from workflows.billing.client import close_now

__all__ = ["billing_page_routes"]

_READ: dict[str, Any] = {"include_in_schema": False, "guards": [require(Permission.BILLING_READ)]}
_MANAGE: dict[str, Any] = {"include_in_schema": False, "guards": [require(Permission.BILLING_MANAGE)]}
_BASE = "/orgs/{org:str}/billing"


class CardForm(msgspec.Struct):
    test_card: str = "pm_card_visa"
    upgrade: str = ""


class CloseForm(msgspec.Struct):
    org: str = ""
    period: str = ""


def _line(line: InvoiceLine | LineDraft) -> dict[str, Any]:
    return {"kind": line.kind, "description": line.description, "period": line.source_period,
            "quantity": f"{line.quantity.normalize():f}" if line.quantity else "0", "unit": line.unit,
            "unit_price": f"${micros_to_dollars(line.unit_price_micros).normalize():f}",
            "amount": format_money(int(line.amount_cents))}


def _invoice_row(inv: Invoice) -> dict[str, Any]:
    return {"id": inv.id, "number": inv.number, "period": inv.period, "status": inv.status,
            "total": format_money(inv.total_cents, inv.currency), "issued_at": inv.issued_at, "due_at": inv.due_at,
            "paid_at": inv.paid_at, "payment_state": inv.payment_state, "hosted_url": inv.hosted_invoice_url,
            "plan": inv.plan, "collection": inv.collection}


def _present(ov: Overview) -> dict[str, Any]:
    a = ov.account
    return {"plan": ov.plan, "plan_title": ov.plan_title, "pending_plan": ov.pending_plan,
            "pending_plan_at": ov.pending_plan_at, "collection": ov.collection, "banner": ov.banner,
            "card": {"brand": a.card_brand or "card", "last4": a.card_last4 or "", "exp": a.card_exp or ""}
            if a is not None and a.payment_method_id else None,
            "estimate": {"period": ov.estimate.period, "total": format_money(ov.estimate.total_cents),
                         "lines": [_line(x) for x in ov.estimate.lines], "as_of": ov.estimate.as_of},
            "invoices": [_invoice_row(i) for i in ov.invoices]}


async def _page(request: Request[Any, Any, Any], tenant: TenantScope, runtime: Any, settings: Any, *,
                status: int = 200, errors: dict[str, str] | None = None, period: str | None = None) -> Template:
    async with tenant_session(runtime.sessions, tenant) as s:
        ov = await overview(tenant, s, now=utcnow(), period=period or None)
    context = await page_context(request, tenant=tenant, billing=_present(ov), period=period or "",
                                 can_manage=tenant.can(Permission.BILLING_MANAGE),
                                 configured=bool(settings.stripe_api_key), compat=settings.stripe_api_base is not None,
                                 test_cards=plans.TEST_CARDS, errors=errors or {})
    return Template(template_name="billing/billing.html", context=context, status_code=status)


def _back(tenant: TenantScope, flash: str) -> Redirect:
    return Redirect(path=f"/orgs/{tenant.org_slug}/billing?{urlencode({'flash': flash})}", status_code=303)


@get(_BASE, **_READ)
async def billing_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime,
                       settings: AppSettings, period: FromQuery[str | None] = None) -> Template:
    if period:
        try:
            parse_period(period)
        except InvalidInput as exc:
            return await _page(request, tenant, runtime, settings, status=422, errors=exc.field_errors)
    return await _page(request, tenant, runtime, settings, period=period)


@post(_BASE + "/card", **_MANAGE)
async def billing_card(org: FromPath[str], data: URLEncodedBody[CardForm], request: Request[Any, Any, Any],
                       tenant: Tenant, runtime: Runtime, settings: AppSettings) -> Response[Any]:
    upgrade = data.upgrade == "1"
    try:
        started = await plans.start_payment_setup(runtime.sessions, tenant, stripe_for(settings), settings,
                                                  upgrade_plan=upgrade, test_card=data.test_card,
                                                  ip=client_ip(request))
    except DomainError as exc:
        fields = exc.field_errors if isinstance(exc, InvalidInput) and exc.field_errors else {"card": exc.message}
        status = 503 if exc.code == "upstream_unavailable" else 422
        return await _page(request, tenant, runtime, settings, status=status, errors=fields)
    if started.redirect_url:
        return Redirect(path=started.redirect_url, status_code=303)  # Stripe Checkout
    card = started.card
    saved = f"Card ending {card.last4} saved." if card else "Card saved."
    return _back(tenant, ("You are on Pay-as-you-go now. " if upgrade else "") + saved)


@get(_BASE + "/setup-complete", **_MANAGE)
async def billing_setup_complete(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                                 runtime: Runtime, settings: AppSettings, session_id: FromQuery[str] = "",
                                 upgrade: FromQuery[str] = "0") -> Response[Any]:
    try:
        card = await plans.finish_checkout(runtime.sessions, tenant, stripe_for(settings), session_id=session_id,
                                           upgrade_plan=upgrade == "1", ip=client_ip(request))
    except DomainError as exc:
        return await _page(request, tenant, runtime, settings, status=422, errors={"card": exc.message})
    return _back(tenant, ("You are on Pay-as-you-go now. " if upgrade == "1" else "") +
                 f"Card ending {card.last4} saved.")


@post(_BASE + "/upgrade", **_MANAGE)
async def billing_upgrade(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime,
                          settings: AppSettings) -> Response[Any]:
    try:
        async with tenant_session(runtime.sessions, tenant) as s:
            changed = await plans.upgrade(tenant, s, ip=client_ip(request))
    except InvalidInput as exc:
        return await _page(request, tenant, runtime, settings, status=422, errors=exc.field_errors)
    return _back(tenant, "You are on Pay-as-you-go now." if changed else "Your plan stays as it is.")


@post(_BASE + "/downgrade", **_MANAGE)
async def billing_downgrade(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime,
                            settings: AppSettings) -> Response[Any]:
    try:
        async with tenant_session(runtime.sessions, tenant) as s:
            at = await plans.schedule_downgrade(tenant, s, ip=client_ip(request))
    except DomainError as exc:
        return await _page(request, tenant, runtime, settings, status=409, errors={"plan": exc.message})
    return _back(tenant, f"You move to Free on {at:%Y-%m-%d}; usage until then is billed as usual.")


@post(_BASE + "/downgrade/cancel", **_MANAGE)
async def billing_downgrade_cancel(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                                   runtime: Runtime) -> Response[Any]:
    async with tenant_session(runtime.sessions, tenant) as s:
        await plans.cancel_downgrade(tenant, s, ip=client_ip(request))
    return _back(tenant, "The move to Free is cancelled.")


async def _invoice_context(request: Request[Any, Any, Any], tenant: TenantScope, runtime: Any,
                           invoice_id: uuid.UUID) -> dict[str, Any]:
    async with tenant_session(runtime.sessions, tenant) as s:
        inv, lines = await invoice_detail(tenant, s, invoice_id)
        org_row = await s.get(Org, tenant.org_id)
    return await page_context(request, tenant=tenant, invoice=_invoice_row(inv),
                              subtotal=format_money(inv.subtotal_cents, inv.currency),
                              lines=[_line(x) for x in lines if x.kind == "usage"],
                              adjustments=[_line(x) for x in lines if x.kind == "adjustment"],
                              org_name=org_row.name if org_row else tenant.org_slug)


@get(_BASE + "/invoices/{invoice_id:uuid}", **_READ)
async def invoice_page(org: FromPath[str], invoice_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                       tenant: Tenant, runtime: Runtime) -> Template:
    return Template(template_name="billing/invoice.html",
                    context=await _invoice_context(request, tenant, runtime, invoice_id))


@get(_BASE + "/invoices/{invoice_id:uuid}/print", **_READ)
async def invoice_print(org: FromPath[str], invoice_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                        tenant: Tenant, runtime: Runtime) -> Template:
    return Template(template_name="billing/invoice_print.html",
                    context=await _invoice_context(request, tenant, runtime, invoice_id))


# --- operator console


async def _operator_page(request: Request[Any, Any, Any], runtime: Any, *, status: int = 200,
                         values: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Template:
    async with unscoped_session(runtime.sessions, reason="the operator console lists every org's invoices") as s:
        rows = (await s.execute(select(Invoice, Org.slug).join(Org, Org.id == Invoice.org_id)
                                .order_by(Invoice.created_at.desc()).limit(50))).all()
    invoices = [{**_invoice_row(inv), "org": slug} for inv, slug in rows]
    context = await page_context(request, invoices=invoices, errors=errors or {},
                                 values=values or {"org": "", "period": str(current_period(utcnow()))})
    return Template(template_name="billing/operator.html", context=context, status_code=status)


@get("/operator/billing", guards=[require_operator], include_in_schema=False)
async def operator_billing(request: Request[Any, Any, Any], runtime: Runtime) -> Template:
    return await _operator_page(request, runtime)


@post("/operator/billing/close", guards=[require_operator], include_in_schema=False)
async def operator_close(data: URLEncodedBody[CloseForm], request: Request[Any, Any, Any], runtime: Runtime,
                         settings: AppSettings, identity: CurrentIdentity) -> Response[Any]:
    values = {"org": data.org.strip(), "period": data.period.strip()}
    try:
        period = parse_period(values["period"])
        async with unscoped_session(runtime.sessions, reason="an operator closes a period of any org") as s:
            org_row = (await s.execute(select(Org).where(Org.slug == values["org"]))).scalar_one_or_none()
            if org_row is None:
                raise InvalidInput("No such organization.", field_errors={"org": "no organization with that slug"})
            await audit.record(s, action="billing.close_requested", actor=identity.principal, org_id=org_row.id,
                               target_kind="period", target_id=str(period), target_display=org_row.slug,
                               ip=client_ip(request))
        client = await runtime.temporal.get()
        result = await close_now(client, settings.temporal_task_queue, org_id=str(org_row.id), period=period)
    except InvalidInput as exc:
        return await _operator_page(request, runtime, status=422, values=values, errors=exc.field_errors)
    except (DomainError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, DomainError) else "The close is still running; refresh in a moment."
        return await _operator_page(request, runtime, status=503, values=values, errors={"org": message})
    if result.invoice_id is None:
        flash = f"{values['org']} {period}: nothing to bill."
    else:
        flash = f"{values['org']} {period}: invoice {result.number}, {format_money(result.total_cents)}, {result.status}."
    return Redirect(path="/operator/billing?" + urlencode({"flash": flash}), status_code=303)


def billing_page_routes() -> list[Any]:
    return [billing_page, billing_card, billing_setup_complete, billing_upgrade, billing_downgrade,
            billing_downgrade_cancel, invoice_page, invoice_print, operator_billing, operator_close]
