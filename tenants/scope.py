"""The tenant scope: which org a call acts on, who acts, and what they may do.

Built by the gateway from the URL and the authenticated principal (or by a workflow activity from
its input) and passed as the first argument to every service call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tenants.errors import PermissionDenied

__all__ = ["Principal", "TenantScope"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a user, an API key, an agent, or the system (workflows, sweeps)."""

    kind: str  # "user" | "api_key" | "agent" | "system" | "operator"
    id: str
    display: str = ""

    @classmethod
    def system(cls, what: str) -> Principal:
        return cls(kind="system", id=what, display=what)


@dataclass(frozen=True, slots=True)
class TenantScope:
    org_id: uuid.UUID
    principal: Principal
    org_slug: str = ""
    role: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)

    def can(self, permission: str) -> bool:
        return self.principal.kind == "system" or permission in self.permissions

    def require(self, permission: str) -> None:
        """Services check too: workflows call them without HTTP guards in front."""
        if not self.can(permission):
            raise PermissionDenied(f"your role does not allow {permission!r} in this organization")

    @classmethod
    def for_system(cls, org_id: uuid.UUID, what: str) -> TenantScope:
        return cls(org_id=org_id, principal=Principal.system(what))
