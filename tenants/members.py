"""Members of an org: list them, change roles, remove them, leave.

Two rules hold whatever the caller:

* a role can be granted (or taken away) only by someone whose own role covers it
  (``tenants.permissions.role_within``), and the owner role needs ``owners:manage``;
* an org always keeps at least one owner. Every change that could take the last owner away first
  locks the org's owner memberships (``SELECT ... FOR UPDATE``), so two owners demoting each other
  at the same moment cannot both succeed.

A member who is removed or leaves loses the API keys they created in the org (revoked, audited):
a key must not outlive its creator's access.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit
from tenants.db import utcnow
from tenants.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tenants.models import ApiKey, Membership, User
from tenants.permissions import Permission, Role, role_within
from tenants.scope import TenantScope

__all__ = [
    "LAST_OWNER_MESSAGE",
    "MemberView",
    "acting_user_id",
    "change_role",
    "check_role",
    "leave_org",
    "list_members",
    "may_grant",
    "remove_member",
    "require_grantable",
]

LAST_OWNER_MESSAGE = (
    "An organization must keep at least one owner. Make someone else an owner first."
)
_NO_MEMBER = "No such member in this organization."


@dataclass(frozen=True, slots=True)
class MemberView:
    id: uuid.UUID  # the membership id (what the API addresses)
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


def check_role(role: str, *, field: str = "role") -> str:
    """The role as a ``Role`` value, or InvalidInput naming the field."""
    try:
        return Role(role.strip().lower()).value
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidInput(f"Unknown role {role!r}.", field_errors={field: f"Choose one of: {choices}."}) from None


def may_grant(scope: TenantScope, role: str) -> bool:
    """Whether the caller's own role covers ``role`` (system callers are trusted)."""
    return scope.principal.kind == "system" or role_within(scope.role or "", role)


def require_grantable(scope: TenantScope, role: str) -> None:
    """PermissionDenied unless the caller may hand out (or take away) ``role``."""
    if role == Role.OWNER.value:
        scope.require(Permission.OWNERS_MANAGE)
    if not may_grant(scope, role):
        raise PermissionDenied(
            f"Your role ({scope.role}) cannot grant or take away the {role!r} role: "
            "it has permissions yours does not."
        )


async def acting_user_id(session: AsyncSession, scope: TenantScope) -> uuid.UUID | None:
    """The person behind the call: the signed-in user, or the creator of the API key in use."""
    if scope.principal.kind == "user":
        return uuid.UUID(scope.principal.id)
    if scope.principal.kind == "api_key":
        created_by: uuid.UUID | None = (
            await session.execute(select(ApiKey.created_by).where(ApiKey.id == uuid.UUID(scope.principal.id)))
        ).scalar_one_or_none()
        return created_by
    return None


async def list_members(session: AsyncSession, scope: TenantScope) -> list[MemberView]:
    scope.require(Permission.MEMBERS_READ)
    rows = await session.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == scope.org_id)
        .order_by(User.email)
    )
    return [_view(m, u) for m, u in rows]


def _view(m: Membership, u: User) -> MemberView:
    return MemberView(id=m.id, user_id=u.id, email=u.email, name=u.name, role=m.role, joined_at=m.created_at)


async def _lock_owners(session: AsyncSession, scope: TenantScope) -> set[uuid.UUID]:
    """Lock the org's owner memberships and return their ids.

    Locked in id order so concurrent callers queue instead of deadlocking; a caller that waited
    re-reads the rows, so an owner demoted meanwhile no longer counts.
    """
    ids = await session.execute(
        select(Membership.id)
        .where(Membership.org_id == scope.org_id, Membership.role == Role.OWNER.value)
        .order_by(Membership.id)
        .with_for_update()
    )
    return set(ids.scalars())


