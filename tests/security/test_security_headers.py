"""Security headers on every kind of response (page, API, error, static file, redirect): a CSP that allows
only our own scripts and no framing, nosniff, a same-origin referrer; HSTS when served over https, and not in
local dev over plain HTTP (where it would pin 127.0.0.1 to https in the developer's browser)."""

from __future__ import annotations

from typing import Any

import httpx

# (path, what it is): a page, a JSON API error, a 404, a static file, a redirect to the login form.
RESPONSES = [
    ("/login", "a page"),
    ("/api/v1/me", "an API 401 (problem+json)"),
    ("/no/such/page", "a 404"),
    ("/static/app.css", "a static file"),
    ("/orgs", "a redirect to sign in"),
    ("/healthz", "the health probe"),
]


def _csp(resp: httpx.Response) -> dict[str, str]:
    policy = resp.headers.get("content-security-policy", "")
    directives = (d.strip().split(None, 1) for d in policy.split(";") if d.strip())
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


async def test_every_response_carries_a_strict_csp_and_no_framing(readonly_client_factory: Any) -> None:
    async with readonly_client_factory(False) as client:
        for path, what in RESPONSES:
            resp = await client.get(path, headers={"accept": "application/json" if "api" in path else "text/html"})
            csp = _csp(resp)
            assert csp.get("frame-ancestors") == "'none'", what
            assert csp.get("default-src") == "'self'", what
            script = csp.get("script-src", csp.get("default-src", ""))
            assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script and "*" not in script, what
            assert csp.get("base-uri") == "'self'" and csp.get("form-action") == "'self'", what
            assert resp.headers["x-frame-options"] == "DENY", what
            assert resp.headers["x-content-type-options"] == "nosniff", what
            assert resp.headers["referrer-policy"] in ("same-origin", "strict-origin-when-cross-origin", "no-referrer")


async def test_hsts_is_sent_when_served_over_https(readonly_client_factory: Any) -> None:
    async with readonly_client_factory(True) as client:
        for path, what in RESPONSES:
            hsts = (await client.get(path)).headers.get("strict-transport-security", "")
            max_age = int(hsts.split("max-age=", 1)[1].split(";", 1)[0]) if "max-age=" in hsts else 0
            assert max_age >= 15552000, f"{what}: HSTS must last at least 180 days, got {hsts!r}"
            assert "includesubdomains" in hsts.lower(), what


async def test_responses_the_router_makes_itself_carry_them_too(readonly_client_factory: Any) -> None:
    # 404 and 405 are answered by Litestar's router, outside the middleware stack
    async with readonly_client_factory(True) as client:
        for resp in (await client.get("/nope"), await client.delete("/healthz")):
            assert resp.status_code in (404, 405)
            assert _csp(resp).get("frame-ancestors") == "'none'", resp.status_code
            assert "strict-transport-security" in resp.headers, resp.status_code


async def test_no_hsts_in_local_dev_over_plain_http(readonly_client_factory: Any) -> None:
    async with readonly_client_factory(False) as client:
        for path, what in RESPONSES:
            resp = await client.get(path)
            assert "strict-transport-security" not in resp.headers, what


async def test_the_pages_need_no_inline_script_the_csp_would_block(readonly_client_factory: Any) -> None:
    async with readonly_client_factory(False) as client:
        for path in ("/", "/login", "/signup", "/reset"):
            html = (await client.get(path)).text
            assert "<script>" not in html and " onclick=" not in html and "javascript:" not in html, path
