"""Cluster records over the REST API, and the agent protocol driven with plain HTTP calls."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server import commands
from tenants.db import tenant_session
from tenants.scope import TenantScope
from tests.clusters.conftest import Admin
from tests.clusters.helpers import FakeAgent
from tests.factories import make_api_key, make_org


async def _create(http: httpx.AsyncClient, admin: Admin, name: str = "gpu-prod", **extra: object) -> dict:  # type: ignore[type-arg]
    resp = await http.post(admin.url(), json={"name": name, "provider": "eks", "region": "eu-west-1",
                                              "labels": {"team": "ml"}, **extra}, headers=admin.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def test_creating_a_cluster_returns_its_install_commands_once(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    token = made["install"]["token"]
    assert made["state"] == "pending"
    assert made["install"]["kubectl"] == (
        f"kubectl apply -f http://metacloud.example.com/agent/v1/install/{token}.yaml")
    assert f"--set token={token}" in made["install"]["helm"]
    assert made["install"]["bare_host"] == (
        f"metacloud-agent --server http://metacloud.example.com --token {token} --runtime local")

    listed = (await http.get(admin.url(), headers=admin.headers)).json()
    one = (await http.get(admin.url(f"/{made['id']}"), headers=admin.headers)).json()
    assert [c["name"] for c in listed] == ["gpu-prod"]
    assert one["history"][0]["to_state"] == "pending" and one["capacity"] is None
    assert token not in str(listed) + str(one)


async def test_cluster_names_are_unique_per_org_and_checked(http: httpx.AsyncClient, admin: Admin) -> None:
    await _create(http, admin, "dup")
    again = await http.post(admin.url(), json={"name": "dup", "provider": "gke"}, headers=admin.headers)
    bad = await http.post(admin.url(), json={"name": "Not Valid!", "provider": "mainframe"}, headers=admin.headers)
    assert again.status_code == 409 and "already has a cluster named 'dup'" in again.json()["detail"]
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"name", "provider"}


async def test_members_read_clusters_but_only_admins_connect_them(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession]
) -> None:
    made = await _create(http, admin)
    member_key = {"Authorization": f"Bearer {await make_api_key(db, admin.org, role='member')}"}
    assert (await http.get(admin.url(f"/{made['id']}"), headers=member_key)).status_code == 200
    assert (await http.post(admin.url(), json={"name": "x", "provider": "eks"}, headers=member_key)).status_code == 403
    assert (await http.post(admin.url(f"/{made['id']}/detach"), json={}, headers=member_key)).status_code == 403


async def test_of_50_concurrent_redemptions_of_one_token_exactly_one_registers(
    http: httpx.AsyncClient, admin: Admin
) -> None:
    token = (await _create(http, admin))["install"]["token"]
    results = await asyncio.gather(*(FakeAgent(http, token).register() for _ in range(50)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [401] * 49
    assert {r.json()["code"] for r in results if r.status_code == 401} == {"token_invalid"}


async def test_a_used_token_is_refused_with_a_clear_message(http: httpx.AsyncClient, admin: Admin) -> None:
    token = (await _create(http, admin))["install"]["token"]
    assert (await FakeAgent(http, token).register()).status_code == 200
    again = await FakeAgent(http, token).register()
    assert again.status_code == 401 and again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "token_invalid" and "already used" in again.json()["detail"]
    assert token not in again.text


async def test_an_expired_token_is_refused(http: httpx.AsyncClient, admin: Admin, owner_conn: asyncpg.Connection) -> None:
    made = await _create(http, admin)
    await owner_conn.execute("UPDATE registration_tokens SET expires_at = now() - interval '1 second' "
                             "WHERE cluster_id = $1", uuid.UUID(made["id"]))
    resp = await FakeAgent(http, made["install"]["token"]).register()
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"
    assert "Re-issue" in resp.json()["detail"]


async def test_an_old_agent_is_told_to_upgrade(http: httpx.AsyncClient, admin: Admin) -> None:
    token = (await _create(http, admin))["install"]["token"]
    resp = await FakeAgent(http, token, version="0.0.9").register()
    missing = await http.post("/agent/v1/heartbeat", json={})
    assert resp.status_code == 426 and resp.json()["code"] == "agent_upgrade_required"
    assert "0.0.9" in resp.json()["detail"] and "Upgrade it" in resp.json()["detail"]
    assert missing.status_code == 426


async def test_heartbeats_record_capacity_and_last_heartbeat(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    reg = await agent.register()
    assert reg.json()["cluster_id"] == made["id"] and reg.json()["credential"].startswith("mca_")
    hb = await agent.heartbeat()
    assert hb.status_code == 200 and hb.json()["new_credential"] is None
    one = (await http.get(admin.url(f"/{made['id']}"), headers=admin.headers)).json()
    cap = one["capacity"]
    assert (cap["node_count"], cap["cpu_total_millis"], cap["gpu_total"], cap["gpu_allocated"]) == (2, 64000, 8, 1)
    assert cap["gpus_by_type"] == {"nvidia.com/gpu|A100": {"total": 8, "allocated": 1}}
    assert one["last_heartbeat_at"] is not None and one["agent_version"] == "0.1.0"
    assert one["kubernetes_version"] == "v1.30.2" and one["runtime"] == "kubernetes"


async def test_a_revoked_credential_gets_401_credential_revoked(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    await agent.register()
    revoked = await http.post(admin.url(f"/{made['id']}/credential/revoke"), headers=admin.headers)
    resp = await agent.heartbeat()
    assert revoked.json() == {"revoked": 1}
    assert resp.status_code == 401 and resp.json()["code"] == "credential_revoked"
    assert "Stop this agent" in resp.json()["detail"]
    assert (await http.get("/agent/v1/commands", headers=agent.headers())).json()["code"] == "credential_revoked"


async def test_rotation_delivers_a_new_credential_in_the_next_heartbeat_and_the_old_one_expires(
    http: httpx.AsyncClient, admin: Admin, owner_conn: asyncpg.Connection
) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    await agent.register()
    old = agent.credential
    rotated = await http.post(admin.url(f"/{made['id']}/credential/rotate"), headers=admin.headers)
    assert rotated.status_code == 200
    assert (await http.post(admin.url(f"/{made['id']}/credential/rotate"), headers=admin.headers)).status_code == 409
    hb = await agent.heartbeat()
    new = hb.json()["new_credential"]
    assert new and new != old and agent.credential == new
    assert (await agent.heartbeat()).json()["new_credential"] is None  # the new one works, nothing more to deliver
    stale = FakeAgent(http, "")
    stale.credential = old
    assert (await stale.heartbeat()).status_code == 200  # still inside the 10 minute overlap
    await owner_conn.execute("UPDATE cluster_credentials SET expires_at = now() WHERE cluster_id = $1 "
                             "AND expires_at IS NOT NULL", uuid.UUID(made["id"]))
    assert (await stale.heartbeat()).json()["code"] == "credential_revoked"
    assert (await agent.heartbeat()).status_code == 200


async def test_a_lost_rotation_response_is_healed_by_the_next_heartbeat(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    await agent.register()
    old = agent.credential
    await http.post(admin.url(f"/{made['id']}/credential/rotate"), headers=admin.headers)
    lost = (await agent.heartbeat()).json()["new_credential"]
    agent.credential = old  # the agent never stored it
    again = (await agent.heartbeat()).json()["new_credential"]
    assert again and again != lost
    ghost = FakeAgent(http, "")
    ghost.credential = lost
    assert (await ghost.heartbeat()).json()["code"] == "credential_revoked"


async def test_a_waiting_long_poll_gets_a_new_command_within_milliseconds(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession]
) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    await agent.register()
    assert await agent.poll(wait=0) == []
    poll = asyncio.create_task(agent.poll(wait=20))
    await asyncio.sleep(0.3)  # the poll is waiting
    started = time.perf_counter()
    async with tenant_session(db, TenantScope.for_system(admin.org.id, "test")) as s:
        await commands.enqueue(s, org_id=admin.org.id, cluster_id=uuid.UUID(made["id"]), kind="provision",
                               dedupe_key="t:1", payload={"namespace": "x"})
    got = await poll
    elapsed = time.perf_counter() - started
    assert [c["kind"] for c in got] == ["provision"] and got[0]["payload"] == {"namespace": "x"}
    assert got[0]["attempt"] == 1
    assert elapsed < 0.5, f"dispatch took {elapsed:.3f} s"


async def test_an_unacknowledged_command_is_redelivered_when_its_lease_expires(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection
) -> None:
    made = await _create(http, admin)
    cluster_id = uuid.UUID(made["id"])
    agent = FakeAgent(http, made["install"]["token"])
    await agent.register()
    async with tenant_session(db, TenantScope.for_system(admin.org.id, "test")) as s:
        first = await commands.enqueue(s, org_id=admin.org.id, cluster_id=cluster_id, kind="validate", dedupe_key="k")
        again = await commands.enqueue(s, org_id=admin.org.id, cluster_id=cluster_id, kind="validate", dedupe_key="k")
    assert first == again
    [cmd] = await agent.poll()
    assert await agent.poll() == []  # leased: not handed out twice
    await owner_conn.execute("UPDATE agent_commands SET lease_expires_at = now() - interval '1 s' WHERE id = $1", first)
    [redelivered] = await agent.poll()
    assert redelivered["id"] == cmd["id"] and redelivered["attempt"] == 2
    assert (await agent.ack(cmd["id"])).status_code == 204
    assert (await agent.result(cmd["id"], ok=False, error="no GPUs")).status_code == 204
    assert (await agent.result(cmd["id"], ok=True)).status_code == 204  # a repeat changes nothing
    state = await owner_conn.fetchrow("SELECT state, error FROM agent_commands WHERE id = $1", first)
    assert (state["state"], state["error"]) == ("failed", "no GPUs")


async def test_an_agent_cannot_touch_another_clusters_commands(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession]
) -> None:
    a = FakeAgent(http, (await _create(http, admin, "a"))["install"]["token"])
    b = FakeAgent(http, (await _create(http, admin, "b"))["install"]["token"])
    await a.register()
    await b.register()
    async with tenant_session(db, TenantScope.for_system(admin.org.id, "test")) as s:
        cmd = await commands.enqueue(s, org_id=admin.org.id, cluster_id=uuid.UUID(str(a.cluster_id)), kind="validate",
                                     dedupe_key="k")
    assert (await b.ack(str(cmd))).status_code == 404
    assert await b.poll() == []


async def test_reissuing_a_token_revokes_the_old_one(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    reissued = await http.post(admin.url(f"/{made['id']}/token"), headers=admin.headers)
    assert reissued.status_code == 201
    old = await FakeAgent(http, made["install"]["token"]).register()
    assert old.json()["code"] == "token_invalid" and "replaced by a newer one" in old.json()["detail"]
    assert (await FakeAgent(http, reissued.json()["token"]).register()).status_code == 200


async def test_the_install_link_works_only_while_the_token_can_register(http: httpx.AsyncClient, admin: Admin) -> None:
    token = (await _create(http, admin))["install"]["token"]
    fresh = await http.get(f"/agent/v1/install/{token}.yaml")
    assert fresh.status_code in (200, 503) and fresh.headers["cache-control"] == "no-store"
    await FakeAgent(http, token).register()
    used = await http.get(f"/agent/v1/install/{token}.yaml")
    assert used.status_code == 404 and used.text.startswith("# This install link does not work any more")


async def test_a_cluster_is_deleted_only_once_detached(http: httpx.AsyncClient, admin: Admin) -> None:
    made = await _create(http, admin)
    resp = await http.delete(admin.url(f"/{made['id']}"), headers=admin.headers)
    assert resp.status_code == 409 and "Detach the cluster first" in resp.json()["detail"]


async def test_cluster_actions_are_audited(
    http: httpx.AsyncClient, admin: Admin, owner_conn: asyncpg.Connection, db: async_sessionmaker[AsyncSession]
) -> None:
    made = await _create(http, admin)
    agent = FakeAgent(http, made["install"]["token"])
    await http.post(admin.url(f"/{made['id']}/token"), headers=admin.headers)
    agent.token = (await http.post(admin.url(f"/{made['id']}/token"), headers=admin.headers)).json()["token"]
    await agent.register()
    await http.post(admin.url(f"/{made['id']}/credential/rotate"), headers=admin.headers)
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM audit_events WHERE target_id = $1 ORDER BY id", made["id"])]
    assert actions == ["cluster.created", "cluster.token_reissued", "cluster.token_reissued",
                       "cluster.credential_rotated"]


async def test_other_orgs_see_nothing_of_a_cluster(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession]
) -> None:
    made = await _create(http, admin)
    other = await make_org(db)
    key = {"Authorization": f"Bearer {await make_api_key(db, other, role='admin')}"}
    resp = await http.get(f"/api/v1/orgs/{other.slug}/clusters/{made['id']}", headers=key)
    assert resp.status_code == 404
    assert (await http.get(f"/api/v1/orgs/{other.slug}/clusters", headers=key)).json() == []
