"""Accounts: signup, email verification, sign-in with lockout, sign-out, password reset.

These act before any tenant scope exists (the caller is identified by an email, a token or a
session), so each runs in an ``unscoped_session`` the gateway opens with a reason; like every
service they flush and never commit.

Nothing here tells a caller whether an email is registered: signup answers "check your inbox"
either way (and mails the existing owner instead), a reset request likewise, failed sign-ins
and lockouts are counted per typed email whether or not it exists, and an unknown email costs
one Argon2 verification like a known one. Argon2 (~0.1-0.3 s of CPU by design) runs in a thread so
one sign-in does not stall every other request of the replica.

Unverified users may sign in and see their org, but may not create further orgs (checked by
``ensure_verified``; other features may use it too) until they click the link.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit, ratelimit
from tenants.credentials import SessionPolicy, create_web_session
from tenants.db import utcnow
from tenants.email import enqueue
from tenants.errors import DomainError, InvalidInput, PermissionDenied, RateLimited, Unauthenticated
from tenants.models import OneTimeToken, User, WebSession
from tenants.orgs import create_org, default_org_name, memberships_of
from tenants.passwords import password_problem
from tenants.scope import Principal
from tenants.security import hash_password, hash_token, new_token, password_needs_rehash, verify_password

__all__ = [
    "RESET_TTL",
    "VERIFY_TTL",
    "LoginResult",
    "ensure_verified",
    "login",
    "logout",
    "normalize_email",
    "request_password_reset",
    "resend_verification",
    "reset_password",
    "reset_token_valid",
    "signup",
    "verify_email",
]

VERIFY_TTL = timedelta(hours=24)
RESET_TTL = timedelta(hours=1)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_BAD_LOGIN = "The email or password is not right."


def normalize_email(raw: str) -> str:
    return raw.strip().lower()


def _user_principal(user: User) -> Principal:
    return Principal(kind="user", id=str(user.id), display=user.email)


async def _issue_token(session: AsyncSession, user: User, purpose: str, ttl: timedelta, now: datetime) -> str:
    token = new_token()
    session.add(OneTimeToken(user_id=user.id, purpose=purpose, token_hash=hash_token(token), expires_at=now + ttl))
    await session.flush()
    return token


async def _consume_token(session: AsyncSession, token: str, purpose: str, now: datetime) -> User | None:
    """Mark the token used and return its user; ``None`` if unknown, expired or used (single use, atomic)."""
    user_id = (
        await session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.token_hash == hash_token(token), OneTimeToken.purpose == purpose,
                   OneTimeToken.used_at.is_(None), OneTimeToken.expires_at > now)
            .values(used_at=now)
            .returning(OneTimeToken.user_id)
        )
    ).scalar_one_or_none()
    return await session.get(User, user_id) if user_id else None


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def _mail_verification(session: AsyncSession, user: User, *, public_url: str, now: datetime) -> None:
    token = await _issue_token(session, user, "verify_email", VERIFY_TTL, now)
    await enqueue(session, to=user.email, kind="verify_email", subject="Verify your email for Metacloud",
                  body=f"Hello {user.name},\n\nConfirm this is your email address by opening this link "
                       f"(valid for 24 hours):\n\n{public_url}/verify?token={token}\n\n"
                       "If you did not sign up for Metacloud, ignore this message.\n")


# --- signup ---------------------------------------------------------------------------------------------

async def signup(
    session: AsyncSession, *, email: str, password: str, name: str, org_name: str, public_url: str,
    ip: str | None,
) -> None:
    """Create a user, an org on the Free plan they own, and mail a verification link.

    For an email that is already registered the answer is the same; its owner gets a mail instead.
    """
    email, name = normalize_email(email), " ".join(name.split())
    errors: dict[str, str] = {}
    if not _EMAIL.match(email) or len(email) > 320:
        errors["email"] = "Enter an email address like ada@example.com."
    if len(name) > 200:
        errors["name"] = "Use at most 200 characters."
    problem = password_problem(password, user_inputs=[email, email.partition("@")[0], name])
    if problem:
        errors["password"] = problem
    if len(" ".join(org_name.split())) > 200:
        errors["org_name"] = "Use at most 200 characters."
    if errors:
        raise InvalidInput("Some fields need attention.", field_errors=errors)
    now = utcnow()
    await ratelimit.check(session, ratelimit.SIGNUPS_PER_IP, ip or "-", now=now,
                          message="Too many signups from your network.")
    await ratelimit.check(session, ratelimit.SIGNUPS_PER_ACCOUNT, email, now=now,
                          message="Too many signups for this email.")
    await ratelimit.hit(session, ratelimit.SIGNUPS_PER_IP, ip or "-", now=now)
    await ratelimit.hit(session, ratelimit.SIGNUPS_PER_ACCOUNT, email, now=now)
    # Hashed whether or not the email is taken, so both answers take the same time.
    password_hash = await asyncio.to_thread(hash_password, password)
    name = name or email.partition("@")[0]
    user = User(email=email, name=name, password_hash=password_hash)
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError:
        await _mail_existing_owner(session, email, public_url=public_url)
        return
    principal = _user_principal(user)
    await audit.record(session, action="user.signup", actor=principal, target_kind="user", target_id=user.id,
                       target_display=email, ip=ip)
    await create_org(session, owner_id=user.id, name=org_name.strip() or default_org_name(name), actor=principal,
                     ip=ip)
    await _mail_verification(session, user, public_url=public_url, now=now)


async def _mail_existing_owner(session: AsyncSession, email: str, *, public_url: str) -> None:
    await enqueue(session, to=email, kind="signup_existing", subject="Someone tried to sign up with your email",
                  body="Hello,\n\nSomeone (perhaps you) tried to create a Metacloud account with this address, "
                       "but you already have one.\n\n"
                       f"Sign in: {public_url}/login\nForgot your password? {public_url}/reset\n\n"
                       "If this was not you, you can ignore this message; nothing was changed.\n")


# --- verification ---------------------------------------------------------------------------------------

async def verify_email(session: AsyncSession, token: str, *, ip: str | None) -> User | None:
    """Mark the token's user verified; ``None`` when the link is unknown, expired or already used."""
    now = utcnow()
    user = await _consume_token(session, token, "verify_email", now)
    if user is None:
        return None
    if user.email_verified_at is None:
        user.email_verified_at = now
        await audit.record(session, action="user.email_verified", actor=_user_principal(user), target_kind="user",
                           target_id=user.id, target_display=user.email, ip=ip)
    return user


