"""Governance policies of an org: who may run what, where. Read and replaced as a set by admins,
resolved per submitter (member rule, else role rule, else org rule, else no restriction), enforced at
submission (``check_submission``: a 403 naming the rule) and at placement (``PolicyRules``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.server.jobs.models import GovernancePolicy
from connectors.server.jobs.placement import PolicyRules
from connectors.server.jobs.reasons import fmt_cpu, fmt_memory
from connectors.server.jobs.spec import ValidJob
from connectors.server.models import Cluster
from tenants import audit
from tenants.db import utcnow
from tenants.errors import InvalidInput, PermissionDenied
from tenants.members import acting_user_id
from tenants.models import Membership, User
from tenants.permissions import Permission, Role
from tenants.scope import TenantScope

__all__ = [
    "PolicyInput",
    "PolicyView",
    "check_submission",
    "effective_policy",
    "list_policies",
    "member_emails",
    "policies_for_orgs",
    "replace_policies",
    "resolve",
    "rules_of",
]

SUBJECT_KINDS = ("org", "role", "member")


@dataclass(frozen=True, slots=True)
class PolicyInput:
    subject_kind: str  # org | role | member
    subject: str = ""  # role name; member: user id or email
    allowed_clusters: list[str] | None = None
    allowed_regions: list[str] | None = None
    gpus_allowed: bool = True
    max_cpu_millis: int | None = None
    max_memory_bytes: int | None = None
    max_gpus: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyView:
    id: uuid.UUID
    subject_kind: str
    subject: str
    subject_display: str  # the member's email, the role, or "everyone"
    allowed_clusters: list[str] | None
    allowed_regions: list[str] | None
    gpus_allowed: bool
    max_cpu_millis: int | None
    max_memory_bytes: int | None
    max_gpus: int | None


def _source(kind: str, display: str) -> str:
    if kind == "member":
        return f"the policy for {display}"
    if kind == "role":
        return f"the policy for role {display!r}"
    return "the org policy"


def rules_of(p: GovernancePolicy, display: str | None = None) -> PolicyRules:
    return PolicyRules(
        source=_source(p.subject_kind, display or p.subject),
        allowed_clusters=None if p.allowed_clusters is None else frozenset(p.allowed_clusters),
        allowed_regions=None if p.allowed_regions is None else frozenset(p.allowed_regions),
        gpus_allowed=p.gpus_allowed, max_cpu_millis=p.max_cpu_millis, max_memory_bytes=p.max_memory_bytes,
        max_gpus=p.max_gpus,
    )


async def list_policies(scope: TenantScope, session: AsyncSession) -> list[PolicyView]:
    scope.require(Permission.JOBS_READ)
    policies = (await session.execute(select(GovernancePolicy).where(GovernancePolicy.org_id == scope.org_id))
                ).scalars().all()
    emails = await member_emails(session, [p.subject for p in policies if p.subject_kind == "member"])
    order = {k: i for i, k in enumerate(SUBJECT_KINDS)}
    return sorted((_view(p, emails) for p in policies), key=lambda v: (order[v.subject_kind], v.subject_display))


async def member_emails(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    uuids = [uuid.UUID(i) for i in ids if _is_uuid(i)]
    if not uuids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(uuids)))
    return {str(i): e for i, e in rows.all()}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _view(p: GovernancePolicy, emails: dict[str, str]) -> PolicyView:
    display = {"org": "everyone", "role": p.subject}.get(p.subject_kind) or emails.get(p.subject, p.subject)
    return PolicyView(id=p.id, subject_kind=p.subject_kind, subject=p.subject, subject_display=display,
                      allowed_clusters=p.allowed_clusters, allowed_regions=p.allowed_regions,
                      gpus_allowed=p.gpus_allowed, max_cpu_millis=p.max_cpu_millis,
                      max_memory_bytes=p.max_memory_bytes, max_gpus=p.max_gpus)


async def _member_id(session: AsyncSession, org_id: uuid.UUID, subject: str) -> uuid.UUID | None:
    query = select(Membership.user_id).join(User, User.id == Membership.user_id).where(Membership.org_id == org_id)
    query = query.where(User.id == uuid.UUID(subject)) if _is_uuid(subject) else \
        query.where(User.email == subject.strip().lower())
    found: uuid.UUID | None = (await session.execute(query)).scalar_one_or_none()
    return found


def _clean_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return sorted({v.strip() for v in values if v and v.strip()})


async def replace_policies(scope: TenantScope, session: AsyncSession, rules: Sequence[PolicyInput], *,
                           ip: str | None = None) -> list[PolicyView]:
    """Replace the org's whole rule set (what the API's PUT and the page's save do)."""
    scope.require(Permission.POLICIES_MANAGE)
    errors: dict[str, str] = {}
    rows: list[GovernancePolicy] = []
    seen: set[tuple[str, str]] = set()
    actor = await acting_user_id(session, scope)
    now = utcnow()
    for i, rule in enumerate(rules):
        at = f"policies[{i}]"
        subject = rule.subject.strip()
        if rule.subject_kind not in SUBJECT_KINDS:
            errors[f"{at}.subject_kind"] = "choose org, role or member"
            continue
        if rule.subject_kind == "org":
            subject = ""
        elif rule.subject_kind == "role" and subject not in Role._value2member_map_:
            errors[f"{at}.subject"] = "choose a role: " + ", ".join(r.value for r in Role)
            continue
        elif rule.subject_kind == "member":
            member = await _member_id(session, scope.org_id, subject)
            if member is None:
                errors[f"{at}.subject"] = f"{subject!r} is not a member of this organization"
                continue
            subject = str(member)
        for key, value in (("max_cpu", rule.max_cpu_millis), ("max_memory", rule.max_memory_bytes),
                           ("max_gpus", rule.max_gpus)):
            if value is not None and value < 0:
                errors[f"{at}.{key}"] = "must be 0 or more (leave empty for no limit)"
        if (rule.subject_kind, subject) in seen:
            errors[f"{at}.subject"] = "there is already a rule for this subject"
            continue
        seen.add((rule.subject_kind, subject))
        rows.append(GovernancePolicy(
            org_id=scope.org_id, subject_kind=rule.subject_kind, subject=subject,
            allowed_clusters=_clean_list(rule.allowed_clusters), allowed_regions=_clean_list(rule.allowed_regions),
            gpus_allowed=rule.gpus_allowed, max_cpu_millis=rule.max_cpu_millis,
            max_memory_bytes=rule.max_memory_bytes, max_gpus=rule.max_gpus, updated_at=now, updated_by=actor))
    if errors:
        raise InvalidInput("The policies have problems: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
                           field_errors=errors)
    await session.execute(delete(GovernancePolicy).where(GovernancePolicy.org_id == scope.org_id))
    session.add_all(rows)
    await session.flush()
    await audit.record(session, action="policies.updated", actor=scope.principal, org_id=scope.org_id,
                       target_kind="governance_policies", target_id=str(scope.org_id), ip=ip,
                       details={"rules": len(rows)})
    return await list_policies(scope, session)