async def _locked_member(session: AsyncSession, scope: TenantScope, member_id: uuid.UUID) -> tuple[Membership, User]:
    row = (
        await session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == scope.org_id, Membership.id == member_id)
            .with_for_update(of=Membership)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        raise NotFound(_NO_MEMBER)
    return row


def _ensure_not_last_owner(member: Membership, owners: set[uuid.UUID]) -> None:
    """``owners``: the ids ``_lock_owners`` returned, read under the lock."""
    if member.role == Role.OWNER.value and owners <= {member.id}:
        raise Conflict(LAST_OWNER_MESSAGE, code="last_owner")


async def change_role(
    session: AsyncSession, scope: TenantScope, member_id: uuid.UUID, role: str, *, ip: str | None = None
) -> MemberView:
    """Give a member another role. Demoting the last owner is a Conflict."""
    scope.require(Permission.MEMBERS_MANAGE)
    new_role = check_role(role)
    # Lock owners before the target row: the same order as every other path, so no deadlock.
    owners = await _lock_owners(session, scope)
    member, user = await _locked_member(session, scope, member_id)
    require_grantable(scope, member.role)  # may the caller touch this member at all?
    require_grantable(scope, new_role)
    if member.role == new_role:
        return _view(member, user)
    _ensure_not_last_owner(member, owners)
    old_role = member.role
    member.role = new_role
    await session.flush()
    await audit.record(
        session,
        action="member.role_changed",
        actor=scope.principal,
        org_id=scope.org_id,
        target_kind="member",
        target_id=user.id,
        target_display=user.email,
        ip=ip,
        details={"from": old_role, "to": new_role},
    )
    return _view(member, user)


async def remove_member(
    session: AsyncSession, scope: TenantScope, member_id: uuid.UUID, *, ip: str | None = None
) -> None:
    """Take someone out of the org (their API keys here are revoked). The last owner stays."""
    scope.require(Permission.MEMBERS_MANAGE)
    owners = await _lock_owners(session, scope)
    member, user = await _locked_member(session, scope, member_id)
    require_grantable(scope, member.role)
    _ensure_not_last_owner(member, owners)
    await _drop(session, scope, member, user, action="member.removed", ip=ip)


async def leave_org(session: AsyncSession, scope: TenantScope, *, ip: str | None = None) -> None:
    """The caller leaves the org. The last owner cannot: hand ownership over first."""
    if scope.principal.kind != "user":
        raise InvalidInput("Only a person can leave an organization. To stop an API key, revoke it.",
                           code="not_a_user")
    user_id = uuid.UUID(scope.principal.id)
    owners = await _lock_owners(session, scope)
    member_id = (
        await session.execute(
            select(Membership.id).where(Membership.org_id == scope.org_id, Membership.user_id == user_id)
        )
    ).scalar_one_or_none()
    if member_id is None:
        raise NotFound(_NO_MEMBER)
    member, user = await _locked_member(session, scope, member_id)
    _ensure_not_last_owner(member, owners)
    await _drop(session, scope, member, user, action="member.left", ip=ip)


async def _drop(
    session: AsyncSession, scope: TenantScope, member: Membership, user: User, *, action: str, ip: str | None
) -> None:
    role = member.role
    await session.delete(member)
    await session.flush()
    await audit.record(
        session,
        action=action,
        actor=scope.principal,
        org_id=scope.org_id,
        target_kind="member",
        target_id=user.id,
        target_display=user.email,
        ip=ip,
        details={"role": role},
    )
    revoked = await session.execute(
        update(ApiKey)
        .where(ApiKey.org_id == scope.org_id, ApiKey.created_by == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiKey.id, ApiKey.prefix)
    )
    for key_id, prefix in revoked:
        await audit.record(
            session,
            action="api_key.revoked",
            actor=scope.principal,
            org_id=scope.org_id,
            target_kind="api_key",
            target_id=key_id,
            target_display=prefix,
            ip=ip,
            details={"reason": f"creator {action.split('.')[1]}"},
        )
