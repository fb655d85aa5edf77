"""A small OpenID Connect relying party: discovery, the authorization URL (code flow with PKCE),
the code exchange and ID token verification.

Claim rules come from authlib (``CodeIDToken``: iss, aud, exp, iat, nonce, at_hash, azp), the
signature check from joserfc against the provider's JWKS. authlib's httpx integration is not used:
it warns on import with the httpx we pin. Foreign errors (httpx, JOSE) are translated here into
``OidcError`` carrying a short machine ``reason`` (for the audit log) and a message for a person.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

__all__ = [
    "OidcError",
    "ProviderMetadata",
    "ProviderUnreachable",
    "authorization_url",
    "check_issuer_url",
    "discover",
    "exchange_code",
    "fetch_userinfo",
    "verify_id_token",
]

# Providers answer in well under a second; a sign-in page should not hang on a dead one.
_TIMEOUT = httpx.Timeout(5.0)
# Asymmetric algorithms only: "none" is never acceptable, and HS* would make the client secret the key.
_SAFE_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_LEEWAY_SECONDS = 60
SCOPES = "openid email profile"


class OidcError(Exception):
    """The provider or its answer is not usable. ``reason`` is short and stable; ``message`` is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ProviderUnreachable(OidcError):
    """The provider did not answer (network, timeout, 5xx): worth retrying later."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    signing_algs: tuple[str, ...]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer_url(issuer: str, *, allow_http_loopback: bool) -> str | None:
    """Why ``issuer`` cannot be an OIDC issuer, or None. HTTPS only (plain HTTP to loopback in dev and tests)."""
    try:
        parts = urlsplit(issuer)
    except ValueError:
        return "Enter the issuer as a URL, e.g. https://login.example.com."
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return "Enter the issuer as a URL, e.g. https://login.example.com."
    if parts.query or parts.fragment:
        return "The issuer URL has no query string or fragment."
    if parts.scheme == "http" and not (allow_http_loopback and _is_loopback(parts.hostname)):
        return "The issuer must use https://."
    return None


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle costs ~100 ms; a fresh client per call would pay it every time.
    return httpx.create_ssl_context()


def _client() -> httpx.AsyncClient:
    # No redirects: discovery and token endpoints answer directly, and following them would let an
    # issuer bounce our requests elsewhere.
    return httpx.AsyncClient(timeout=_TIMEOUT, follow_redirects=False, headers={"accept": "application/json"},
                             verify=_tls())


async def _get_json(url: str, what: str) -> Any:
    try:
        async with _client() as client:
            resp = await client.get(url)
    except httpx.HTTPError as exc:
        raise ProviderUnreachable(
            "idp_unreachable", f"Could not reach the identity provider at {url} ({type(exc).__name__})."
        ) from exc
    if resp.status_code >= 500:
        raise ProviderUnreachable("idp_unreachable", f"The identity provider answered {resp.status_code} for {what}.")
    if resp.status_code != 200:
        raise OidcError("not_oidc", f"The identity provider answered {resp.status_code} for {what} at {url}.")
    try:
        return resp.json()
    except ValueError as exc:
        raise OidcError("not_oidc", f"The {what} at {url} is not JSON.") from exc


async def discover(issuer: str) -> ProviderMetadata:
    """Fetch ``{issuer}/.well-known/openid-configuration`` and check it describes this issuer."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    doc = await _get_json(url, "the OpenID configuration")
    if not isinstance(doc, dict):
        raise OidcError("not_oidc", f"{url} is not an OpenID Connect discovery document.")
    missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
               if not isinstance(doc.get(k), str) or not doc.get(k)]
    if missing:
        raise OidcError("not_oidc", f"{url} is not an OpenID Connect discovery document (missing {', '.join(missing)}).")
    # OIDC Discovery 1.0 section 4.3: the issuer in the document must be the one we asked about.
    if doc["issuer"].rstrip("/") != issuer.rstrip("/"):
        raise OidcError("issuer_mismatch", f"The provider calls itself {doc['issuer']!r}, not {issuer!r}.")
    response_types = doc.get("response_types_supported") or ["code"]
    if "code" not in response_types:
        raise OidcError("not_oidc", "The provider does not support the authorization code flow.")
    algs = tuple(a for a in (doc.get("id_token_signing_alg_values_supported") or ["RS256"]) if a in _SAFE_ALGS)
    if not algs:
        raise OidcError("not_oidc", "The provider signs ID tokens only with algorithms we do not accept.")
    userinfo = doc.get("userinfo_endpoint")
    return ProviderMetadata(
        issuer=doc["issuer"],
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
        token_auth_methods=tuple(doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]),
        signing_algs=algs,
    )