async def resend_verification(session: AsyncSession, user_id: uuid.UUID, *, public_url: str) -> None:
    user = await session.get(User, user_id)
    if user is None or user.email_verified_at is not None:
        return
    now = utcnow()
    await ratelimit.check(session, ratelimit.MAILS_PER_ACCOUNT, user.email, now=now,
                          message="We have sent several links already.")
    await ratelimit.hit(session, ratelimit.MAILS_PER_ACCOUNT, user.email, now=now)
    await _mail_verification(session, user, public_url=public_url, now=now)


async def ensure_verified(session: AsyncSession, user_id: uuid.UUID | None) -> None:
    user = await session.get(User, user_id) if user_id else None
    if user is None or user.email_verified_at is None:
        raise PermissionDenied("Verify your email first: open the link we sent you (or ask for a new one).",
                               code="email_unverified")


# --- sign in / out --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoginResult:
    """Either a new session (``token``) or the ``error`` to raise once the transaction has committed
    (failed attempts, lockouts and their mails must be kept, not rolled back with the error)."""

    token: str | None = None
    user_id: uuid.UUID | None = None
    error: DomainError | None = None


async def login(
    session: AsyncSession, *, email: str, password: str, policy: SessionPolicy, ip: str | None,
    user_agent: str | None, current_token: str | None = None, public_url: str,
) -> LoginResult:
    email = normalize_email(email)
    now = utcnow()
    for limit, key, message in (
        (ratelimit.LOGIN_FAILURES_PER_IP, ip or "-", "Too many failed sign-ins from your network."),
        (ratelimit.LOGIN_LOCK, email, "This account is locked after too many failed sign-ins. "
                                      "Reset your password to unlock it now, or wait."),
    ):
        try:
            await ratelimit.check(session, limit, key, now=now, message=message)
        except RateLimited as exc:
            return LoginResult(error=exc)
    user = await _user_by_email(session, email)
    if not await asyncio.to_thread(verify_password, user.password_hash if user else None, password) or user is None:
        await _record_failure(session, email, user, ip=ip, now=now, public_url=public_url)
        return LoginResult(error=Unauthenticated(_BAD_LOGIN, code="bad_credentials"))
    if user.locked_until is not None and user.locked_until > now:
        wait = int((user.locked_until - now).total_seconds()) + 1
        return LoginResult(error=RateLimited("This account is locked for now. Reset your password to unlock it.",
                                             retry_after=wait))
    await ratelimit.clear(session, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email)
    if user.password_hash and password_needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(hash_password, password)
    user.last_login_at = now
    if current_token:  # the browser's previous session ends here: a new id at every sign-in
        await session.execute(update(WebSession).where(WebSession.token_hash == hash_token(current_token),
                                                       WebSession.revoked_at.is_(None)).values(revoked_at=now))
    orgs = await memberships_of(session, user.id)
    token = await create_web_session(session, user, policy=policy, ip=ip, user_agent=user_agent,
                                     active_org_id=orgs[0].id if orgs else None)
    await audit.record(session, action="user.login", actor=_user_principal(user), target_kind="user",
                       target_id=user.id, target_display=email, ip=ip)
    return LoginResult(token=token, user_id=user.id)