def resolve(policies: Iterable[GovernancePolicy], user_id: uuid.UUID | None, role: str | None,
            emails: dict[str, str] | None = None) -> PolicyRules | None:
    """The most specific rule: the member's, else the role's, else the org's; ``None`` = unrestricted."""
    by_subject = {(p.subject_kind, p.subject): p for p in policies}
    for kind, subject in (("member", str(user_id) if user_id else None), ("role", role), ("org", "")):
        if subject is None:
            continue
        found = by_subject.get((kind, subject))
        if found is not None:
            return rules_of(found, (emails or {}).get(found.subject))
    return None


async def effective_policy(scope: TenantScope, session: AsyncSession) -> PolicyRules | None:
    """The rules that apply to the caller right now."""
    user_id = await acting_user_id(session, scope)
    policies = (await session.execute(select(GovernancePolicy).where(GovernancePolicy.org_id == scope.org_id))
                ).scalars().all()
    emails = await member_emails(session, [str(user_id)] if user_id else [])
    return resolve(policies, user_id, scope.role, emails)


async def policies_for_orgs(session: AsyncSession, org_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID,
                                                                                            list[GovernancePolicy]]:
    """Every rule of several orgs (the scheduler resolves them per job)."""
    ids = list(set(org_ids))
    result: dict[uuid.UUID, list[GovernancePolicy]] = {}
    if not ids:
        return result
    for p in (await session.execute(select(GovernancePolicy).where(GovernancePolicy.org_id.in_(ids)))).scalars():
        result.setdefault(p.org_id, []).append(p)
    return result


def _denied(rules: PolicyRules, rule: str, message: str) -> PermissionDenied:
    return PermissionDenied(f"Governance policy: {message} ({rules.source}, rule {rule}).", code="policy_denied",
                            rule=rule, policy=rules.source)


async def check_submission(session: AsyncSession, rules: PolicyRules | None, job: ValidJob) -> None:
    """Refuse what the policy can never allow, naming the rule. Clusters that merely lack room are not
    refused here: the job waits with a reason."""
    if rules is None:
        return
    if job.gpus and not rules.gpus_allowed:
        raise _denied(rules, "gpus_allowed", "GPU jobs are not allowed for you")
    if rules.max_cpu_millis is not None and job.cpu_millis > rules.max_cpu_millis:
        raise _denied(rules, "max_cpu", f"at most {fmt_cpu(rules.max_cpu_millis)} vCPU per job; this job asks "
                                        f"{fmt_cpu(job.cpu_millis)}")
    if rules.max_memory_bytes is not None and job.memory_bytes > rules.max_memory_bytes:
        raise _denied(rules, "max_memory", f"at most {fmt_memory(rules.max_memory_bytes)} memory per job; this "
                                           f"job asks {fmt_memory(job.memory_bytes)}")
    if rules.max_gpus is not None and job.gpus > rules.max_gpus:
        raise _denied(rules, "max_gpus", f"at most {rules.max_gpus} GPUs per job; this job asks {job.gpus}")
    mode = job.placement["mode"]
    if mode == "region" and rules.allowed_regions is not None and job.placement["region"] not in rules.allowed_regions:
        raise _denied(rules, "allowed_regions", f"region {job.placement['region']!r} is not allowed (allowed: "
                                                f"{', '.join(sorted(rules.allowed_regions)) or 'none'})")
    if mode == "cluster" and (rules.allowed_clusters is not None or rules.allowed_regions is not None):
        wanted = job.placement["cluster"]
        query = select(Cluster).where(Cluster.name == wanted)
        if _is_uuid(wanted):
            query = select(Cluster).where((Cluster.id == uuid.UUID(wanted)) | (Cluster.name == wanted))
        cluster = (await session.execute(query)).scalars().first()
        if cluster is not None and rules.allowed_clusters is not None and \
                not {str(cluster.id), cluster.name} & rules.allowed_clusters:
            raise _denied(rules, "allowed_clusters", f"cluster {cluster.name!r} is not allowed (allowed: "
                                                     f"{', '.join(sorted(rules.allowed_clusters)) or 'none'})")
        if cluster is not None and rules.allowed_regions is not None and cluster.region not in rules.allowed_regions:
            raise _denied(rules, "allowed_regions", f"cluster {cluster.name!r} is in region {cluster.region!r}, "
                                                    "which is not allowed")