def authorization_url(
    meta: ProviderMetadata, *, client_id: str, redirect_uri: str, state: str, nonce: str, code_verifier: str
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": SCOPES,
        "state": state,
        "nonce": nonce,
        "code_challenge": create_s256_code_challenge(code_verifier),
        "code_challenge_method": "S256",
    }
    sep = "&" if "?" in meta.authorization_endpoint else "?"
    return meta.authorization_endpoint + sep + urlencode(params)


async def exchange_code(
    meta: ProviderMetadata, *, client_id: str, client_secret: str, code: str, redirect_uri: str, code_verifier: str
) -> dict[str, Any]:
    """Trade the authorization code for tokens (client_secret_basic unless the provider takes only _post)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier}
    in_body = "client_secret_basic" not in meta.token_auth_methods and "client_secret_post" in meta.token_auth_methods
    if in_body:
        form.update(client_id=client_id, client_secret=client_secret)
    try:
        async with _client() as client:
            if in_body:
                resp = await client.post(meta.token_endpoint, data=form)
            else:
                resp = await client.post(meta.token_endpoint, data=form, auth=httpx.BasicAuth(client_id, client_secret))
    except httpx.HTTPError as exc:
        raise ProviderUnreachable("idp_unreachable", "Could not reach the identity provider's token endpoint.") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200 or not isinstance(body, dict):
        error = body.get("error", resp.status_code) if isinstance(body, dict) else resp.status_code
        # The provider's error code only: its description may echo what we sent.
        raise OidcError("token_exchange_failed", f"The identity provider refused the sign-in ({error}).")
    if not isinstance(body.get("id_token"), str):
        raise OidcError("token_exchange_failed", "The identity provider returned no ID token.")
    return body


async def verify_id_token(
    meta: ProviderMetadata, id_token: str, *, client_id: str, nonce: str, access_token: str | None
) -> dict[str, Any]:
    """Signature (JWKS), issuer, audience, expiry, nonce and at_hash; returns the claims."""
    jwks = await _get_json(meta.jwks_uri, "the signing keys (JWKS)")
    try:
        keys = KeySet.import_key_set(jwks)
        token = jwt.decode(id_token, keys, algorithms=list(meta.signing_algs))
        params: dict[str, Any] = {"nonce": nonce, "client_id": client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(
            token.claims,
            token.header,
            {"iss": {"essential": True, "value": meta.issuer}, "aud": {"essential": True, "value": client_id}},
            params,
        )
        claims.validate(leeway=_LEEWAY_SECONDS)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise OidcError("invalid_id_token", f"The identity provider's ID token did not verify ({type(exc).__name__}).") \
            from exc
    return dict(claims)


async def fetch_userinfo(meta: ProviderMetadata, access_token: str) -> dict[str, Any]:
    if not meta.userinfo_endpoint:
        return {}
    try:
        async with _client() as client:
            resp = await client.get(meta.userinfo_endpoint, headers={"authorization": f"Bearer {access_token}"})
    except httpx.HTTPError as exc:
        raise ProviderUnreachable("idp_unreachable", "Could not reach the identity provider's userinfo endpoint.") \
            from exc
    if resp.status_code != 200:
        return {}
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
