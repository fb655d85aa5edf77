"""Invitations: sent through the outbox with a single-use link; accepted by signing up, signing in or
as the signed-in user; a used, revoked or expired link says so plainly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from litestar import Litestar
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth import session_cookie_name
from tenants import invites
from tenants.db import unscoped_session
from tenants.errors import Conflict
from tenants.models import EmailMessage, Invite, Membership, User
from tenants.security import hash_token
from tenants.settings import Settings
from tests.admin.helpers import actions, browser, csrf_form, invite_token_from_outbox
from tests.factories import PASSWORD, MadeOrg, ensure_csrf, make_org, make_user, sign_in

NEW_PASSWORD = "velvet otter juggles lanterns"


async def _invite(client: httpx.AsyncClient, org: MadeOrg, email: str, role: str = "member") -> httpx.Response:
    return await client.post(f"/api/v1/orgs/{org.slug}/invites", json={"email": email, "role": role})


async def _admin_with_org(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                          settings: Settings, role: str = "admin") -> MadeOrg:
    admin = await make_user(db)
    org = await make_org(db, members={admin.id: role})
    await sign_in(client, db, admin, settings)
    return org


async def _role_of(db: async_sessionmaker[AsyncSession], org: MadeOrg, email: str) -> str | None:
    async with unscoped_session(db, reason="test") as s:
        return (await s.execute(
            select(Membership.role).join(User, User.id == Membership.user_id)
            .where(Membership.org_id == org.id, User.email == email)
        )).scalar_one_or_none()


async def test_invite_is_mailed_with_a_link_and_stored_hashed(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    resp = await _invite(client, org, "New.Person@Example.com", "viewer")
    assert resp.status_code == 201
    body = resp.json()
    assert body["email"] == "new.person@example.com" and body["status"] == "pending" and "token" not in body
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    token = await invite_token_from_outbox(db, "new.person@example.com")
    async with unscoped_session(db, reason="test") as s:
        mail = (await s.execute(select(EmailMessage))).scalar_one()
        stored = (await s.execute(select(Invite.token_hash))).scalar_one()
    assert f"{settings.public_url}/invites/accept?token={token}" in mail.body_text
    assert org.name in mail.subject
    assert stored == hash_token(token)
    listed = (await client.get(f"/api/v1/orgs/{org.slug}/invites")).json()
    assert [i["email"] for i in listed] == ["new.person@example.com"] and token not in str(listed)
    assert await actions(db, org_id=org.id) == ["invite.created"]


async def test_new_person_signs_up_from_the_link_and_lands_in_the_org(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    await _invite(client, org, "ada@example.com", "member")
    token = await invite_token_from_outbox(db, "ada@example.com")

    async with browser(app) as visitor:
        page = await visitor.get(f"/invites/accept?token={token}")
        assert page.status_code == 200
        assert org.name in page.text and ">member<" in page.text
        assert 'name="name"' in page.text and "Create account and join" in page.text
        csrf = await ensure_csrf(visitor)
        weak = await visitor.post("/invites/accept", data={"token": token, "action": "signup", "name": "Ada",
                                                           "password": "short", "_csrf_token": csrf})
        assert weak.status_code == 422
        assert 'id="password-error"' in weak.text and 'value="Ada"' in weak.text
        done = await visitor.post("/invites/accept", data={"token": token, "action": "signup", "name": "Ada",
                                                           "password": NEW_PASSWORD, "_csrf_token": csrf})
        assert done.status_code == 303, done.text
        assert done.headers["location"].startswith(f"/orgs/{org.slug}")
        assert visitor.cookies.get(session_cookie_name(settings))
        # signed in: the org is theirs now
        assert (await visitor.get(f"/api/v1/orgs/{org.slug}/members")).status_code == 200
    assert await _role_of(db, org, "ada@example.com") == "member"
    async with unscoped_session(db, reason="test") as s:
        user = (await s.execute(select(User).where(User.email == "ada@example.com"))).scalar_one()
    assert user.email_verified_at is not None and user.name == "Ada"
    assert await actions(db, org_id=org.id) == ["invite.created", "invite.accepted"]


async def test_existing_account_signs_in_from_the_link_and_joins(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    existing = await make_user(db)
    await _invite(client, org, existing.email, "viewer")
    token = await invite_token_from_outbox(db, existing.email)
    async with browser(app) as visitor:
        page = await visitor.get(f"/invites/accept?token={token}")
        assert "Sign in and join" in page.text and 'name="name"' not in page.text
        csrf = await ensure_csrf(visitor)
        wrong = await visitor.post("/invites/accept", data={"token": token, "action": "login",
                                                            "password": "not it at all", "_csrf_token": csrf})
        assert wrong.status_code == 422 and "Wrong password." in wrong.text
        done = await visitor.post("/invites/accept", data={"token": token, "action": "login",
                                                           "password": PASSWORD, "_csrf_token": csrf})
        assert done.status_code == 303
    assert await _role_of(db, org, existing.email) == "viewer"
    assert "user.login_failed" in await actions(db)


async def test_signed_in_invitee_joins_with_one_click_and_the_link_then_says_used(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    invitee = await make_user(db)
    await _invite(client, org, invitee.email, "billing")
    token = await invite_token_from_outbox(db, invitee.email)
    await sign_in(client, db, invitee, settings)
    page = await client.get(f"/invites/accept?token={token}")
    assert f"Join {org.name}" in page.text
    done = await client.post("/invites/accept", data={"token": token, "action": "join", **await csrf_form(client)})
    assert done.status_code == 303
    assert await _role_of(db, org, invitee.email) == "billing"
    again = await client.get(f"/invites/accept?token={token}")
    assert again.status_code == 410 and "already been used" in again.text


async def test_invite_for_someone_else_is_not_accepted_by_the_signed_in_user(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    await _invite(client, org, "intended@example.com")
    token = await invite_token_from_outbox(db, "intended@example.com")
    other = await make_user(db)
    await sign_in(client, db, other, settings)
    page = await client.get(f"/invites/accept?token={token}")
    assert "this invitation is for intended@example.com" in page.text
    api = await client.post("/api/v1/invites/accept", json={"token": token})
    assert api.status_code == 422
    assert await _role_of(db, org, other.email) is None


async def test_api_accept_joins_the_signed_in_user(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    invitee = await make_user(db)
    await _invite(client, org, invitee.email, "viewer")
    token = await invite_token_from_outbox(db, invitee.email)
    await sign_in(client, db, invitee, settings)
    resp = await client.post("/api/v1/invites/accept", json={"token": token})
    assert resp.status_code == 200
    assert resp.json() == {"org": org.slug, "org_name": org.name, "role": "viewer"}
    used = await client.post("/api/v1/invites/accept", json={"token": token})
    assert used.status_code == 409 and used.json()["code"] == "invite_used"


async def test_revoked_and_expired_links_say_so(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    revoked = (await _invite(client, org, "gone@example.com")).json()
    revoked_token = await invite_token_from_outbox(db, "gone@example.com")
    assert (await client.delete(f"/api/v1/orgs/{org.slug}/invites/{revoked['id']}")).status_code == 204
    await _invite(client, org, "late@example.com")
    late_token = await invite_token_from_outbox(db, "late@example.com")
    async with unscoped_session(db, reason="test: let the invite expire") as s:
        await s.execute(update(Invite).where(Invite.email == "late@example.com")
                        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    async with browser(app) as visitor:
        page = await visitor.get(f"/invites/accept?token={revoked_token}")
        assert page.status_code == 410 and "revoked" in page.text and 'name="password"' not in page.text
        page = await visitor.get(f"/invites/accept?token={late_token}")
        assert page.status_code == 410 and "expired" in page.text
        page = await visitor.get("/invites/accept?token=not-a-real-token")
        assert page.status_code == 404 and "not valid" in page.text
        csrf = await ensure_csrf(visitor)
        post = await visitor.post("/invites/accept", data={"token": revoked_token, "action": "signup", "name": "X",
                                                           "password": NEW_PASSWORD, "_csrf_token": csrf})
        assert post.status_code == 409 and "revoked" in post.text
    assert await _role_of(db, org, "gone@example.com") is None
    assert await actions(db, org_id=org.id) == ["invite.created", "invite.revoked", "invite.created"]


async def test_inviting_a_member_or_a_pending_address_is_a_conflict(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin = await make_user(db)
    org = await make_org(db, members={admin.id: "admin"})
    await sign_in(client, db, admin, settings)
    member = await _invite(client, org, admin.email.upper())
    assert member.status_code == 409 and member.json()["code"] == "already_member"
    assert (await _invite(client, org, "twice@example.com")).status_code == 201
    again = await _invite(client, org, "twice@example.com")
    assert again.status_code == 409 and again.json()["code"] == "already_invited"


async def test_invite_role_must_be_within_the_inviters(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    assert (await _invite(client, org, "boss@example.com", "owner")).status_code == 403
    page = await client.post(f"/orgs/{org.slug}/invites",
                             data={"email": "boss@example.com", "role": "owner", **await csrf_form(client)})
    assert page.status_code == 403 and 'id="role-error"' in page.text and 'value="boss@example.com"' in page.text


async def test_invite_page_sends_lists_and_revokes_with_errors_in_place(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    bad = await client.post(f"/orgs/{org.slug}/invites", data={"email": "nope", "role": "member",
                                                               **await csrf_form(client)})
    assert bad.status_code == 422 and 'id="email-error"' in bad.text and 'value="nope"' in bad.text
    sent = await client.post(f"/orgs/{org.slug}/invites", data={"email": "grace@example.com", "role": "viewer",
                                                                **await csrf_form(client)})
    assert sent.status_code == 303
    page = await client.get(sent.headers["location"])
    assert "Invitation sent to grace@example.com." in page.text and "grace@example.com</td>" in page.text
    dup = await client.post(f"/orgs/{org.slug}/invites", data={"email": "grace@example.com", "role": "viewer",
                                                               **await csrf_form(client)})
    assert dup.status_code == 409 and "already has a pending invitation" in dup.text
    invite_id = (await client.get(f"/api/v1/orgs/{org.slug}/invites")).json()[0]["id"]
    revoked = await client.post(f"/orgs/{org.slug}/invites/{invite_id}/revoke", data=await csrf_form(client))
    assert revoked.status_code == 303
    assert "grace@example.com</td>" not in (await client.get(f"/orgs/{org.slug}/invites")).text


async def test_two_acceptances_of_one_link_make_one_membership(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await _admin_with_org(client, db, settings)
    invitee = await make_user(db)
    await _invite(client, org, invitee.email)
    token = await invite_token_from_outbox(db, invitee.email)

    async def accept() -> str:
        try:
            async with unscoped_session(db, reason="test") as s:
                await invites.accept_invite(s, token, user_id=invitee.id)
            return "ok"
        except Conflict:
            return "conflict"

    assert sorted(await asyncio.gather(accept(), accept())) == ["conflict", "ok"]
