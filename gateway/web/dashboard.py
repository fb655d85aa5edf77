"""The monitoring dashboard pages: an org's (``/orgs/{org}/dashboard``) and the operator's
(``/operator/dashboard``).

Complete without JavaScript: the numbers, the bars (inline SVG: the CSP forbids inline styles, an SVG
``width`` attribute is not a style) and the job lists are rendered here. ``/static/dashboard.js``
then polls the dashboard JSON every 4 s and updates numbers, bars and heartbeat ages in place; when
the set of jobs or clusters changed it re-reads this page and swaps the lists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath
from litestar.response import Template

from gateway.api import dashboard_data as d
from gateway.api.dashboard import (
    DashboardAmount,
    DashboardCpu,
    OrgDashboard,
    load_operator_dashboard,
    load_org_dashboard,
)
from gateway.auth import require, require_operator
from gateway.deps import CurrentIdentity, Runtime, Sessions, Tenant
from gateway.web.context import page_context
from tenants.db import tenant_session, utcnow
from tenants.permissions import Permission

__all__ = ["DASHBOARD_PAGE_ROUTES", "fmt_bytes", "fmt_cpu", "meter", "since"]

GiB = 1 << 30
TiB = 1 << 40
_PAGE: dict[str, Any] = {"include_in_schema": False, "cache_control": CacheControlHeader(no_store=True)}


def fmt_cpu(v: float) -> str:
    return f"{v:.1f}".removesuffix(".0")


def fmt_bytes(n: int) -> str:
    if n >= TiB:
        return f"{n / TiB:.1f}".removesuffix(".0") + " TiB"
    return f"{n / GiB:.1f}".removesuffix(".0") + " GiB"


def _unit_text(unit: str, v: float) -> tuple[str, str]:
    if unit == "cpu":
        return fmt_cpu(v), "vCPU"
    if unit == "bytes":
        num, _, suffix = fmt_bytes(int(v)).partition(" ")
        return num, suffix
    return str(int(v)), "GPUs" if unit == "gpus" else ""


def meter(assigned: float, total: float, unit: str) -> dict[str, Any]:
    """What a bar shows: "6 of 8 vCPU", the filled percentage and a level for its colour."""
    pct = 0 if total <= 0 else min(100, round(100 * assigned / total))
    a_num, a_unit = _unit_text(unit, assigned)
    t_num, t_unit = _unit_text(unit, total)
    text = f"{a_num} of {t_num} {t_unit}" if a_unit == t_unit else f"{a_num} {a_unit} of {t_num} {t_unit}"
    level = "full" if pct >= 90 else "high" if pct >= 70 else "ok"
    return {"pct": pct, "level": level, "text": text.strip()}


def _m(a: DashboardAmount | DashboardCpu, unit: str) -> dict[str, Any]:
    return meter(a.assigned, a.total, unit)


def since(at: datetime | None, now: datetime) -> str:
    """``"12 s ago"``, ``"5 min ago"``, ``"3 h ago"``; ``"never"``."""
    if at is None:
        return "never"
    secs = max(0, int((now - at).total_seconds()))
    if secs < 120:
        return f"{secs} s ago"
    if secs < 7200:
        return f"{secs // 60} min ago"
    if secs < 172800:
        return f"{secs // 3600} h ago"
    return f"{secs // 86400} d ago"


def _job(j: d.JobLine, now: datetime) -> dict[str, Any]:
    gpus = f"{j.gpus} x {j.gpu_type}" if j.gpus and j.gpu_type else str(j.gpus)
    return {"id": j.id, "name": j.name, "state": j.state, "reason": j.reason, "cluster": j.cluster_name or "—",
            "resources": f"{fmt_cpu(j.cpu_millis / 1000)} vCPU · {fmt_bytes(j.memory_bytes)} · {gpus} GPU",
            "priority": j.priority, "since": since(j.started_at or j.created_at, now)}


def _plan(board: OrgDashboard, plan: d.PlanFigures) -> dict[str, Any]:
    """"Free plan: 6 of 8 vCPU, 10 of 16 GiB, no GPUs", with a bar for every capped resource."""
    caps, used = board.plan.caps, board.plan.in_use
    parts: list[dict[str, Any]] = []
    for key, label, cap, in_use, unit in (("cpu", "CPU", caps.cpu, used.cpu, "cpu"),
                                          ("memory_bytes", "Memory", caps.memory_bytes, used.memory_bytes, "bytes"),
                                          ("gpus", "GPUs", caps.gpus, used.gpus, "gpus")):
        if cap is None:
            a_num, a_unit = _unit_text(unit, in_use)
            parts.append({"key": key, "label": label, "meter": None, "text": f"{a_num} {a_unit} (no cap)"})
        elif cap == 0:
            parts.append({"key": key, "label": label, "meter": None, "text": f"no {label if key == 'gpus' else label.lower()}"})
        else:
            parts.append({"key": key, "label": label, "meter": meter(in_use, cap, unit), "text": ""})
    summary = ", ".join(p["meter"]["text"] if p["meter"] else p["text"] for p in parts if p["meter"] or p["key"] == "gpus")
    capped = any(p["meter"] for p in parts)
    return {"title": plan.title, "name": plan.name, "parts": parts, "capped": capped,
            "summary": f"{plan.title} plan: " + (summary if capped else "no caps"),
            "upgrade_url": plan.upgrade_url if plan.name == "free" else None}


def _org_view(board: OrgDashboard, now: datetime) -> dict[str, Any]:
    total_types: dict[str, list[int]] = {}
    clusters = []
    for c in board.resources.clusters:
        for gpu_type, a in c.gpus_by_type.items():
            if c.state == "attached":
                slot = total_types.setdefault(gpu_type, [0, 0])
                slot[0] += a.assigned
                slot[1] += a.total
        clusters.append({
            "id": str(c.id), "name": c.name, "state": c.state, "heartbeat": since(c.last_heartbeat_at, now),
            "cpu": _m(c.cpu, "cpu"), "memory": _m(c.memory_bytes, "bytes"), "gpus": _m(c.gpus, "gpus"),
            "storage": _m(c.storage_bytes, "bytes"),
            "gpu_types": [{"type": k, "meter": _m(v, "gpus")} for k, v in sorted(c.gpus_by_type.items())],
        })
    t = board.resources.total
    return {
        "total": {"cpu": _m(t.cpu, "cpu"), "memory": _m(t.memory_bytes, "bytes"), "gpus": _m(t.gpus, "gpus"),
                  "storage": _m(t.storage_bytes, "bytes"),
                  "gpu_types": [{"type": k, "meter": meter(v[0], v[1], "gpus")} for k, v in sorted(total_types.items())]},
        "clusters": clusters,
    }


@get("/orgs/{org:str}/dashboard", guards=[require(Permission.JOBS_READ)], **_PAGE)
async def org_dashboard_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                             runtime: Runtime) -> Template:
    board, plan = await load_org_dashboard(runtime, tenant)
    async with tenant_session(runtime.sessions, tenant) as s:
        active = await d.job_lines(s, tenant.org_id, d.RUNNING)
        pending = await d.job_lines(s, tenant.org_id, d.WAITING)
    now = utcnow()
    context = await page_context(
        request, tenant=tenant, board=board, view=_org_view(board, now), plan=_plan(board, plan),
        active_jobs=[_job(j, now) for j in active], pending_jobs=[_job(j, now) for j in pending],
        can_submit=tenant.can(Permission.JOBS_SUBMIT), can_clusters=tenant.can(Permission.CLUSTERS_READ),
        api_url=f"/api/v1/orgs/{tenant.org_slug}/dashboard", now=now,
    )
    return Template(template_name="dashboard/org.html", context=context)


@get("/operator/dashboard", guards=[require_operator], **_PAGE)
async def operator_dashboard_page(request: Request[Any, Any, Any], identity: CurrentIdentity,
                                  sessions: Sessions) -> Template:
    board = await load_operator_dashboard(sessions, identity)
    now = utcnow()
    t = board.resources
    usage = [{"rows": [{"slug": u.slug, "name": u.name, "plan": u.plan, "cpu": fmt_cpu(u.cpu),
                        "memory": fmt_bytes(u.memory_bytes), "gpus": u.gpus, "active": u.active_jobs,
                        "pending": u.pending_jobs} for u in rows], "title": title}
             for title, rows in (("CPU", board.top_orgs_by_cpu), ("GPUs", board.top_orgs_by_gpu))]
    context = await page_context(
        request, board=board, now=now, api_url="/api/v1/operator/dashboard",
        total={"cpu": _m(t.cpu, "cpu"), "memory": _m(t.memory_bytes, "bytes"), "gpus": _m(t.gpus, "gpus"),
               "storage": _m(t.storage_bytes, "bytes")},
        attention=[{"org": c.org_slug, "name": c.name, "state": c.state, "reason": c.state_reason,
                    "heartbeat": since(c.last_heartbeat_at, now), "id": str(c.id)}
                   for c in board.clusters_needing_attention],
        usage=usage,
    )
    return Template(template_name="dashboard/operator.html", context=context)


DASHBOARD_PAGE_ROUTES = [org_dashboard_page, operator_dashboard_page]
