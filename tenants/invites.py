"""Invitations: an admin invites an email address with a role; the person accepts through a link.

The link carries a random single-use token; only its SHA-256 is stored. It expires after
``INVITE_TTL``. The email goes through the outbox (``EmailMessage``) in the same transaction as
the invite, so an invite exists if and only if its mail will be sent.

Accepting happens before any tenant scope exists (the token names the org), so those functions
take an ``unscoped_session`` from the caller. They lock the invite row, so of two concurrent
acceptances exactly one wins. Signing in on the way reuses ``tenants.accounts.login`` (its limits,
lockout and audit), then ``accept_invite``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit, ratelimit
from tenants.db import utcnow
from tenants.email import enqueue
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.members import check_role, require_grantable
from tenants.models import Invite, Membership, Org, User
from tenants.passwords import password_problem
from tenants.permissions import Permission
from tenants.scope import Principal, TenantScope
from tenants.security import hash_password, hash_token, new_token

__all__ = [
    "INVITE_TTL",
    "AcceptedInvite",
    "CreatedInvite",
    "InvitePreview",
    "InviteView",
    "accept_invite",
    "accept_invite_with_signup",
    "accept_link",
    "check_email",
    "create_invite",
    "list_invites",
    "preview_invite",
    "revoke_invite",
]

INVITE_TTL = timedelta(days=7)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_UNKNOWN = "This invitation link is not valid. Check that you opened the whole link from the email."
_USED = "This invitation has already been used."
_REVOKED = "This invitation was revoked by the organization. Ask them for a new one."


@dataclass(frozen=True, slots=True)
class InviteView:
    id: uuid.UUID
    email: str
    role: str
    status: str  # pending | expired | accepted | revoked
    invited_by: str  # the inviter's email, "" if unknown
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedInvite:
    invite: InviteView
    token: str  # goes out only in the email; tests read it from here


@dataclass(frozen=True, slots=True)
class InvitePreview:
    """What the acceptance page may show to whoever holds the token."""

    org_name: str
    org_slug: str
    email: str
    role: str
    expires_at: datetime
    account_exists: bool
    account_has_password: bool


@dataclass(frozen=True, slots=True)
class AcceptedInvite:
    org_id: uuid.UUID
    org_slug: str
    org_name: str
    role: str
    user_id: uuid.UUID


def check_email(raw: str, *, field: str = "email") -> str:
    email = raw.strip().lower()
    if not email or len(email) > 320 or not _EMAIL.match(email):
        raise InvalidInput("That is not an email address.",
                           field_errors={field: "Enter an email address like ada@example.com."})
    return email


def _status(inv: Invite, now: datetime) -> str:
    if inv.accepted_at is not None:
        return "accepted"
    if inv.revoked_at is not None:
        return "revoked"
    return "expired" if inv.expires_at <= now else "pending"


def _view(inv: Invite, inviter: str | None, now: datetime) -> InviteView:
    return InviteView(
        id=inv.id, email=inv.email, role=inv.role, status=_status(inv, now), invited_by=inviter or "",
        created_at=inv.created_at, expires_at=inv.expires_at, accepted_at=inv.accepted_at, revoked_at=inv.revoked_at,
    )


def accept_link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/invites/accept?{urlencode({'token': token})}"


async def create_invite(
    session: AsyncSession, scope: TenantScope, *, email: str, role: str, public_url: str, ip: str | None = None
) -> CreatedInvite:
    """Invite ``email`` with ``role`` (no more than the inviter's own) and queue the email."""
    scope.require(Permission.INVITES_MANAGE)
    errors: dict[str, str] = {}
    try:
        email = check_email(email)
    except InvalidInput as exc:
        errors.update(exc.field_errors)
    try:
        role = check_role(role)
    except InvalidInput as exc:
        errors.update(exc.field_errors)
    if errors:
        raise InvalidInput("Check the highlighted fields.", field_errors=errors)
    require_grantable(scope, role)
    # Serialise invites for the same address in this org, so two clicks make one invite.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"invite:{scope.org_id}:{email}"})
    member = await session.execute(
        select(Membership.id).join(User, User.id == Membership.user_id)
        .where(Membership.org_id == scope.org_id, User.email == email)
    )
    if member.first() is not None:
        raise Conflict(f"{email} is already a member of this organization.", code="already_member")
    now = utcnow()
    pending = await session.execute(
        select(Invite.id).where(
            Invite.org_id == scope.org_id, Invite.email == email, Invite.accepted_at.is_(None),
            Invite.revoked_at.is_(None), Invite.expires_at > now,
        )
    )
    if pending.first() is not None:
        raise Conflict(f"{email} already has a pending invitation. Revoke it to send a new one.",
                       code="already_invited")
    org = (await session.execute(select(Org).where(Org.id == scope.org_id))).scalar_one()
    token = new_token()
    invite = Invite(
        org_id=scope.org_id, email=email, role=role, token_hash=hash_token(token),
        invited_by=uuid.UUID(scope.principal.id) if scope.principal.kind == "user" else None,
        expires_at=now + INVITE_TTL, created_at=now,
    )
    session.add(invite)
    await session.flush()
    inviter = scope.principal.display if scope.principal.kind == "user" else f"An admin of {org.name}"
    await enqueue(
        session,
        to=email,
        subject=f"You are invited to join {org.name} on Metacloud",
        body=(
            f"{inviter} invited you to join {org.name} on Metacloud as {role}.\n\n"
            f"Accept the invitation:\n{accept_link(public_url, token)}\n\n"
            f"The link works once and expires on {invite.expires_at:%Y-%m-%d %H:%M} UTC.\n"
            "If you did not expect this, ignore this email.\n"
        ),
        kind="invite",
    )
    await audit.record(session, action="invite.created", actor=scope.principal, org_id=scope.org_id,
                       target_kind="invite", target_id=invite.id, target_display=email, ip=ip,
                       details={"role": role})
    return CreatedInvite(invite=_view(invite, scope.principal.display, now), token=token)


async def list_invites(session: AsyncSession, scope: TenantScope, *, open_only: bool = False) -> list[InviteView]:
    """Newest first. ``open_only``: pending and expired ones (not accepted, not revoked)."""
    scope.require(Permission.INVITES_MANAGE)
    query = (
        select(Invite, User.email).outerjoin(User, User.id == Invite.invited_by)
        .where(Invite.org_id == scope.org_id).order_by(Invite.created_at.desc()).limit(500)
    )
    if open_only:
        query = query.where(Invite.accepted_at.is_(None), Invite.revoked_at.is_(None))
    now = utcnow()
    return [_view(inv, inviter, now) for inv, inviter in (await session.execute(query))]


async def revoke_invite(
    session: AsyncSession, scope: TenantScope, invite_id: uuid.UUID, *, ip: str | None = None
) -> InviteView:
    """The link stops working. Revoking twice is harmless; an accepted invite cannot be revoked."""
    scope.require(Permission.INVITES_MANAGE)
    inv = (
        await session.execute(
            select(Invite).where(Invite.org_id == scope.org_id, Invite.id == invite_id).with_for_update()
        )
    ).scalar_one_or_none()
    if inv is None:
        raise NotFound("No such invitation in this organization.")
    if inv.accepted_at is not None:
        raise Conflict("This invitation was already accepted; remove the member instead.", code="invite_used")
    if inv.revoked_at is None:
        inv.revoked_at = utcnow()
        await session.flush()
        await audit.record(session, action="invite.revoked", actor=scope.principal, org_id=scope.org_id,
                           target_kind="invite", target_id=inv.id, target_display=inv.email, ip=ip)
    return _view(inv, None, utcnow())


# --- acceptance (no tenant scope yet: the caller passes an unscoped session) ---------------------------


async def _usable_invite(session: AsyncSession, token: str, *, lock: bool) -> tuple[Invite, Org]:
    query = select(Invite, Org).join(Org, Org.id == Invite.org_id).where(Invite.token_hash == hash_token(token))
    if lock:
        query = query.with_for_update(of=Invite).execution_options(populate_existing=True)
    row = (await session.execute(query)).first() if token else None
    if row is None or row[1].deleted_at is not None:
        raise NotFound(_UNKNOWN, code="invite_unknown")
    inv, org = row
    if inv.accepted_at is not None:
        raise Conflict(_USED, code="invite_used")
    if inv.revoked_at is not None:
        raise Conflict(_REVOKED, code="invite_revoked")
    if inv.expires_at <= utcnow():
        raise Conflict(f"This invitation expired on {inv.expires_at:%Y-%m-%d}. Ask the organization for a new one.",
                       code="invite_expired")
    return inv, org


async def preview_invite(session: AsyncSession, token: str) -> InvitePreview:
    inv, org = await _usable_invite(session, token, lock=False)
    user = (await session.execute(select(User).where(User.email == inv.email))).scalar_one_or_none()
    return InvitePreview(
        org_name=org.name, org_slug=org.slug, email=inv.email, role=inv.role, expires_at=inv.expires_at,
        account_exists=user is not None, account_has_password=bool(user and user.password_hash),
    )


async def _join(session: AsyncSession, inv: Invite, org: Org, user: User, *, via: str, ip: str | None) -> AcceptedInvite:
    existing = await session.execute(
        select(Membership.id).where(Membership.org_id == org.id, Membership.user_id == user.id)
    )
    if existing.first() is not None:
        raise Conflict(f"You are already a member of {org.name}.", code="already_member")
    now = utcnow()
    session.add(Membership(org_id=org.id, user_id=user.id, role=inv.role))
    inv.accepted_at = now
    inv.accepted_by = user.id
    if user.email_verified_at is None:
        user.email_verified_at = now  # the link reached this mailbox
    await session.flush()
    await audit.record(session, action="invite.accepted", actor=Principal(kind="user", id=str(user.id), display=user.email),
                       org_id=org.id, target_kind="invite", target_id=inv.id, target_display=inv.email, ip=ip,
                       details={"role": inv.role, "via": via})
    return AcceptedInvite(org_id=org.id, org_slug=org.slug, org_name=org.name, role=inv.role, user_id=user.id)


def _wrong_account(email: str) -> InvalidInput:
    return InvalidInput(f"This invitation is for {email}. Sign out and open the link again, or ask for an "
                        "invitation to the address you are signed in with.", code="invite_other_email")


async def accept_invite(
    session: AsyncSession, token: str, *, user_id: uuid.UUID, ip: str | None = None, via: str = "session"
) -> AcceptedInvite:
    """A signed-in user (or one who just signed in: ``via="login"``) accepts; the invite must be for
    their email address."""
    inv, org = await _usable_invite(session, token, lock=True)
    user = await session.get(User, user_id)
    if user is None or user.email != inv.email:
        raise _wrong_account(inv.email)
    return await _join(session, inv, org, user, via=via, ip=ip)


async def accept_invite_with_signup(
    session: AsyncSession, token: str, *, name: str, password: str, ip: str | None = None
) -> tuple[AcceptedInvite, User]:
    """Create the account for the invited address (verified: the link reached it) and join.

    Signing in with an existing account is ``tenants.accounts.login`` followed by ``accept_invite``.
    """
    errors: dict[str, str] = {}
    name = " ".join(name.split())
    if not name:
        errors["name"] = "Tell us your name."
    elif len(name) > 200:
        errors["name"] = "Use at most 200 characters."
    inv, org = await _usable_invite(session, token, lock=True)
    problem = password_problem(password, user_inputs=[inv.email, inv.email.partition("@")[0], name])
    if problem:
        errors["password"] = problem
    if errors:
        raise InvalidInput("Check the highlighted fields.", field_errors=errors)
    now = utcnow()
    await ratelimit.check(session, ratelimit.SIGNUPS_PER_IP, ip or "-", now=now,
                          message="Too many signups from your network.")
    await ratelimit.hit(session, ratelimit.SIGNUPS_PER_IP, ip or "-", now=now)
    taken = await session.execute(select(User.id).where(User.email == inv.email))
    if taken.first() is not None:
        raise Conflict(f"An account for {inv.email} exists already: sign in instead.", code="account_exists")
    user = User(email=inv.email, name=name, password_hash=await asyncio.to_thread(hash_password, password),
                email_verified_at=now)
    session.add(user)
    await session.flush()
    principal = Principal(kind="user", id=str(user.id), display=user.email)
    await audit.record(session, action="user.signup", actor=principal, target_kind="user", target_id=user.id,
                       target_display=user.email, ip=ip, details={"via": "invite"})
    return await _join(session, inv, org, user, via="signup", ip=ip), user
