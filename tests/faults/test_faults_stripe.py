"""Stripe timing out and answering 500 behind the adapter's real httpx transport. The fake keeps Stripe's
idempotency contract (a repeated key answers the first result), and the first request is carried out
before its answer is lost, as a real timeout may be: the retries must reuse the key, so Stripe holds
exactly one invoice item. (Plain 5xx retry counts are in tests/billing/test_billing_stripe_adapter.py.)"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from billing.stripe_gateway import StripeConfig, StripeGateway, _HttpClient
from tenants.errors import UpstreamUnavailable


class FlakyStripe:
    """Invoice items by idempotency key; ``script`` says what each request meets before the answer."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.items: dict[str, dict[str, Any]] = {}  # idempotency key -> the created item
        self.keys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["idempotency-key"]
        self.keys.append(key)
        fault = self.script.pop(0) if self.script else "ok"
        if fault == "500":
            return httpx.Response(500, json={"error": {"type": "api_error", "message": "internal"}})
        if fault == "timeout-before":
            raise httpx.ConnectTimeout("connect timed out", request=request)
        params = dict(parse_qsl(request.content.decode()))
        item = self.items.setdefault(key, {"id": f"ii_{len(self.items) + 1}", "object": "invoiceitem",
                                           "amount": int(params["amount"]), "customer": params["customer"]})
        if fault == "timeout-after":  # done on Stripe's side, the answer never arrives
            raise httpx.ReadTimeout("read timed out", request=request)
        return httpx.Response(200, content=json.dumps(item).encode())


def _gateway(stripe_fake: FlakyStripe, attempts: int = 4) -> StripeGateway:
    http = _HttpClient(timeout=1.0)
    http._client = httpx.AsyncClient(transport=httpx.MockTransport(stripe_fake))

    async def no_sleep(_: float) -> None:
        return None

    return StripeGateway(StripeConfig(api_key="sk_test_123", attempts=attempts), http_client=http, sleep=no_sleep)


async def _create(gw: StripeGateway, key: str = "org-1:period-7:compute") -> str:
    return await gw.create_item(customer="cus_1", invoice=None, amount=1250, currency="usd",
                                description="GPU hours", metadata={"org_id": "org-1"}, idempotency_key=key)


async def test_timeouts_and_500s_then_success_create_exactly_one_item_under_one_key() -> None:
    stripe_fake = FlakyStripe(["timeout-after", "500", "timeout-before"])
    item = await _create(_gateway(stripe_fake))
    assert item == "ii_1"
    assert len(stripe_fake.keys) == 4 and set(stripe_fake.keys) == {"org-1:period-7:compute"}
    # Nothing lost, nothing twice: one item holding the one amount.
    assert [i["amount"] for i in stripe_fake.items.values()] == [1250]


async def test_stripe_down_for_every_attempt_is_unavailable_and_a_later_retry_adds_nothing_twice() -> None:
    stripe_fake = FlakyStripe(["timeout-after", "500", "500"])
    with pytest.raises(UpstreamUnavailable):
        await _create(_gateway(stripe_fake, attempts=3))
    # The billing workflow retries the activity later with the same key: Stripe answers the first item.
    assert await _create(_gateway(stripe_fake, attempts=3)) == "ii_1"
    assert len(stripe_fake.items) == 1 and sum(i["amount"] for i in stripe_fake.items.values()) == 1250
    assert set(stripe_fake.keys) == {"org-1:period-7:compute"}
