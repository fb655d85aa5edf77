"""The Stripe adapter: every call to Stripe, in one place, and the only module that imports ``stripe``.

    StripeError
    ├── CardError                       -> InvalidInput (code "card_declined"): the person fixes the card
    ├── InvalidRequestError (404)       -> NotFound
    ├── InvalidRequestError (other 4xx) -> InvalidInput
    ├── IdempotencyError                -> Conflict
    ├── AuthenticationError, PermissionError -> UpstreamUnavailable (our key is wrong: an operator's problem)
    └── APIConnectionError, RateLimitError, APIError (5xx, 409) -> retried with backoff, then UpstreamUnavailable

Calls go through ``stripe.StripeClient(key, base_addresses={"api": ...})`` with the SDK's own retries off:
we retry here (``attempts`` with doubling delays), and every create carries an idempotency key derived
from our own ids. Idempotency keys expire after 24 h and the stand-in ignores them, so callers also
record their intent first and look objects up by our metadata before creating (see ``billing.ledger.push``).

**Compatibility mode** (``stripe_api_base`` set: the local ``localstripe`` stand-in) covers what it lacks:
no Checkout (a SetupIntent confirmed with a test card instead), no search (customers are listed and
filtered), no ``finalize`` (paying finalizes), invoice metadata dropped on create (set by an update;
the description carries our invoice number too), invoices only for customers with a subscription
(a $0 plan subscription is made once), invoice items only as pending items with an integer ``amount``,
and a declined payment answered 200 with the invoice left open (read from its PaymentIntent).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import stripe

from tenants.errors import Conflict, InvalidInput, NotFound, Unauthenticated, UpstreamUnavailable
from tenants.settings import Settings

__all__ = [
    "COMPAT_PLAN_ID",
    "CardInfo",
    "PayOutcome",
    "SetupSession",
    "StripeConfig",
    "StripeGateway",
    "StripeInvoice",
    "StripeItem",
    "webhook_secret",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPAT_PLAN_ID = "metacloud-usage-zero"
_FAR_FUTURE = 4102444800  # 2100-01-01: the stand-in's $0 subscription never bills on its own
_PAGE = 100


def webhook_secret(settings: Settings) -> str | None:
    """``STRIPE_WEBHOOK_SECRET``; outside production a fixed secret derived from the server key, so the dev
    stack's stand-in and gateway agree without setup. ``None`` in production without one: refuse all."""
    if settings.stripe_webhook_secret:
        return settings.stripe_webhook_secret
    if settings.is_production:
        return None
    return "whsec_dev_" + hashlib.sha256(("stripe-webhook:" + settings.secret_key).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StripeConfig:
    api_key: str = field(repr=False)
    api_base: str | None = None  # set: the local stand-in, compatibility mode on
    timeout: float = 20.0
    attempts: int = 3
    backoff: float = 0.5

    @property
    def compat(self) -> bool:
        return self.api_base is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeConfig:
        if not settings.stripe_api_key:
            raise UpstreamUnavailable("Billing is not configured on this server (STRIPE_API_KEY is unset).")
        return cls(api_key=settings.stripe_api_key, api_base=settings.stripe_api_base)


@dataclass(frozen=True, slots=True)
class CardInfo:
    id: str
    brand: str
    last4: str
    exp: str  # "12/2030"


@dataclass(frozen=True, slots=True)
class SetupSession:
    id: str
    url: str | None  # Checkout's page; None on the stand-in (confirmed server-side)
    payment_method: str | None = None


@dataclass(frozen=True, slots=True)
class StripeItem:
    id: str
    amount: int
    metadata: dict[str, str]
    invoice: str | None


@dataclass(frozen=True, slots=True)
class StripeInvoice:
    id: str
    status: str
    total: int
    amount_paid: int
    hosted_invoice_url: str | None
    metadata: dict[str, str]
    description: str | None


@dataclass(frozen=True, slots=True)
class PayOutcome:
    status: str  # Stripe's invoice status after the attempt
    paid: bool
    failure_code: str | None = None
    failure_message: str | None = None


class _HttpClient(stripe.HTTPClient):  # type: ignore[misc]
    """Stripe's transport over one ``httpx.AsyncClient`` (pooled connections, our timeout). The SDK's own
    httpx client passes bodies as ``data=``, which httpx deprecates."""

    name = "metacloud-httpx"

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._client = httpx.AsyncClient(timeout=timeout)

    async def request_async(self, method: str, url: str, headers: Any,
                            post_data: Any = None) -> tuple[bytes, int, Any]:
        try:
            resp = await self._client.request(method, url, headers=dict(headers or {}), content=post_data or None)
        except httpx.HTTPError as exc:
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Network error talking to Stripe ({type(exc).__name__}).", should_retry=True) from exc
        return resp.content, resp.status_code, resp.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self._client.aclose()


def _invoice(d: dict[str, Any]) -> StripeInvoice:
    return StripeInvoice(id=d["id"], status=d.get("status") or "", total=int(d.get("total") or 0),
                         amount_paid=int(d.get("amount_paid") or 0), hosted_invoice_url=d.get("hosted_invoice_url"),
                         metadata=dict(d.get("metadata") or {}), description=d.get("description"))


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)  # type: ignore[no-any-return]


