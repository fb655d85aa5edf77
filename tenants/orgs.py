"""Organizations: create (with a unique slug and an owner), list a user's, delete softly, restore.

Deleting is soft: ``deleted_at`` is set, the org disappears from every page and API (the guards
answer 404), and an owner can restore it for 30 days. After that ``restore_org`` refuses and the
row is only waiting for a purge task (not written yet) to remove it and everything it owns.

Creating an org and listing a user's orgs cross tenants by nature (a slug is unique across all
orgs; a person's memberships span orgs), so those take an unscoped session; everything done *to*
an org takes its ``TenantScope`` first.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit
from tenants.db import utcnow
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.models import Membership, Org, WebSession
from tenants.permissions import Permission, Role
from tenants.scope import Principal, TenantScope

__all__ = [
    "RESTORE_WINDOW",
    "OrgMembershipView",
    "create_org",
    "default_org_name",
    "delete_org",
    "get_org",
    "memberships_of",
    "restore_org",
    "set_active_org",
    "slugify",
    "unique_slug",
    "validate_org_name",
]

RESTORE_WINDOW = timedelta(days=30)
_SLUG_MAX = 40
_NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class OrgMembershipView:
    id: uuid.UUID
    slug: str
    name: str
    plan: str
    status: str
    role: str
    deleted_at: datetime | None

    @property
    def restorable_until(self) -> datetime | None:
        return self.deleted_at + RESTORE_WINDOW if self.deleted_at else None


def default_org_name(person: str) -> str:
    return f"{person.strip()}'s org"[:_NAME_MAX]


def validate_org_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if len(cleaned) < 2:
        raise InvalidInput("The organization needs a name.", field_errors={"name": "Use at least 2 characters."})
    if len(cleaned) > _NAME_MAX:
        raise InvalidInput("The name is too long.", field_errors={"name": f"Use at most {_NAME_MAX} characters."})
    return cleaned


def slugify(name: str) -> str:
    """``"Ada's Lab (ML)"`` -> ``"adas-lab-ml"``; ASCII letters, digits and single dashes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower().replace("'", "")).strip("-")[:_SLUG_MAX].strip("-")
    return slug if len(slug) >= 2 else "org"


async def unique_slug(session: AsyncSession, name: str) -> str:
    """The slug of ``name``, or with the first free ``-2``, ``-3``... suffix. Needs an unscoped session."""
    base = slugify(name)
    taken = set(
        (await session.execute(select(Org.slug).where((Org.slug == base) | Org.slug.like(f"{base}-%")))).scalars()
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def create_org(
    session: AsyncSession, *, owner_id: uuid.UUID, name: str, actor: Principal | None, ip: str | None
) -> Org:
    """A new org on the Free plan with ``owner_id`` as its owner (unscoped: the slug spans all orgs)."""
    name = validate_org_name(name)
    for _ in range(5):
        slug = await unique_slug(session, name)
        try:
            # A concurrent create may take the same slug between our check and insert: retry with the next.
            async with session.begin_nested():
                org = Org(slug=slug, name=name, plan="free", status="active")
                session.add(org)
                await session.flush()
        except IntegrityError:
            continue
        session.add(Membership(org_id=org.id, user_id=owner_id, role=Role.OWNER.value))
        await audit.record(session, action="org.created", actor=actor, org_id=org.id, target_kind="org",
                           target_id=org.id, target_display=org.slug, ip=ip, details={"name": name})
        return org
    raise Conflict("Could not find a free address for this organization; try another name.")


async def memberships_of(
    session: AsyncSession, user_id: uuid.UUID, *, include_deleted: bool = False
) -> list[OrgMembershipView]:
    """The orgs ``user_id`` belongs to, oldest membership first (unscoped: they span tenants)."""
    query = (
        select(Org, Membership.role)
        .join(Membership, Membership.org_id == Org.id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.created_at, Org.slug)
    )
    if not include_deleted:
        query = query.where(Org.deleted_at.is_(None))
    return [
        OrgMembershipView(id=o.id, slug=o.slug, name=o.name, plan=o.plan, status=o.status, role=role,
                          deleted_at=o.deleted_at)
        for o, role in (await session.execute(query)).all()
    ]


async def get_org(scope: TenantScope, session: AsyncSession) -> Org:
    scope.require(Permission.ORG_READ)
    org = await session.get(Org, scope.org_id)
    if org is None:
        raise NotFound("Organization not found.")
    return org


async def delete_org(scope: TenantScope, session: AsyncSession, *, ip: str | None = None) -> Org:
    """Soft delete: restorable by an owner for ``RESTORE_WINDOW``."""
    scope.require(Permission.ORG_DELETE)
    org = await get_org(scope, session)
    if org.deleted_at is None:
        org.deleted_at = utcnow()
        await audit.record(session, action="org.deleted", actor=scope.principal, org_id=org.id, target_kind="org",
                           target_id=org.id, target_display=org.slug, ip=ip)
    return org


async def restore_org(scope: TenantScope, session: AsyncSession, *, ip: str | None = None) -> Org:
    scope.require(Permission.ORG_DELETE)
    org = await get_org(scope, session)
    if org.deleted_at is None:
        return org  # nothing to do: restoring twice is harmless
    if utcnow() - org.deleted_at > RESTORE_WINDOW:
        raise NotFound("This organization was deleted more than 30 days ago and can no longer be restored.")
    org.deleted_at = None
    await audit.record(session, action="org.restored", actor=scope.principal, org_id=org.id, target_kind="org",
                       target_id=org.id, target_display=org.slug, ip=ip)
    return org


async def set_active_org(scope: TenantScope, session: AsyncSession, *, web_session_id: uuid.UUID) -> None:
    """Remember ``scope``'s org as the browser session's current org (the landing page goes there)."""
    scope.require(Permission.ORG_READ)
    await session.execute(update(WebSession).where(WebSession.id == web_session_id)
                          .values(active_org_id=scope.org_id))
