"""The Jobs API through the real app: submit (with field errors, policy refusals, billing blocks), list,
detail with the timeline, cancel, re-run; and what a waiting job says after a scheduler pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.entitlements import SubmissionBlock
from connectors.server.jobs.scheduler import run_pass
from tests.factories import make_api_key
from tests.jobs.conftest import GiB, Member, cpu_nodes, gpu_nodes, make_cluster, set_plan
from workflows.jobs.activities import plan_caps


def field_errors(resp: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in resp.json()["errors"]}


JOB: dict[str, Any] = {"name": "train", "image": "python:3.12", "command": ["python", "-c", "print(1)"],
                       "resources": {"cpu": 2, "memory": "4Gi"}}


async def submit(http: httpx.AsyncClient, who: Member, **changes: Any) -> httpx.Response:
    return await http.post(who.url(), json={**JOB, **changes}, headers=who.headers)


async def test_a_submitted_job_is_queued_with_a_reason_and_shows_its_timeline(
    http: httpx.AsyncClient, member: Member
) -> None:
    resp = await submit(http, member, resources={"cpu": 0.5, "memory": "512Mi", "gpus": 0})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["state"] == "queued" and job["reason"]
    assert job["resources"] == {"cpu": 0.5, "memory_bytes": 512 << 20, "gpus": 0, "gpu_type": None}
    assert job["submitted_by"] == {"id": str(member.user.id), "email": member.user.email}
    assert job["cluster"] is None
    detail = (await http.get(member.url(f"/{job['id']}"), headers=member.headers)).json()
    assert [(e["state"], e["reason"]) for e in detail["events"]] == [("queued", f"submitted by {member.user.email}")]
    listed = (await http.get(member.url(), headers=member.headers)).json()["items"]
    assert [j["events"] for j in listed] == [[]]


async def test_bad_fields_are_named_one_by_one(http: httpx.AsyncClient, member: Member) -> None:
    resp = await http.post(member.url(), headers=member.headers, json={
        "name": "", "image": None, "command": [],
        "resources": {"cpu": -1, "memory": "lots", "gpus": 0, "gpu_type": "A100"},
        "placement": {"mode": "cluster"}, "priority": 101})
    assert resp.status_code == 422
    errors = field_errors(resp)
    assert set(errors) == {"name", "command", "resources.cpu", "resources.memory", "resources.gpu_type",
                           "placement.cluster", "priority"}
    assert "4Gi" in errors["resources.memory"]


async def test_a_job_for_an_unknown_cluster_is_refused_on_that_field(http: httpx.AsyncClient, member: Member) -> None:
    resp = await submit(http, member, placement={"mode": "cluster", "cluster": "nope"})
    assert resp.status_code == 422 and "placement.cluster" in field_errors(resp)


async def test_policies_refuse_at_submission_naming_the_rule(
    http: httpx.AsyncClient, owner: Member, member: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    await make_cluster(db, owner.org.id, "us-gpu", gpu_nodes(), region="us-east-1")
    put = await http.put(f"/api/v1/orgs/{owner.org.slug}/policies", headers=owner.headers, json={"policies": [
        {"subject_kind": "role", "subject": "member", "gpus_allowed": False, "max_cpu": 4,
         "allowed_clusters": ["eu-cpu"]},
    ]})
    assert put.status_code == 200, put.text
    too_big = await submit(http, member, resources={"cpu": 8, "memory": "1Gi"})
    assert too_big.status_code == 403
    body = too_big.json()
    assert (body["code"], body["rule"]) == ("policy_denied", "max_cpu")
    assert "at most 4 vCPU per job" in body["detail"] and "role 'member'" in body["detail"]
    gpu = await submit(http, member, resources={"cpu": 1, "memory": "1Gi", "gpus": 1})
    assert (gpu.status_code, gpu.json()["rule"]) == (403, "gpus_allowed")
    elsewhere = await submit(http, member, placement={"mode": "cluster", "cluster": "us-gpu"})
    assert (elsewhere.status_code, elsewhere.json()["rule"]) == (403, "allowed_clusters")
    # the owner's role has no rule: the same job is fine for them
    assert (await submit(http, owner, resources={"cpu": 8, "memory": "1Gi"})).status_code == 201


async def test_a_member_rule_beats_the_role_rule(http: httpx.AsyncClient, owner: Member, member: Member) -> None:
    put = await http.put(f"/api/v1/orgs/{owner.org.slug}/policies", headers=owner.headers, json={"policies": [
        {"subject_kind": "role", "subject": "member", "max_cpu": 1},
        {"subject_kind": "member", "subject": member.user.email, "max_cpu": 16},
    ]})
    assert put.status_code == 200
    shown = (await http.get(f"/api/v1/orgs/{owner.org.slug}/policies", headers=member.headers)).json()["policies"]
    assert {p["subject_display"] for p in shown} == {"member", member.user.email}
    assert (await submit(http, member, resources={"cpu": 8, "memory": "1Gi"})).status_code == 201


async def test_only_policy_managers_replace_policies_and_bad_rules_are_named(
    http: httpx.AsyncClient, owner: Member, member: Member
) -> None:
    url = f"/api/v1/orgs/{owner.org.slug}/policies"
    denied = await http.put(url, headers=member.headers, json={"policies": []})
    assert denied.status_code == 403
    bad = await http.put(url, headers=owner.headers, json={"policies": [
        {"subject_kind": "role", "subject": "wizard"}, {"subject_kind": "member", "subject": "stranger@example.com"},
        {"subject_kind": "org", "max_memory": "huge"}]})
    assert bad.status_code == 422
    assert set(field_errors(bad)) == {"policies[2].max_memory"}
    bad = await http.put(url, headers=owner.headers, json={"policies": [
        {"subject_kind": "role", "subject": "wizard"}, {"subject_kind": "member", "subject": "stranger@example.com"}]})
    assert set(field_errors(bad)) == {"policies[0].subject", "policies[1].subject"}


async def test_a_blocked_org_cannot_submit(http: httpx.AsyncClient, member: Member,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def blocked(session: Any, org_id: Any) -> SubmissionBlock:
        return SubmissionBlock(status=402, reason="An invoice is overdue: pay it at /orgs/x/billing to run new jobs.")

    monkeypatch.setattr("gateway.api.jobs.submission_block", blocked)
    resp = await submit(http, member)
    assert resp.status_code == 402 and "overdue" in resp.json()["detail"]


async def test_viewers_read_but_cannot_submit(http: httpx.AsyncClient, owner: Member,
                                              db: async_sessionmaker[AsyncSession]) -> None:
    viewer = {"Authorization": f"Bearer {await make_api_key(db, owner.org, role='viewer')}"}
    assert (await http.post(owner.url(), json=JOB, headers=viewer)).status_code == 403
    assert (await http.get(owner.url(), headers=viewer)).status_code == 200


async def test_list_filters_and_pages_newest_first(http: httpx.AsyncClient, owner: Member, member: Member) -> None:
    mine = [(await submit(http, member, name=f"m{i}")).json()["id"] for i in range(3)]
    theirs = (await submit(http, owner, name="o")).json()["id"]
    page = (await http.get(owner.url(), params={"limit": 2}, headers=owner.headers)).json()
    assert [j["id"] for j in page["items"]] == [theirs, mine[2]] and page["next"] == mine[2]
    rest = (await http.get(owner.url(), params={"limit": 2, "before": page["next"]}, headers=owner.headers)).json()
    assert [j["id"] for j in rest["items"]] == [mine[1], mine[0]] and rest["next"] is None
    only_mine = (await http.get(member.url(), params={"mine": "true"}, headers=member.headers)).json()
    assert [j["id"] for j in only_mine["items"]] == mine[::-1]
    await http.post(owner.url(f"/{theirs}/cancel"), headers=owner.headers)
    cancelled = (await http.get(owner.url(), params={"state": "cancelled"}, headers=owner.headers)).json()
    assert [j["id"] for j in cancelled["items"]] == [theirs]
    bad = await http.get(owner.url(), params={"state": "sleeping"}, headers=owner.headers)
    assert bad.status_code == 422


async def test_cancel_own_job_admins_cancel_anyones_finished_jobs_conflict(
    http: httpx.AsyncClient, owner: Member, member: Member
) -> None:
    theirs = (await submit(http, owner)).json()["id"]
    assert (await http.post(member.url(f"/{theirs}/cancel"), headers=member.headers)).status_code == 403
    mine = (await submit(http, member)).json()["id"]
    done = await http.post(member.url(f"/{mine}/cancel"), headers=member.headers)
    assert done.status_code == 200 and done.json()["state"] == "cancelled"
    assert done.json()["reason"].startswith("cancelled by")
    assert (await http.post(member.url(f"/{mine}/cancel"), headers=member.headers)).json()["state"] == "cancelled"
    by_admin = await http.post(owner.url(f"/{mine}/cancel"), headers=owner.headers)
    assert by_admin.status_code == 200
    other = (await submit(http, member)).json()["id"]
    assert (await http.post(owner.url(f"/{other}/cancel"), headers=owner.headers)).json()["state"] == "cancelled"


async def test_rerun_submits_the_same_request_again(http: httpx.AsyncClient, member: Member) -> None:
    first = (await submit(http, member, env={"SEED": "7"}, priority=80, max_runtime_s=60)).json()
    again = await http.post(member.url(f"/{first['id']}/rerun"), headers=member.headers)
    assert again.status_code == 201
    second = again.json()
    assert second["id"] != first["id"] and second["state"] == "queued"
    for key in ("name", "image", "command", "resources", "priority", "max_runtime_s", "placement"):
        assert second[key] == first[key]


async def test_after_a_pass_a_free_org_asking_for_10_vcpu_waits_with_the_plan_reason(
    http: httpx.AsyncClient, member: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    await make_cluster(db, member.org.id, "big", cpu_nodes(cpus=64))
    wide = (await submit(http, member, resources={"cpu": 10, "memory": "4Gi"})).json()["id"]
    small = (await submit(http, member, resources={"cpu": 2, "memory": "4Gi"})).json()["id"]
    report = await run_pass(db, caps_provider=plan_caps)
    assert [p.job_id for p in report.placed] == [small]
    waiting = (await http.get(member.url(f"/{wide}"), headers=member.headers)).json()
    assert waiting["state"] == "queued"
    assert waiting["reason"] == (f"Free plan allows 8 vCPU at once; this job asks 10 vCPU — upgrade at "
                                 f"/orgs/{member.org.slug}/billing")
    placed = (await http.get(member.url(f"/{small}"), headers=member.headers)).json()
    assert placed["state"] == "placed" and placed["cluster"]["name"] == "big"
    assert [e["state"] for e in placed["events"]] == ["queued", "placed"]


async def test_a_pay_as_you_go_gpu_job_is_placed_on_a_gpu_node(
    http: httpx.AsyncClient, member: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    await set_plan(db, member.org.id, "payg")
    await make_cluster(db, member.org.id, "gpu", [*cpu_nodes(), *gpu_nodes(free=2)])
    job = (await submit(http, member, resources={"cpu": 4, "memory": "32Gi", "gpus": 2, "gpu_type": "A100"})).json()
    too_many = (await submit(http, member, resources={"cpu": 4, "memory": "32Gi", "gpus": 2,
                                                      "gpu_type": "A100"})).json()
    await run_pass(db, caps_provider=plan_caps)
    placed = (await http.get(member.url(f"/{job['id']}"), headers=member.headers)).json()
    assert placed["state"] == "placed"
    waits = (await http.get(member.url(f"/{too_many['id']}"), headers=member.headers)).json()
    assert waits["reason"] == "needs 2 x A100; allowed clusters have 0 free"
    assert 32 * GiB == placed["resources"]["memory_bytes"]
