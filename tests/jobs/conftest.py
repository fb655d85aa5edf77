from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from connectors.agent.config import AgentConfig
from connectors.agent.loop import Agent
from connectors.protocol import GpuCapacity, Inventory, NodeInventory, Taint
from connectors.runtimes import LocalRuntime, Runtime
from connectors.server.capacity import summarize
from connectors.server.models import Cluster, ClusterInventory
from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.db import unscoped_session
from tenants.settings import Settings
from tests.clusters.helpers import eventually
from tests.factories import MadeOrg, MadeUser, add_member, make_api_key, make_org, make_user
from tests.temporal_helpers import wait_for_poller
from workflows.registry import Dependencies
from workflows.worker import build_worker

GiB = 1 << 30


@pytest.fixture
def queue() -> str:
    return f"jobs-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def jsettings(settings: Settings, queue: str) -> Settings:
    return settings.with_(temporal_task_queue=queue)


@pytest.fixture
def app(jsettings: Settings, engine: AsyncEngine, temporal_client: Client, db: async_sessionmaker[AsyncSession]) -> Litestar:
    return create_app(jsettings, engine=engine, temporal=TemporalHandle(jsettings, client=temporal_client))


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://testserver") as c:
        yield c


@dataclass
class Member:
    org: MadeOrg
    user: MadeUser
    headers: dict[str, str]

    def url(self, tail: str = "") -> str:
        return f"/api/v1/orgs/{self.org.slug}/jobs{tail}"


async def _key_for(db: async_sessionmaker[AsyncSession], org: MadeOrg, user: MadeUser, role: str) -> str:
    key = await make_api_key(db, org, role=role)
    async with unscoped_session(db, reason="test: the key belongs to the user") as s:
        await s.execute(text("UPDATE api_keys SET created_by = :u WHERE org_id = :o AND created_by IS NULL"),
                        {"u": user.id, "o": org.id})
    return key


@pytest.fixture
async def owner(db: async_sessionmaker[AsyncSession]) -> Member:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    return Member(org=org, user=user, headers={"Authorization": f"Bearer {await _key_for(db, org, user, 'owner')}"})


@pytest.fixture
async def member(db: async_sessionmaker[AsyncSession], owner: Member) -> Member:
    user = await make_user(db)
    await add_member(db, owner.org, user, "member")
    return Member(org=owner.org, user=user,
                  headers={"Authorization": f"Bearer {await _key_for(db, owner.org, user, 'member')}"})


def cpu_nodes(count: int = 1, cpus: int = 16, mem_gib: int = 64, prefix: str = "cpu") -> list[NodeInventory]:
    return [NodeInventory(name=f"{prefix}-{i}", cpu_allocatable_millis=cpus * 1000,
                          memory_allocatable_bytes=mem_gib * GiB) for i in range(count)]


def gpu_nodes(count: int = 1, gpus: int = 4, model: str = "A100-SXM4-80GB", free: int | None = None,
              prefix: str = "gpu") -> list[NodeInventory]:
    return [NodeInventory(name=f"{prefix}-{i}", cpu_allocatable_millis=64000, memory_allocatable_bytes=512 * GiB,
                          gpus=[GpuCapacity(resource="nvidia.com/gpu", model=model, allocatable=gpus,
                                            allocated=gpus - (gpus if free is None else free))],
                          taints=[Taint(key="nvidia.com/gpu", effect="NoSchedule", value="present")],
                          labels={"nvidia.com/gpu.product": model}) for i in range(count)]


async def make_cluster(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, name: str,
                       nodes: list[NodeInventory], *, region: str = "eu-west-1", state: str = "attached",
                       runtime: str = "kubernetes") -> uuid.UUID:
    """An attached cluster with a heartbeat's inventory, as the cluster control plane leaves it."""
    inv = Inventory(nodes=nodes)
    s_ = summarize(inv)
    now = datetime.now(UTC)
    async with unscoped_session(db, reason="test factory") as s:
        c = Cluster(org_id=org_id, name=name, provider="kubernetes", region=region, labels={}, state=state,
                    state_reason="", state_changed_at=now, runtime=runtime, last_heartbeat_at=now)
        s.add(c)
        await s.flush()
        s.add(ClusterInventory(
            cluster_id=c.id, org_id=org_id, reported_at=now, node_count=s_.node_count,
            cpu_total_millis=s_.cpu_total_millis, cpu_allocated_millis=s_.cpu_allocated_millis,
            memory_total_bytes=s_.memory_total_bytes, memory_allocated_bytes=s_.memory_allocated_bytes,
            gpu_total=s_.gpu_total, gpu_allocated=s_.gpu_allocated, storage_total_bytes=0, storage_allocated_bytes=0,
            gpus_by_type=s_.gpus_by_type, inventory=msgspec.to_builtins(inv)))
        return c.id


async def set_plan(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, plan: str) -> None:
    async with unscoped_session(db, reason="test factory") as s:
        await s.execute(text("UPDATE orgs SET plan = :p WHERE id = :o"), {"p": plan, "o": org_id})


WorkerFactory = Callable[[], Awaitable[asyncio.Task[None]]]


@pytest.fixture
async def start_worker(temporal_client: Client, jsettings: Settings, queue: str,
                       db: async_sessionmaker[AsyncSession]) -> AsyncIterator[WorkerFactory]:
    tasks: list[asyncio.Task[None]] = []

    async def start() -> asyncio.Task[None]:
        worker = build_worker(temporal_client, Dependencies(settings=jsettings, sessions=db), task_queue=queue)
        task = asyncio.create_task(worker.run())
        tasks.append(task)
        await wait_for_poller(temporal_client, queue)
        return task

    yield start
    for handle_id in (f"jobs-scheduler-{queue}",):
        with contextlib.suppress(Exception):
            await temporal_client.get_workflow_handle(handle_id).terminate("test over")
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@contextlib.asynccontextmanager
async def connected_agent(http: httpx.AsyncClient, owner: Member, runtime: Runtime, state_dir: Path, *,
                          name: str, provider: str, job_reports: bool = True) -> AsyncIterator[str]:
    """A cluster made through the API with its real agent running on ``runtime`` (in-process, through
    ``http``, heartbeating every 0.3 s; pushing job reports unless ``job_reports`` is off) until the block
    ends; yields the cluster id once it is attached."""
    clusters = f"/api/v1/orgs/{owner.org.slug}/clusters"
    made = await http.post(clusters, json={"name": name, "provider": provider}, headers=owner.headers)
    assert made.status_code == 201, made.text
    cluster_id, token = made.json()["id"], made.json()["install"]["token"]
    kind = "local" if isinstance(runtime, LocalRuntime) else "kubernetes"
    agent = Agent(AgentConfig(server_url="http://testserver", token=token, state_dir=state_dir, runtime=kind,
                              heartbeat_interval_s=0.3, command_wait_s=2, job_reports=job_reports), runtime, http)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        async def attached() -> bool:
            resp = await http.get(f"{clusters}/{cluster_id}", headers=owner.headers)
            return bool(resp.json()["state"] == "attached")
        await eventually(attached, timeout=30)
        yield cluster_id
    finally:
        stop.set()
        await asyncio.gather(run, return_exceptions=True)