async def _record_failure(
    session: AsyncSession, email: str, user: User | None, *, ip: str | None, now: datetime, public_url: str
) -> None:
    await ratelimit.hit(session, ratelimit.LOGIN_FAILURES_PER_IP, ip or "-", now=now)
    await ratelimit.hit(session, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email, now=now)
    await audit.record(session, action="user.login_failed", actor=None, target_kind="user",
                       target_id=user.id if user else None, target_display=email[:320], ip=ip)
    if await ratelimit.retry_after(session, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email, now=now) is None:
        return
    # The 10th failure locks the account, known or not (the same answer for both), for one window.
    await ratelimit.hit(session, ratelimit.LOGIN_LOCK, email, now=now)
    await ratelimit.clear(session, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email)
    if user is None:
        return
    window = ratelimit.LOGIN_LOCK.window
    user.locked_until = now + window
    await audit.record(session, action="user.locked", actor=None, target_kind="user", target_id=user.id,
                       target_display=email, ip=ip,
                       details={"failures": ratelimit.LOGIN_FAILURES_PER_ACCOUNT.max_hits,
                                "minutes": int(window.total_seconds() // 60)})
    await enqueue(session, to=user.email, kind="account_locked", subject="Your Metacloud account was locked",
                  body=f"Hello {user.name},\n\nAfter {ratelimit.LOGIN_FAILURES_PER_ACCOUNT.max_hits} failed "
                       f"sign-in attempts (the last from {ip or 'an unknown address'}), your account is locked "
                       f"for {int(window.total_seconds() // 60)} minutes.\n\n"
                       f"If this was not you, reset your password now; that also unlocks the account:\n"
                       f"{public_url}/reset\n")


async def logout(session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, email: str,
                 ip: str | None) -> None:
    await session.execute(update(WebSession).where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))
    await audit.record(session, action="user.logout", actor=Principal(kind="user", id=str(user_id), display=email),
                       target_kind="user", target_id=user_id, target_display=email, ip=ip)


# --- password reset -------------------------------------------------------------------------------------

async def request_password_reset(session: AsyncSession, *, email: str, public_url: str, ip: str | None) -> None:
    """Mail a one-hour reset link if the account exists; the caller's answer is the same either way."""
    email = normalize_email(email)
    if not _EMAIL.match(email):
        raise InvalidInput("Enter your email.", field_errors={"email": "Enter an email address like ada@example.com."})
    now = utcnow()
    await ratelimit.check(session, ratelimit.REQUESTS_PER_IP, ip or "-", now=now,
                          message="Too many requests from your network.")
    await ratelimit.check(session, ratelimit.MAILS_PER_ACCOUNT, email, now=now,
                          message="We have sent several links to this address already.")
    await ratelimit.hit(session, ratelimit.REQUESTS_PER_IP, ip or "-", now=now)
    await ratelimit.hit(session, ratelimit.MAILS_PER_ACCOUNT, email, now=now)
    user = await _user_by_email(session, email)
    if user is None:
        return
    token = await _issue_token(session, user, "reset_password", RESET_TTL, now)
    await enqueue(session, to=user.email, kind="reset_password", subject="Reset your Metacloud password",
                  body=f"Hello {user.name},\n\nSomeone (hopefully you) asked to reset your password. "
                       f"Choose a new one here (the link works once, for one hour):\n\n"
                       f"{public_url}/reset/confirm?token={token}\n\n"
                       "If you did not ask, ignore this message: your password stays as it is.\n")


async def reset_token_valid(session: AsyncSession, token: str) -> bool:
    row = (
        await session.execute(
            select(OneTimeToken.id).where(OneTimeToken.token_hash == hash_token(token),
                                          OneTimeToken.purpose == "reset_password", OneTimeToken.used_at.is_(None),
                                          OneTimeToken.expires_at > utcnow())
        )
    ).first()
    return row is not None


async def reset_password(
    session: AsyncSession, *, token: str, password: str, ip: str | None, keep_session_id: uuid.UUID | None = None
) -> User:
    """Set a new password from a reset link, sign the user out everywhere else, and unlock the account."""
    now = utcnow()
    user = await _consume_token(session, token, "reset_password", now)
    if user is None:
        raise InvalidInput("This reset link has expired or was already used. Ask for a new one.",
                           field_errors={"token": "This reset link has expired or was already used."},
                           code="invalid_token")
    problem = password_problem(password, user_inputs=[user.email, user.email.partition("@")[0], user.name])
    if problem:
        raise InvalidInput("Choose a stronger password.", field_errors={"password": problem})
    user.password_hash = await asyncio.to_thread(hash_password, password)
    user.locked_until = None
    if user.email_verified_at is None:  # the link reached the mailbox: that verifies it as well
        user.email_verified_at = now
    await ratelimit.clear(session, ratelimit.LOGIN_LOCK, user.email)
    await ratelimit.clear(session, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, user.email)
    # Other reset links die with this one; every other session of the user ends.
    await session.execute(update(OneTimeToken).where(OneTimeToken.user_id == user.id,
                                                     OneTimeToken.purpose == "reset_password",
                                                     OneTimeToken.used_at.is_(None)).values(used_at=now))
    revoke = update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
    if keep_session_id is not None:
        revoke = revoke.where(WebSession.id != keep_session_id)
    await session.execute(revoke.values(revoked_at=now))
    await audit.record(session, action="user.password_reset", actor=_user_principal(user), target_kind="user",
                       target_id=user.id, target_display=user.email, ip=ip)
    return user
