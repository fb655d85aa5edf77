"""Cookie flags as a browser receives them: the session cookie is HttpOnly and SameSite=Lax everywhere, and
Secure with the ``__Host-`` prefix (so no Domain, Path=/) when the gateway is served over https; the CSRF
cookie follows the same rules except HttpOnly (scripts echo it in the x-csrftoken header)."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import make_org, make_user


def _set_cookies(resp: httpx.Response) -> dict[str, dict[str, str | bool]]:
    """Every Set-Cookie of a response: name -> its attributes (lower-case keys; flags as True)."""
    out: dict[str, dict[str, str | bool]] = {}
    for header in resp.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            attrs: dict[str, str | bool] = {"value": morsel.value}
            for part in header.split(";")[1:]:
                key, _, val = part.strip().partition("=")
                attrs[key.lower()] = val if val else True
            out[name] = attrs
    return out


async def _csrf(client: httpx.AsyncClient, cookie: str) -> str:
    resp = await client.get("/login")
    token = client.cookies.get(cookie)
    assert token, f"no {cookie} cookie from {resp.request.url}: {resp.headers.get_list('set-cookie')}"
    return token


async def _login_via_form(client: httpx.AsyncClient, csrf_cookie: str, email: str, password: str) -> httpx.Response:
    token = await _csrf(client, csrf_cookie)
    return await client.post("/login", data={"email": email, "password": password, "_csrf_token": token})


async def test_over_https_the_session_cookie_is_host_prefixed_secure_httponly_and_lax(
    https_client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})

    first = await https_client.get("/login")
    csrf = _set_cookies(first)["__Host-csrftoken"]
    assert csrf["secure"] is True and str(csrf["samesite"]).lower() == "lax"
    assert csrf["path"] == "/" and "domain" not in csrf

    resp = await _login_via_form(https_client, "__Host-csrftoken", user.email, user.password)
    assert resp.status_code == 303, resp.text
    cookies = _set_cookies(resp)
    assert "mc_session" not in cookies, "over https only the __Host- cookie may carry the session"
    session = cookies["__Host-mc_session"]
    assert session["httponly"] is True
    assert session["secure"] is True
    assert str(session["samesite"]).lower() == "lax"
    assert session["path"] == "/"
    assert "domain" not in session  # a __Host- cookie must not name a domain, or browsers drop it


async def test_the_api_login_sets_the_same_cookie_as_the_form(
    https_client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})
    token = await _csrf(https_client, "__Host-csrftoken")
    resp = await https_client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password},
                                   headers={"x-csrftoken": token})
    assert resp.status_code == 200, resp.text
    session = _set_cookies(resp)["__Host-mc_session"]
    assert session["httponly"] is True and session["secure"] is True
    assert str(session["samesite"]).lower() == "lax" and "domain" not in session


async def test_in_local_dev_over_http_the_session_cookie_is_httponly_and_lax_without_secure(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})
    resp = await _login_via_form(client, "csrftoken", user.email, user.password)
    assert resp.status_code == 303, resp.text
    session = _set_cookies(resp)["mc_session"]
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "lax"
    # A Secure cookie would never come back over http://127.0.0.1: local dev would not work at all.
    assert "secure" not in session


async def test_signing_out_expires_the_session_cookie(
    https_client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})
    await _login_via_form(https_client, "__Host-csrftoken", user.email, user.password)
    assert https_client.cookies.get("__Host-mc_session")
    token = await _csrf(https_client, "__Host-csrftoken")
    resp = await https_client.post("/logout", data={"_csrf_token": token})
    assert resp.status_code == 303
    cleared = _set_cookies(resp)["__Host-mc_session"]
    assert cleared["value"] in ("", '""')
    assert cleared.get("max-age") == "0" or "expires" in cleared
    me = await https_client.get("/api/v1/me")
    assert me.status_code == 401
