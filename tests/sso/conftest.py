"""A real OpenID Connect provider (``oidc-provider-mock``) on loopback, and a browser-like walk through
the sign-in: our app over ASGI, the provider over HTTP, the redirects between them followed by hand."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants import sso
from tenants.db import tenant_session
from tenants.scope import TenantScope
from tenants.settings import Settings
from tests.factories import MadeOrg, ensure_csrf
from tests.gateway.conftest import client

__all__ = ["app", "client"]

# The provider runs in a thread of this process and calls an authlib API authlib marks deprecated;
# under warnings-as-errors its token endpoint would fail. Our own code raises no such warning.
IDP_WARNINGS = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")
CLIENT_ID = "metacloud-test"
CLIENT_SECRET = "idp-issued-client-secret-123"
DOMAIN = "acme.test"


def _claims(email: str, verified: bool = True, name: str = "") -> dict[str, object]:
    return {"email": email, "email_verified": verified, "name": name or email.split("@")[0].title()}


# Subjects preset at the provider; the test "clicks" one of them on its consent page.
IDP_USERS = {
    "alice": _claims(f"alice@{DOMAIN}", name="Alice Example"),
    "admin": _claims(f"admin@{DOMAIN}"),
    "known": _claims(f"known@{DOMAIN}"),
    "squatted": _claims(f"squatted@{DOMAIN}"),
    "outsider": _claims("eve@elsewhere.test"),
    "unverified": _claims(f"carol@{DOMAIN}", verified=False),
}


@pytest.fixture(scope="package")
def shared_app(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Litestar:
    """One real gateway for the package: building it costs ~0.3 s, and it holds no per-test state."""
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


@pytest.fixture
def app(shared_app: Litestar, db: async_sessionmaker[AsyncSession]) -> Litestar:
    return shared_app  # ``db`` empties every table after each test


@pytest.fixture(scope="session")
def idp() -> Iterator[str]:
    """The provider's issuer URL (discovery at ``{issuer}/.well-known/openid-configuration``)."""
    with warnings.catch_warnings():
        # the mock itself imports authlib.jose, which authlib marks deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        import oidc_provider_mock  # type: ignore[import-untyped]

    users = [oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in IDP_USERS.items()]
    with oidc_provider_mock.run_server_in_thread(user_claims=users, require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


async def configure_sso(
    db: async_sessionmaker[AsyncSession], org: MadeOrg, issuer: str, *, sso_required: bool = False,
    default_role: str = "member", domains: tuple[str, ...] = (DOMAIN,), settings: Settings,
) -> None:
    """Save the org's SSO settings through the service (discovery included), as the system."""
    scope = TenantScope.for_system(org.id, "test")
    async with tenant_session(db, scope) as s:
        await sso.save_config(
            s, scope,
            sso.SsoSettings(issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                            allowed_domains=list(domains), default_role=default_role, sso_required=sso_required),
            box=sso.client_secret_box(settings.secret_key), allow_http_loopback=True,
        )


@dataclass
class Walk:
    """Where a sign-in ended: our final response, plus the provider's authorization URL on the way."""

    response: httpx.Response
    authorize_url: str


async def sso_sign_in(client: httpx.AsyncClient, org_slug: str, subject: str, *, next_path: str | None = None,
                      keep_state_cookie: bool = True) -> Walk:
    """Start at our SSO page, consent as ``subject`` at the provider, come back to our callback."""
    page = await client.get(f"/orgs/{org_slug}/sso/login", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    token = await ensure_csrf(client)
    form = {"_csrf_token": token, **({"next": next_path} if next_path else {})}
    start = await client.post(f"/orgs/{org_slug}/sso/login", data=form, headers={"accept": "text/html"})
    assert start.status_code == 303, start.text
    authorize_url = start.headers["location"]
    async with httpx.AsyncClient() as browser_at_idp:
        consent = await browser_at_idp.get(authorize_url)
        assert consent.status_code == 200, consent.text
        assert subject in consent.text  # the provider's page lists the preset user
        answer = await browser_at_idp.post(authorize_url, data={"sub": subject})
    assert answer.status_code in (302, 303), answer.text
    back = urlsplit(answer.headers["location"])
    if not keep_state_cookie:
        client.cookies.clear()
    response = await client.get(f"{back.path}?{back.query}", headers={"accept": "text/html"})
    return Walk(response=response, authorize_url=authorize_url)
