"""Roles and permissions: the one source of the permission matrix.

``docs/permissions.md`` is generated from ``MATRIX`` (``python -m tenants.permissions``) and a test
checks that the two agree, so the documented matrix is always the enforced one.
"""

from __future__ import annotations

import sys
from enum import StrEnum

__all__ = ["MATRIX", "ROLE_RANK", "Permission", "Role", "permissions_for", "render_markdown"]


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    BILLING = "billing"
    MEMBER = "member"
    VIEWER = "viewer"


class Permission(StrEnum):
    ORG_READ = "org:read"
    ORG_MANAGE = "org:manage"
    ORG_DELETE = "org:delete"
    MEMBERS_READ = "members:read"
    MEMBERS_MANAGE = "members:manage"
    OWNERS_MANAGE = "owners:manage"
    INVITES_MANAGE = "invites:manage"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_MANAGE = "api_keys:manage"
    API_KEYS_MANAGE_ALL = "api_keys:manage_all"
    SSO_READ = "sso:read"
    SSO_MANAGE = "sso:manage"
    AUDIT_READ = "audit:read"
    POLICIES_MANAGE = "policies:manage"
    CLUSTERS_READ = "clusters:read"
    CLUSTERS_MANAGE = "clusters:manage"
    JOBS_READ = "jobs:read"
    JOBS_SUBMIT = "jobs:submit"
    JOBS_MANAGE_ALL = "jobs:manage_all"
    USAGE_READ = "usage:read"
    BILLING_READ = "billing:read"
    BILLING_MANAGE = "billing:manage"


P = Permission
_VIEW = {P.ORG_READ, P.MEMBERS_READ, P.CLUSTERS_READ, P.JOBS_READ, P.USAGE_READ}
_MEMBER = _VIEW | {P.JOBS_SUBMIT, P.API_KEYS_READ, P.API_KEYS_MANAGE}
_BILLING = _VIEW | {P.BILLING_READ, P.BILLING_MANAGE, P.API_KEYS_READ, P.API_KEYS_MANAGE}
_ADMIN = (
    _MEMBER
    | _BILLING
    | {
        P.ORG_MANAGE,
        P.MEMBERS_MANAGE,
        P.INVITES_MANAGE,
        P.API_KEYS_MANAGE_ALL,
        P.SSO_READ,
        P.SSO_MANAGE,
        P.AUDIT_READ,
        P.POLICIES_MANAGE,
        P.CLUSTERS_MANAGE,
        P.JOBS_MANAGE_ALL,
    }
)
_OWNER = _ADMIN | {P.ORG_DELETE, P.OWNERS_MANAGE}

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(_OWNER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.BILLING: frozenset(_BILLING),
    Role.MEMBER: frozenset(_MEMBER),
    Role.VIEWER: frozenset(_VIEW),
}

# For "no higher than": a key or invite may carry a role whose permissions are a subset of the granter's.
ROLE_RANK: dict[Role, int] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.BILLING: 1, Role.ADMIN: 2, Role.OWNER: 3}


def permissions_for(role: str) -> frozenset[str]:
    try:
        return frozenset(str(p) for p in MATRIX[Role(role)])
    except ValueError:
        return frozenset()


def role_within(granter: str, granted: str) -> bool:
    """A granter may hand out a role only if every permission of it is one the granter has.

    An unknown role is never within: its empty permission set must not pass as "less than yours".
    """
    if granted not in Role._value2member_map_:
        return False
    return permissions_for(granted) <= permissions_for(granter)


_DESCRIPTIONS: dict[Permission, str] = {
    P.ORG_READ: "see the organization",
    P.ORG_MANAGE: "rename the organization, change settings",
    P.ORG_DELETE: "delete (and restore) the organization",
    P.MEMBERS_READ: "list members and their roles",
    P.MEMBERS_MANAGE: "change roles, remove members",
    P.OWNERS_MANAGE: "grant or remove the owner role",
    P.INVITES_MANAGE: "invite people, revoke invites",
    P.API_KEYS_READ: "list API keys",
    P.API_KEYS_MANAGE: "create API keys, revoke the ones you created",
    P.API_KEYS_MANAGE_ALL: "revoke anyone's API keys",
    P.SSO_READ: "see SSO settings",
    P.SSO_MANAGE: "configure SSO",
    P.AUDIT_READ: "read the audit log",
    P.POLICIES_MANAGE: "edit governance policies",
    P.CLUSTERS_READ: "see clusters",
    P.CLUSTERS_MANAGE: "connect, detach clusters",
    P.JOBS_READ: "see jobs",
    P.JOBS_SUBMIT: "submit and cancel own jobs",
    P.JOBS_MANAGE_ALL: "cancel anyone's jobs",
    P.USAGE_READ: "see usage",
    P.BILLING_READ: "see invoices and plan",
    P.BILLING_MANAGE: "change plan and payment method",
}


def render_markdown() -> str:
    roles = list(Role)
    lines = [
        "# Roles and permissions",
        "",
        "Generated from `tenants/permissions.py` by `python -m tenants.permissions`; a test keeps them equal.",
        "",
        "| permission | meaning | " + " | ".join(r.value for r in roles) + " |",
        "|---|---|" + "|".join(":-:" for _ in roles) + "|",
    ]
    for perm in Permission:
        marks = " | ".join("yes" if perm in MATRIX[r] else "" for r in roles)
        lines.append(f"| `{perm.value}` | {_DESCRIPTIONS[perm]} | {marks} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