class StripeGateway:
    def __init__(self, config: StripeConfig, *, http_client: Any | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self.compat = config.compat
        self._sleep = sleep
        self._client = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base} if config.api_base else None,
            http_client=http_client or _HttpClient(config.timeout),
            max_network_retries=0,  # retried in _call, with our own keys
        )
        self.v1 = self._client.v1

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        return cls(StripeConfig.from_settings(settings))

    # --- the one place errors are translated and calls retried

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.config.attempts + 1):
            try:
                return await call()
            except stripe.CardError as exc:
                raise InvalidInput(exc.user_message or "The card was declined.", code="card_declined",
                                   field_errors={"card": exc.user_message or "declined"},
                                   decline_code=getattr(exc, "code", None)) from exc
            except stripe.IdempotencyError as exc:
                raise Conflict(f"Stripe refused a repeated {what}: {exc.user_message}") from exc
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    raise NotFound(f"Stripe has no such object ({what}).") from exc
                raise InvalidInput(f"Stripe rejected {what}: {exc.user_message}") from exc
            except (stripe.AuthenticationError, stripe.PermissionError) as exc:
                log.error("stripe rejected our credentials", extra={"call": what})
                raise UpstreamUnavailable("Payments are unavailable right now; the operators were told.") from exc
            except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
                status = exc.http_status
                retryable = status is None or status >= 500 or status in (409, 429)
                if not retryable:
                    if status == 404:
                        raise NotFound(f"Stripe has no such endpoint or object ({what}).") from exc
                    raise InvalidInput(f"Stripe rejected {what}.") from exc
                if attempt == self.config.attempts:
                    log.warning("stripe unavailable", extra={"call": what, "status": status, "attempts": attempt})
                    raise UpstreamUnavailable("Stripe is not answering; we will retry shortly.") from exc
                delay = self.config.backoff * 2 ** (attempt - 1)
                await self._sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")

    # --- customers

    async def find_customer(self, org_id: str) -> str | None:
        """The customer made for ``org_id`` (metadata), if any: the lookup before every create."""
        if not self.compat:
            found = await self._call("customer search", lambda: self.v1.customers.search_async(
                params={"query": f"metadata['org_id']:'{org_id}'", "limit": 1}))
            data = _plain(found).get("data") or []
            return str(data[0]["id"]) if data else None
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": _PAGE}
            if starting_after:
                params["starting_after"] = starting_after
            page = _plain(await self._call("customer list", lambda p=params: self.v1.customers.list_async(params=p)))  # type: ignore[misc]
            for c in page.get("data") or []:
                if (c.get("metadata") or {}).get("org_id") == org_id:
                    return str(c["id"])
            if not page.get("has_more") or not page.get("data"):
                return None
            starting_after = page["data"][-1]["id"]

    async def create_customer(self, *, org_id: str, org_slug: str, name: str, email: str | None,
                              idempotency_key: str) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"org_id": org_id, "org_slug": org_slug}}
        if email:
            params["email"] = email
        created = await self._call("customer create", lambda: self.v1.customers.create_async(
            params=params, options={"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return str(created.id)

    # --- payment methods

    async def start_setup(self, *, customer: str, org_id: str, success_url: str, cancel_url: str) -> SetupSession:
        """Production: a Checkout session in setup mode (the person enters the card on Stripe's page)."""
        params: Any = {"mode": "setup", "customer": customer, "payment_method_types": ["card"],
                       "success_url": success_url, "cancel_url": cancel_url, "metadata": {"org_id": org_id},
                       "setup_intent_data": {"metadata": {"org_id": org_id}}}
        session = await self._call("checkout session", lambda: self.v1.checkout.sessions.create_async(params=params))
        return SetupSession(id=str(session.id), url=session.url)

    async def finish_checkout(self, session_id: str) -> SetupSession:
        """The card a completed Checkout session saved (``None`` while it is not complete)."""
        s = _plain(await self._call("checkout session", lambda: self.v1.checkout.sessions.retrieve_async(
            session_id, params={"expand": ["setup_intent"]})))
        intent = s.get("setup_intent") or {}
        pm = intent.get("payment_method") if isinstance(intent, dict) else None
        return SetupSession(id=session_id, url=None, payment_method=pm if s.get("status") == "complete" else None)

    async def confirm_test_card(self, *, customer: str, org_id: str, test_card: str) -> SetupSession:
        """Stand-in only: a SetupIntent confirmed server-side with a test card (``pm_card_visa``)."""
        params: Any = {"customer": customer, "usage": "off_session", "payment_method_types": ["card"],
                       "metadata": {"org_id": org_id}}
        intent = await self._call("setup intent", lambda: self.v1.setup_intents.create_async(params=params))
        done = await self._call("setup intent confirm", lambda: self.v1.setup_intents.confirm_async(
            intent.id, params={"payment_method": test_card}))
        if done.status != "succeeded" or not done.payment_method:
            raise InvalidInput("The card could not be set up.", field_errors={"card": "not accepted"})
        pm = str(done.payment_method)
        # Real Stripe attaches the method to the SetupIntent's customer; the stand-in does not.
        await self._call("payment method attach", lambda: self.v1.payment_methods.attach_async(
            pm, params={"customer": customer}))
        return SetupSession(id=str(intent.id), url=None, payment_method=pm)

    async def set_default_payment_method(self, customer: str, payment_method: str) -> CardInfo:
        await self._call("customer update", lambda: self.v1.customers.update_async(customer, params={
            "invoice_settings": {"default_payment_method": payment_method}}))
        return await self.card(payment_method)

    async def card(self, payment_method: str) -> CardInfo:
        pm = _plain(await self._call("payment method", lambda: self.v1.payment_methods.retrieve_async(payment_method)))
        card = pm.get("card") or {}
        return CardInfo(id=payment_method, brand=str(card.get("brand") or pm.get("type") or "card"),
                        last4=str(card.get("last4") or ""),
                        exp=f"{card.get('exp_month', 0):02d}/{card.get('exp_year', '')}")

    # --- invoices

    async def ensure_compat_subscription(self, customer: str, org_id: str) -> str | None:
        """Stand-in only: it invoices only customers with a subscription; a $0 plan one, made once."""
        if not self.compat:
            return None
        subs = _plain(await self._call("subscription list", lambda: self.v1.subscriptions.list_async(
            params={"customer": customer, "limit": _PAGE})))
        if subs.get("data"):
            return str(subs["data"][0]["id"])
        try:
            await self._call("plan", lambda: self.v1.plans.retrieve_async(COMPAT_PLAN_ID))
        except NotFound:
            product = await self._call("product", lambda: self.v1.products.create_async(
                params={"name": "Metacloud usage", "type": "service"}))  # type: ignore[typeddict-unknown-key]
            await self._call("plan create", lambda: self.v1.plans.create_async(params={
                "id": COMPAT_PLAN_ID, "amount": 0, "currency": "usd", "interval": "month", "product": str(product.id)}))
        sub = await self._call("subscription", lambda: self.v1.subscriptions.create_async(params={
            "customer": customer, "items": [{"plan": COMPAT_PLAN_ID}], "trial_end": _FAR_FUTURE,
            "metadata": {"org_id": org_id}}))  # type: ignore[typeddict-item]
        return str(sub.id)

    async def list_items(self, *, customer: str, invoice: str | None) -> list[StripeItem]:
        """Invoice items of a Stripe invoice (production) or the customer's pending ones (stand-in)."""
        params: dict[str, Any] = {"limit": _PAGE, "customer": customer}
        if invoice and not self.compat:
            params = {"limit": _PAGE, "invoice": invoice}
        out: list[StripeItem] = []
        while True:
            page = _plain(await self._call("invoice item list", lambda p=params: self.v1.invoice_items.list_async(params=p)))  # type: ignore[misc]
            out += [StripeItem(id=d["id"], amount=int(d.get("amount") or 0), metadata=dict(d.get("metadata") or {}),
                               invoice=d.get("invoice")) for d in page.get("data") or []]
            if not page.get("has_more") or not page.get("data"):
                return out
            params = {**params, "starting_after": page["data"][-1]["id"]}

    async def create_item(self, *, customer: str, invoice: str | None, amount: int, currency: str,
                          description: str, metadata: dict[str, str], idempotency_key: str) -> str:
        """Production: on the draft invoice; stand-in: pending (the next invoice created takes it)."""
        params: dict[str, Any] = {"customer": customer, "amount": amount, "currency": currency,
                                  "description": description, "metadata": metadata}
        if invoice and not self.compat:
            params["invoice"] = invoice
        item = await self._call("invoice item", lambda: self.v1.invoice_items.create_async(
            params=params, options={"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return str(item.id)

    async def find_invoice(self, *, customer: str, marker: str) -> StripeInvoice | None:
        """Our invoice among the customer's: metadata ``mc_invoice_id`` or the description's marker."""
        params: dict[str, Any] = {"customer": customer, "limit": _PAGE}
        while True:
            page = _plain(await self._call("invoice list", lambda p=params: self.v1.invoices.list_async(params=p)))  # type: ignore[misc]
            for d in page.get("data") or []:
                if (d.get("metadata") or {}).get("mc_invoice_id") == marker or marker in (d.get("description") or ""):
                    return _invoice(d)
            if not page.get("has_more") or not page.get("data"):
                return None
            params = {**params, "starting_after": page["data"][-1]["id"]}

    async def create_invoice(self, *, customer: str, subscription: str | None, collection: str, days_until_due: int,
                             currency: str, description: str, metadata: dict[str, str],
                             idempotency_key: str) -> StripeInvoice:
        if self.compat:
            params: dict[str, Any] = {"customer": customer, "description": description}
            if subscription:
                params["subscription"] = subscription
            created = await self._call("invoice", lambda: self.v1.invoices.create_async(params=params))  # type: ignore[arg-type]
            # The stand-in drops metadata on create; an update keeps it.
            updated = await self._call("invoice update", lambda: self.v1.invoices.update_async(
                str(created.id), params={"metadata": metadata}))
            return _invoice(_plain(updated))
        params = {"customer": customer, "collection_method": "charge_automatically", "auto_advance": False,
                  "pending_invoice_items_behavior": "exclude", "currency": currency, "description": description,
                  "metadata": metadata}
        if collection == "invoice":
            params.update(collection_method="send_invoice", days_until_due=days_until_due)
        created = await self._call("invoice", lambda: self.v1.invoices.create_async(
            params=params, options={"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return _invoice(_plain(created))

    async def retrieve_invoice(self, invoice: str) -> StripeInvoice:
        return _invoice(_plain(await self._call("invoice", lambda: self.v1.invoices.retrieve_async(invoice))))

    async def finalize(self, invoice: str) -> StripeInvoice:
        """Production: draft -> open. The stand-in has no finalize; paying finalizes there."""
        if self.compat:
            return await self.retrieve_invoice(invoice)
        done = await self._call("invoice finalize", lambda: self.v1.invoices.finalize_invoice_async(
            invoice, params={"auto_advance": False}))
        return _invoice(_plain(done))

    async def send(self, invoice: str) -> None:
        """Invoice collection (Enterprise): Stripe emails the invoice with its hosted link."""
        if not self.compat:
            await self._call("invoice send", lambda: self.v1.invoices.send_invoice_async(invoice))

    async def pay(self, invoice: str) -> PayOutcome:
        """Charge the default card. A decline is an outcome, not an error: dunning takes it from there."""
        try:
            paid = _plain(await self._call("invoice pay", lambda: self.v1.invoices.pay_async(invoice)))
        except InvalidInput as exc:
            if exc.code == "card_declined":
                current = await self.retrieve_invoice(invoice)
                return PayOutcome(status=current.status, paid=current.status == "paid", failure_code="card_declined",
                                  failure_message=exc.message)
            raise
        if paid.get("status") == "paid":
            return PayOutcome(status="paid", paid=True)
        error: dict[str, Any] = {}
        if paid.get("payment_intent"):  # the stand-in answers 200 with the decline on the PaymentIntent
            intent = _plain(await self._call("payment intent", lambda: self.v1.payment_intents.retrieve_async(
                str(paid["payment_intent"]))))
            error = intent.get("last_payment_error") or {}
        return PayOutcome(status=str(paid.get("status") or "open"), paid=False,
                          failure_code=error.get("code") or "payment_failed",
                          failure_message=error.get("message") or "The payment did not go through.")

    # --- events

    async def list_events(self, *, created_gte: int, limit: int = _PAGE) -> list[dict[str, Any]]:
        """Every event since ``created_gte`` (for recovering missed webhooks), any order."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": limit}
        while True:
            page = _plain(await self._call("event list", lambda p=params: self.v1.events.list_async(params=p)))  # type: ignore[misc]
            out += list(page.get("data") or [])
            if not page.get("has_more") or not page.get("data"):
                return out
            params = {**params, "starting_after": page["data"][-1]["id"]}

    @staticmethod
    def verify_event(payload: bytes, signature: str | None, secret: str, *, tolerance: int = 300) -> dict[str, Any]:
        """The event, if ``signature`` is Stripe's over exactly these bytes and recent; else Unauthenticated."""
        try:
            event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)
        except stripe.SignatureVerificationError as exc:
            raise Unauthenticated("The Stripe signature does not match this payload.", code="bad_signature") from exc
        except ValueError as exc:
            raise InvalidInput("The webhook body is not a Stripe event.") from exc
        return _plain(event)

    async def register_dev_webhook(self, url: str, secret: str) -> None:
        """Stand-in only: tell it where to deliver events (it keeps this in memory, so it is cheap to repeat)."""
        if not self.compat or not self.config.api_base:
            return
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.post(f"{self.config.api_base}/_config/webhooks/metacloud",
                                  data={"url": url, "secret": secret})
        except httpx.HTTPError:
            log.warning("could not register the webhook with the Stripe stand-in", exc_info=True)
