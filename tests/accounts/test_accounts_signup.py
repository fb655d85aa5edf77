"""Signup, verification and sign-in as a person does them: through the app, reading the mail it sends."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.accounts.conftest import HTML, audit_actions, link_in, mails_to, seed_login_failures
from tests.factories import ensure_csrf, make_user, sign_in

STRONG = "violet tractor sings quietly"


async def test_signup_mailbox_verify_login_me_logout_end_to_end(client: httpx.AsyncClient,
                                                                  db: async_sessionmaker[AsyncSession]) -> None:
    await ensure_csrf(client)
    resp = await client.post("/api/v1/auth/signup", json={"email": "Ada@Example.com", "password": STRONG,
                                                          "name": "Ada Lovelace"})
    assert resp.status_code == 202
    assert resp.json()["status"] == "check_inbox"

    mailbox = await client.get("/dev/mailbox", headers=HTML)
    assert mailbox.status_code == 200
    link = re.search(r'href="http://[^"]+(/verify\?token=[^"]+)"', mailbox.text)
    assert link, "the dev mailbox shows the verification link"
    verified = await client.get(link.group(1).replace("&amp;", "&"), headers=HTML)
    assert verified.status_code == 200
    assert "Your email is verified" in verified.text
    again = await client.get(link.group(1).replace("&amp;", "&"), headers=HTML)
    assert again.status_code == 400, "a verification link works once"

    login = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": STRONG})
    assert login.status_code == 200
    assert login.cookies.get("mc_session")
    me = (await client.get("/api/v1/me")).json()
    assert me["email"] == "ada@example.com"
    assert me["email_verified"] is True
    assert [(o["name"], o["slug"], o["plan"], o["role"]) for o in me["orgs"]] == [
        ("Ada Lovelace's org", "ada-lovelaces-org", "free", "owner")]
    assert me["active_org"] == "ada-lovelaces-org"

    assert (await client.post("/api/v1/auth/logout")).status_code == 204
    assert (await client.get("/api/v1/me")).status_code == 401
    assert await audit_actions(db) == ["user.signup", "org.created", "user.email_verified", "user.login",
                                       "user.logout"]


async def test_signup_pages_land_the_new_user_in_their_org(client: httpx.AsyncClient,
                                                           db: async_sessionmaker[AsyncSession]) -> None:
    token = await ensure_csrf(client)
    form = {"_csrf_token": token, "email": "grace@example.com", "password": STRONG, "name": "Grace",
            "org_name": "Compilers Inc"}
    signed_up = await client.post("/signup", data=form, headers=HTML)
    assert signed_up.status_code == 200
    assert "Check your inbox" in signed_up.text

    login = await client.post("/login", data={"_csrf_token": token, "email": "grace@example.com",
                                                "password": STRONG, "next": "/"}, headers=HTML)
    assert login.status_code == 303
    home = await client.get("/", headers=HTML)
    assert home.status_code == 303 and home.headers["location"] == "/orgs/compilers-inc"
    page = await client.get("/orgs/compilers-inc", headers=HTML)
    assert "Compilers Inc" in page.text and "Free plan" in page.text and "your role: owner" in page.text
    # not verified yet: signed in, with a notice, and no second org
    assert "Please verify your email" in page.text
    refused = await client.post("/orgs", data={"_csrf_token": token, "name": "Second"}, headers=HTML)
    assert refused.status_code == 403
    assert "Verify your email first" in refused.text
    assert len(await mails_to(db, "grace@example.com", "verify_email")) == 1


async def test_signup_with_a_registered_email_answers_the_same_and_mails_the_owner(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    await ensure_csrf(client)
    owner = await make_user(db, "taken@example.com")
    taken = await client.post("/api/v1/auth/signup", json={"email": owner.email, "password": STRONG})
    fresh = await client.post("/api/v1/auth/signup", json={"email": "fresh@example.com", "password": STRONG})
    assert taken.status_code == fresh.status_code == 202
    assert taken.json() == fresh.json()
    assert [m.kind for m in await mails_to(db, owner.email)] == ["signup_existing"]
    assert [m.kind for m in await mails_to(db, "fresh@example.com")] == ["verify_email"]


async def test_short_or_common_passwords_are_refused_next_to_the_field(client: httpx.AsyncClient) -> None:
    token = await ensure_csrf(client)
    short = await client.post("/signup", headers=HTML, data={"_csrf_token": token, "email": "bo@example.com",
                                                             "password": "short"})
    assert short.status_code == 422
    assert "at least 12 characters" in short.text
    assert 'value="bo@example.com"' in short.text, "the form keeps what was typed"
    common = await client.post("/api/v1/auth/signup", json={"email": "bo@example.com", "password": "password1234"})
    assert common.status_code == 422
    assert [e["field"] for e in common.json()["errors"]] == ["password"]
    listed = await client.post("/api/v1/auth/signup", json={"email": "bo@example.com", "password": "1qaz2wsx3edc"})
    assert "common passwords" in listed.json()["errors"][0]["message"]


async def test_ten_failures_lock_the_account_and_mail_its_owner(client: httpx.AsyncClient,
                                                              db: async_sessionmaker[AsyncSession]) -> None:
    await ensure_csrf(client)
    user = await make_user(db, "locked@example.com")
    for _ in range(10):
        bad = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "wrong password!"})
        assert bad.status_code == 401
    refused = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert refused.status_code == 429
    assert 800 < int(refused.headers["retry-after"]) <= 900
    [mail] = await mails_to(db, user.email, "account_locked")
    assert "10 failed sign-in attempts" in mail.body_text
    assert link_in(mail, "/reset")
    actions = await audit_actions(db)
    assert actions.count("user.login_failed") == 10 and actions.count("user.locked") == 1


async def test_lockout_answers_the_same_for_an_unknown_email(client: httpx.AsyncClient,
                                                             db: async_sessionmaker[AsyncSession]) -> None:
    await ensure_csrf(client)
    await seed_login_failures(db, "nobody@example.com")
    tenth = await client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong!"})
    assert tenth.status_code == 401
    refused = await client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x"})
    assert refused.status_code == 429
    assert "retry-after" in refused.headers


async def test_login_page_shows_the_error_in_place_and_honours_only_same_site_next(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    token = await ensure_csrf(client)
    user = await make_user(db)
    wrong = await client.post("/login", headers=HTML, data={"_csrf_token": token, "email": user.email,
                                                           "password": "nope", "next": "/orgs"})
    assert wrong.status_code == 422
    assert "email or password is not right" in wrong.text
    evil = await client.post("/login", headers=HTML, data={"_csrf_token": token, "email": user.email,
                                                          "password": user.password, "next": "//evil.example/x"})
    assert evil.status_code == 303 and evil.headers["location"] == "/"
    form = await client.get("/login?next=/orgs", headers=HTML)
    assert form.status_code == 303 and form.headers["location"] == "/orgs", "signed in: straight to next"


async def test_login_rotates_the_session_and_the_old_token_stops_working(
    app: object, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    await sign_in(client, db, user, settings)
    old = client.cookies.get("mc_session")
    assert old and (await client.get("/api/v1/me")).status_code == 200
    login = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    new = login.cookies.get("mc_session")
    assert new and new != old
    client.cookies.clear()
    client.cookies.set("mc_session", old)
    assert (await client.get("/api/v1/me")).status_code == 401
    client.cookies.clear()
    client.cookies.set("mc_session", new)
    assert (await client.get("/api/v1/me")).status_code == 200


async def test_api_keys_may_not_call_me(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> None:
    from tests.factories import make_api_key, make_org

    key = await make_api_key(db, await make_org(db))
    resp = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 403
