"""The SaaS operator's console: every org and every user, and suspending or restoring an org.

Operators are users with ``is_operator``, made only from the command line (``metacloud
create-operator``), never by signing up. The calls here cross tenants by nature: the caller opens
``unscoped_session`` with a reason and passes the operator's principal (kind ``"operator"``) first;
each call checks it, as services check their scope. Every change of state is audited on the org.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit
from tenants.credentials import Identity
from tenants.db import utcnow
from tenants.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tenants.models import Membership, Org, User
from tenants.scope import Principal
from tenants.security import hash_password

__all__ = [
    "MAX_PAGE",
    "MIN_OPERATOR_PASSWORD",
    "OperatorCreated",
    "OrgSummary",
    "Page",
    "UserSummary",
    "create_operator",
    "list_orgs",
    "list_users",
    "operator_principal",
    "restore_org",
    "suspend_org",
]

MAX_PAGE = 200
# Operators can suspend every org: a longer password than members need.
MIN_OPERATOR_PASSWORD = 12
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class OrgSummary:
    id: uuid.UUID
    slug: str
    name: str
    plan: str
    status: str
    suspended_reason: str | None
    members: int
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserSummary:
    id: uuid.UUID
    email: str
    name: str
    is_operator: bool
    email_verified: bool
    orgs: int
    created_at: datetime
    last_login_at: datetime | None


def operator_principal(identity: Identity) -> Principal:
    """The principal operator actions are recorded under (kind ``"operator"``, not ``"user"``)."""
    if identity.kind != "user" or not identity.is_operator:
        raise NotFound("Not found.")
    return Principal(kind="operator", id=str(identity.user_id), display=identity.email)


def _require_operator(actor: Principal) -> None:
    if actor.kind != "operator":
        raise PermissionDenied("Only platform operators may do this.")


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    return max(1, min(limit, MAX_PAGE)), max(0, offset)


def _contains(q: str) -> str:
    escaped = q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def _count(session: AsyncSession, where: ColumnElement[bool] | None, stmt: Select[int]) -> int:
    if where is not None:
        stmt = stmt.where(where)
    return int((await session.execute(stmt)).scalar_one())


def _summary(org: Org, members: int) -> OrgSummary:
    return OrgSummary(id=org.id, slug=org.slug, name=org.name, plan=org.plan, status=org.status,
                      suspended_reason=org.suspended_reason, members=members, created_at=org.created_at,
                      deleted_at=org.deleted_at)


async def _member_count(session: AsyncSession, org_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(Membership).where(Membership.org_id == org_id)
    return int((await session.execute(stmt)).scalar_one())


async def list_orgs(
    session: AsyncSession, actor: Principal, *, q: str = "", limit: int = 50, offset: int = 0
) -> Page[OrgSummary]:
    """Newest first; ``q`` matches part of the slug or the name."""
    _require_operator(actor)
    limit, offset = _page_bounds(limit, offset)
    where = or_(Org.slug.ilike(_contains(q), escape="\\"), Org.name.ilike(_contains(q), escape="\\")) \
        if q.strip() else None
    counts = select(Membership.org_id, func.count().label("n")).group_by(Membership.org_id).subquery()
    stmt = select(Org, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.org_id == Org.id)
    if where is not None:
        stmt = stmt.where(where)
    rows = (await session.execute(stmt.order_by(Org.created_at.desc(), Org.id).limit(limit).offset(offset))).all()
    total = await _count(session, where, select(func.count()).select_from(Org))
    return Page(items=[_summary(org, int(n)) for org, n in rows], total=total, limit=limit, offset=offset)


async def list_users(
    session: AsyncSession, actor: Principal, *, q: str = "", limit: int = 50, offset: int = 0
) -> Page[UserSummary]:
    """Newest first; ``q`` matches part of the email."""
    _require_operator(actor)
    limit, offset = _page_bounds(limit, offset)
    where = User.email.ilike(_contains(q.lower()), escape="\\") if q.strip() else None
    counts = select(Membership.user_id, func.count().label("n")).group_by(Membership.user_id).subquery()
    stmt = select(User, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.user_id == User.id)
    if where is not None:
        stmt = stmt.where(where)
    rows = (await session.execute(stmt.order_by(User.created_at.desc(), User.id).limit(limit).offset(offset))).all()
    total = await _count(session, where, select(func.count()).select_from(User))
    items = [
        UserSummary(id=u.id, email=u.email, name=u.name, is_operator=u.is_operator,
                    email_verified=u.email_verified_at is not None, orgs=int(n), created_at=u.created_at,
                    last_login_at=u.last_login_at)
        for u, n in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


async def _locked_org(session: AsyncSession, org_id: uuid.UUID) -> Org:
    org = (await session.execute(select(Org).where(Org.id == org_id).with_for_update())).scalar_one_or_none()
    if org is None:
        raise NotFound("No organization with that id.")
    return org


async def suspend_org(
    session: AsyncSession, actor: Principal, org_id: uuid.UUID, *, reason: str, ip: str | None = None
) -> OrgSummary:
    """Members get 403 ``org_suspended`` until an operator restores it; nothing is deleted."""
    _require_operator(actor)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why the organization is suspended.",
                           field_errors={"reason": "Say why: the org's owners will ask."})
    if len(reason) > 500:
        raise InvalidInput("The reason is too long.", field_errors={"reason": "At most 500 characters."})
    org = await _locked_org(session, org_id)
    if org.status == "suspended":
        raise Conflict(f"{org.slug} is already suspended.", code="already_suspended")
    org.status, org.suspended_reason = "suspended", reason
    await session.flush()
    await audit.record(session, action="org.suspended", actor=actor, org_id=org.id, target_kind="org",
                       target_id=org.id, target_display=org.slug, ip=ip, details={"reason": reason})
    return _summary(org, await _member_count(session, org.id))


async def restore_org(
    session: AsyncSession, actor: Principal, org_id: uuid.UUID, *, note: str = "", ip: str | None = None
) -> OrgSummary:
    _require_operator(actor)
    org = await _locked_org(session, org_id)
    if org.status != "suspended":
        raise Conflict(f"{org.slug} is not suspended.", code="not_suspended")
    previous = org.suspended_reason
    org.status, org.suspended_reason = "active", None
    await session.flush()
    details = {"suspended_for": previous or ""} | ({"note": note.strip()[:500]} if note.strip() else {})
    await audit.record(session, action="org.restored", actor=actor, org_id=org.id, target_kind="org",
                       target_id=org.id, target_display=org.slug, ip=ip, details=details)
    return _summary(org, await _member_count(session, org.id))


@dataclass(frozen=True, slots=True)
class OperatorCreated:
    user_id: uuid.UUID
    email: str
    created: bool  # False: an existing user was promoted


async def create_operator(session: AsyncSession, *, email: str, password: str | None) -> OperatorCreated:
    """Create an operator, or promote an existing user (their password is replaced only if one is given).

    Called by the command line only: whoever runs it already holds the database credentials.
    """
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput("That is not an email address.", field_errors={"email": "Enter an email address."})
    if password is not None and len(password) < MIN_OPERATOR_PASSWORD:
        raise InvalidInput(f"An operator's password needs at least {MIN_OPERATOR_PASSWORD} characters.",
                           field_errors={"password": f"At least {MIN_OPERATOR_PASSWORD} characters."})
    user = (await session.execute(select(User).where(User.email == email).with_for_update())).scalar_one_or_none()
    created = user is None
    if user is None:
        if password is None:
            raise InvalidInput("A new operator needs a password.", field_errors={"password": "Required."})
        user = User(email=email, name=email.split("@")[0], email_verified_at=utcnow())
        session.add(user)
    user.is_operator = True
    if password is not None:
        user.password_hash = hash_password(password)
    await session.flush()
    await audit.record(session, action="operator.granted", actor=Principal.system("cli"), target_kind="user",
                       target_id=user.id, target_display=email, details={"created": created})
    return OperatorCreated(user_id=user.id, email=email, created=created)
