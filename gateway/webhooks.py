"""``POST /webhooks/stripe``: Stripe's events, verified, applied once, in any order.

Public to the gateway's guards (Stripe has no session or API key): the handler checks Stripe's
signature over the raw body, with Stripe's 300 s tolerance, before reading anything. The event is then
applied by ``billing.webhooks.apply_event`` (deduplicated by id in the same transaction as its
effect); what needs Temporal or Stripe afterwards (start dunning, wake it, finish a card setup) runs
after the commit and is idempotent, so a failure there is caught up by the workflows themselves.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Request, Response, post

from billing import plans
from billing.stripe_gateway import StripeGateway, webhook_secret
from billing.webhooks import Effect, apply_event
from gateway.api.billing import stripe_for
from gateway.deps import AppSettings, Runtime
from gateway.errors import problem
from gateway.runtime import GatewayRuntime
from tenants.errors import DomainError, Unauthenticated
from tenants.scope import TenantScope
from tenants.settings import Settings
from workflows.billing import client as billing_wf
from workflows.billing.types import DunningInput

__all__ = ["STRIPE_WEBHOOK_ROUTES", "run_effects", "stripe_webhook"]

log = logging.getLogger(__name__)


async def run_effects(runtime: GatewayRuntime, settings: Settings, effects: list[Effect],
                      gateway: StripeGateway | None = None) -> None:
    for effect in effects:
        try:
            if effect.kind == "finish_checkout":
                scope = TenantScope.for_system(uuid.UUID(effect.org_id), "billing.webhook")
                await plans.finish_checkout(runtime.sessions, scope, gateway or stripe_for(settings),
                                            session_id=effect.ref, upgrade_plan=False)
                continue
            client = await runtime.temporal.get()
            if effect.kind == "start_dunning" and effect.invoice_id:
                await billing_wf.start_dunning(client, settings.temporal_task_queue, DunningInput(
                    org_id=effect.org_id, invoice_id=effect.invoice_id, failed_at=effect.at,
                    collection=effect.collection))
            elif effect.kind == "payment_settled" and effect.invoice_id:
                await billing_wf.tell_settled(client, effect.invoice_id)
        except (DomainError, OSError, RuntimeError):
            # The ledger is already right; the close workflow and dunning's own checks catch up.
            log.warning("billing effect not run now", extra={"effect": effect.kind, "org_id": effect.org_id},
                        exc_info=True)


@post("/webhooks/stripe", status_code=200, include_in_schema=False,
      opt={"public": "Stripe calls it; the signature over the raw body is verified before anything else"})
async def stripe_webhook(request: Request[Any, Any, Any], runtime: Runtime, settings: AppSettings) -> Response[Any]:
    secret = webhook_secret(settings)
    if secret is None:
        log.error("STRIPE_WEBHOOK_SECRET is not set: refusing Stripe events")
        return problem(503, "Webhooks not configured", "This server has no Stripe webhook secret.",
                       code="webhooks_unconfigured")
    payload = await request.body()
    try:
        event = StripeGateway.verify_event(payload, request.headers.get("stripe-signature"), secret)
    except Unauthenticated as exc:
        log.warning("stripe webhook with a bad signature refused")
        return problem(400, "Bad signature", exc.message, code="bad_signature")
    applied = await apply_event(runtime.sessions, event, public_url=settings.public_url)
    await run_effects(runtime, settings, applied.effects)
    return Response({"received": True, "duplicate": applied.duplicate, "outcome": applied.outcome})


STRIPE_WEBHOOK_ROUTES: list[Any] = [stripe_webhook]
