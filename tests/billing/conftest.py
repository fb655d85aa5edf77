from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from billing.ledger.periods import Period, previous_period
from billing.stripe_gateway import StripeConfig, StripeGateway
from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings

_PLANS = importlib.import_module("infra.migrations.versions.0008_jobs").PLANS
_PAYG = importlib.import_module("infra.migrations.versions.0009_usage").PAYG
LOCAL_KEY = "sk_test_local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Stripe stand-in on loopback, for the whole session (~1 s to start)."""
    port = _free_port()
    state = tmp_path_factory.mktemp("localstripe") / "state.pickle"
    proc = subprocess.Popen([sys.executable, "-m", "infra.dev.localstripe_server", "--port", str(port),
                             "--state-file", str(state), "--from-scratch"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/v1/customers", auth=(LOCAL_KEY, ""), timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("localstripe did not start")
        time.sleep(0.1)
    yield base
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@pytest.fixture
def bsettings(settings: Settings, localstripe: str) -> Settings:
    # public_url points nowhere: localstripe's own webhook deliveries go unanswered; tests sign events themselves
    return settings.with_(stripe_api_key=LOCAL_KEY, stripe_api_base=localstripe, public_url="http://127.0.0.1:9",
                          temporal_task_queue=f"billing-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def gateway(bsettings: Settings) -> StripeGateway:
    assert bsettings.stripe_api_key
    return StripeGateway(StripeConfig(api_key=bsettings.stripe_api_key, api_base=bsettings.stripe_api_base,
                                      backoff=0.01))


@pytest.fixture
async def priced(db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> None:
    """The plans and the list prices the migrations seed (the ``db`` fixture empties every table after a test)."""
    for name, title, order, caps in _PLANS:
        await owner_conn.execute("INSERT INTO plans (name, title, sort_order) VALUES ($1, $2, $3) "
                                 "ON CONFLICT DO NOTHING", name, title, order)
        for resource, cap in caps.items():
            await owner_conn.execute("INSERT INTO plan_entitlements (plan, resource, cap) VALUES ($1, $2, $3) "
                                     "ON CONFLICT DO NOTHING", name, resource, cap)
    await owner_conn.execute(
        "INSERT INTO rate_cards (id, plan, effective_from, currency, vcpu_hour_micros, memory_gib_hour_micros, "
        "gpu_hour_micros, gpu_default_hour_micros, storage_gib_month_micros, free_vcpu_millis, free_memory_bytes, "
        "note) VALUES (gen_random_uuid(), 'payg', '2024-01-01 00:00:00+00', 'usd', $1, $2, $3::jsonb, $4, $5, $6, $7,"
        " 'list prices') ON CONFLICT DO NOTHING",
        _PAYG["vcpu_hour_micros"], _PAYG["memory_gib_hour_micros"], json.dumps(_PAYG["gpu_hour_micros"]),
        _PAYG["gpu_default_hour_micros"], _PAYG["storage_gib_month_micros"], _PAYG["free_vcpu_millis"],
        _PAYG["free_memory_bytes"])


@pytest.fixture
def period() -> Period:
    """Last month: closed in real life, and its usage partition exists (the migration makes last month's)."""
    return previous_period(datetime.now(UTC))


@pytest.fixture
def app(bsettings: Settings, engine: AsyncEngine, temporal_client: Client, db: async_sessionmaker[AsyncSession],
        priced: None) -> Litestar:
    return create_app(bsettings, engine=engine, temporal=TemporalHandle(bsettings, client=temporal_client))


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as c:
        yield c


