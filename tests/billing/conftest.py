from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

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
def period() -> Period:
    """Last month: closed in real life, and its usage partition exists (the migration makes last month's)."""
    return previous_period(datetime.now(UTC))


@pytest.fixture
def app(bsettings: Settings, engine: AsyncEngine, temporal_client: Client, db: async_sessionmaker[AsyncSession]) -> Litestar:
    return create_app(bsettings, engine=engine, temporal=TemporalHandle(bsettings, client=temporal_client))


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as c:
        yield c


