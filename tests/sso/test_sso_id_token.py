"""ID token verification against the provider's real keys: signature, audience, nonce."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tenants import oidc
from tests.sso.conftest import CLIENT_ID, CLIENT_SECRET, IDP_WARNINGS

pytestmark = IDP_WARNINGS
REDIRECT = "http://127.0.0.1:8000/orgs/x/sso/callback"


async def _real_tokens(meta: oidc.ProviderMetadata, nonce: str) -> dict[str, object]:
    url = oidc.authorization_url(meta, client_id=CLIENT_ID, redirect_uri=REDIRECT, state="s", nonce=nonce,
                                 code_verifier="v" * 50)
    async with httpx.AsyncClient() as browser:
        answer = await browser.post(url, data={"sub": "alice"})
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    return await oidc.exchange_code(meta, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code,
                                    redirect_uri=REDIRECT, code_verifier="v" * 50)


async def test_genuine_token_verifies_and_carries_the_email(idp: str) -> None:
    meta = await oidc.discover(idp)
    tokens = await _real_tokens(meta, "n-1")
    claims = await oidc.verify_id_token(meta, str(tokens["id_token"]), client_id=CLIENT_ID, nonce="n-1",
                                        access_token=str(tokens["access_token"]))
    assert claims["email"] == "alice@acme.test" and claims["aud"] in (CLIENT_ID, [CLIENT_ID])


@pytest.mark.parametrize(("client_id", "nonce"), [("someone-else", "n-2"), (CLIENT_ID, "replayed")])
async def test_token_for_another_client_or_another_sign_in_is_rejected(idp: str, client_id: str, nonce: str) -> None:
    meta = await oidc.discover(idp)
    tokens = await _real_tokens(meta, "n-2")
    with pytest.raises(oidc.OidcError) as caught:
        await oidc.verify_id_token(meta, str(tokens["id_token"]), client_id=client_id, nonce=nonce,
                                   access_token=None)
    assert caught.value.reason == "invalid_id_token"


async def test_token_signed_with_a_key_the_provider_does_not_publish_is_rejected(idp: str) -> None:
    meta = await oidc.discover(idp)
    async with httpx.AsyncClient() as c:
        kid = (await c.get(meta.jwks_uri)).json()["keys"][0].get("kid")
    forger = RSAKey.generate_key(2048)
    now = int(time.time())
    claims = {"iss": meta.issuer, "aud": CLIENT_ID, "sub": "alice", "email": "alice@acme.test",
              "email_verified": True, "iat": now, "exp": now + 300, "nonce": "n"}
    forged = jwt.encode({"alg": "RS256", **({"kid": kid} if kid else {})}, claims, forger)
    with pytest.raises(oidc.OidcError) as caught:
        await oidc.verify_id_token(meta, forged, client_id=CLIENT_ID, nonce="n", access_token=None)
    assert caught.value.reason == "invalid_id_token"


def test_issuer_must_be_https_except_loopback_in_development() -> None:
    assert oidc.check_issuer_url("https://login.example.com", allow_http_loopback=False) is None
    assert oidc.check_issuer_url("http://localhost:8080", allow_http_loopback=True) is None
    assert oidc.check_issuer_url("http://localhost:8080", allow_http_loopback=False) is not None
    assert oidc.check_issuer_url("http://login.example.com", allow_http_loopback=True) is not None
    assert oidc.check_issuer_url("https://x.example.com/?a=b", allow_http_loopback=False) is not None
