"""Agents per gateway process, and command dispatch latency.

1. Heartbeats. N simulated agents (N clusters with their own credentials, a realistic inventory of
   8 nodes with GPUs, taints and labels, ~6 KB of JSON) heartbeat every 15 s, i.e. N/15 requests per
   second, against ``create_app`` in process (auth by credential, the upsert, RLS, one transaction).
   The load is open loop: requests start on a fixed schedule whether or not earlier ones finished, and
   latency counts from the scheduled start, so queueing is measured, not hidden. A ramp doubles N until
   p99 >= 100 ms (in two runs in a row), then bisects twice; the figure is the largest N that held. The baseline is the same
   ramp against a bare Litestar endpoint that decodes the same body into ``Heartbeat`` and answers a
   ``HeartbeatResponse``.
   The load generator shares the process and the event loop with the app: like a real process that
   also runs its own TLS and HTTP parsing, minus those.
2. Dispatch. A long poll waits (``GET /agent/v1/commands?wait=25``); a command is enqueued in its own
   transaction; the latency is from the start of that transaction to the poll's answer. The baseline is
   a bare asyncpg ``NOTIFY`` round trip (one connection notifies, another listens) in the same run.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import msgspec
from litestar import Litestar, post
from litestar.params import JSONBody

from bench.context import BenchContext
from bench.load import percentile
from bench.report import Figure
from connectors.protocol import (
    AGENT_VERSION,
    AGENT_VERSION_HEADER,
    GpuCapacity,
    Heartbeat,
    HeartbeatResponse,
    Inventory,
    NodeInventory,
    Taint,
)
from connectors.server import commands
from connectors.server.credentials import format_credential
from connectors.server.notify import notifier_for
from gateway.app import create_app
from tenants.db import create_app_engine, create_sessionmaker, tenant_session
from tenants.scope import TenantScope
from tenants.settings import Settings

INTERVAL_S = 15.0
P99_GOAL_MS = 100.0
GiB = 1 << 30


def inventory() -> Inventory:
    """What a mid-sized GPU cluster's agent reports: 8 nodes, 4 of them with 8 GPUs."""
    nodes = []
    for i in range(8):
        gpus = [GpuCapacity(resource="nvidia.com/gpu", model="NVIDIA-A100-SXM4-80GB", allocatable=8, allocated=i % 8)]
        nodes.append(NodeInventory(
            name=f"ip-10-0-{i}-17.eu-west-1.compute.internal", cpu_allocatable_millis=95_690,
            cpu_allocated_millis=12_000 + 1000 * i, memory_allocatable_bytes=1_000 * GiB,
            memory_allocated_bytes=64 * GiB, gpus=gpus if i < 4 else [],
            taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")] if i < 4 else [],
            labels={"kubernetes.io/hostname": f"ip-10-0-{i}-17", "node.kubernetes.io/instance-type": "p4d.24xlarge",
                    "topology.kubernetes.io/zone": "eu-west-1a", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                    "eks.amazonaws.com/nodegroup": "gpu-a100", "kubernetes.io/arch": "amd64"},
        ))
    return Inventory(nodes=nodes, storage_classes=["gp3", "io2", "efs-sc"], storage_total_bytes=20_000 * GiB,
                     storage_allocated_bytes=3_200 * GiB, kubernetes_version="v1.30.4-eks-a737599")


def heartbeat_body() -> bytes:
    return msgspec.json.encode(Heartbeat(sent_at=datetime.now(UTC), agent_version=AGENT_VERSION,
                                         inventory=inventory()))


@post("/agent/v1/heartbeat", status_code=200)
async def bare_heartbeat(data: JSONBody[Heartbeat]) -> HeartbeatResponse:
    return HeartbeatResponse(server_time=datetime.now(UTC))


async def _seed(owner_dsn: str, n: int) -> tuple[uuid.UUID, list[str], list[uuid.UUID]]:
    """An org with ``n`` attached clusters and a credential each (bulk COPY as the owner)."""
    org_id = uuid.uuid4()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("INSERT INTO orgs (id, slug, name) VALUES ($1, $2, 'Bench')", org_id, f"bench-{org_id.hex[:8]}")
        cluster_ids = [uuid.uuid4() for _ in range(n)]
        await conn.copy_records_to_table(
            "clusters", columns=["id", "org_id", "name", "provider", "region", "labels", "state", "state_reason",
                                 "state_changed_at", "created_at", "registered_at"],
            records=[(cid, org_id, f"c{i}", "eks", "eu-west-1", "{}", "attached", "", now, now, now)
                     for i, cid in enumerate(cluster_ids)])
        creds = [format_credential(f"{i:08x}", secrets.token_urlsafe(32)) for i in range(n)]
        await conn.copy_records_to_table(
            "cluster_credentials", columns=["id", "org_id", "cluster_id", "prefix", "secret_hash", "created_at"],
            records=[(uuid.uuid4(), org_id, cid, f"mca_{i:08x}", hashlib.sha256(c.encode()).hexdigest(), now)
                     for i, (cid, c) in enumerate(zip(cluster_ids, creds, strict=True))])
    finally:
        await conn.close()
    return org_id, creds, cluster_ids


async def _open_loop(client: httpx.AsyncClient, agents: int, body: bytes, creds: list[str], seconds: float) -> list[float]:
    """Heartbeats at ``agents / 15`` per second for ``seconds``; latency of each from its scheduled start."""
    rate = agents / INTERVAL_S
    count = max(1, int(rate * seconds))
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures: list[str] = []

    async def one(i: int, due: float) -> None:
        headers = {AGENT_VERSION_HEADER: AGENT_VERSION, "content-type": "application/json",
                   "authorization": f"Bearer {creds[i % agents]}"}
        resp = await client.post("/agent/v1/heartbeat", content=body, headers=headers)
        if resp.status_code != 200:
            failures.append(f"{resp.status_code}: {resp.text[:200]}")
        latencies.append(loop.time() - due)

    start = loop.time() + 0.05
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} heartbeats failed, e.g. {failures[0]}")
    return latencies


async def _p99_held(run: Callable[[int], Awaitable[list[float]]], n: int) -> float | None:
    """p99 (ms) of a run with ``n`` agents if it stays under the goal, else None. A run that misses is tried
    once more: at a few hundred agents a step is ~130 requests, so one pause of the process (a full garbage
    collection over the seeded objects) lifts its p99 past 100 ms on its own."""
    for _ in range(2):
        p99 = percentile(await run(n), 99) * 1000
        if p99 < P99_GOAL_MS:
            return p99
    return None


async def _max_agents(run: Callable[[int], Awaitable[list[float]]], *, start: int, cap: int) -> tuple[int, float, float]:
    """Largest N (doubling, then two bisections) whose p99 stays under the goal: (N, heartbeats/s, p99 ms)."""
    good: tuple[int, float, float] = (0, 0.0, 0.0)
    bad: int | None = None
    n = start
    while n <= cap:
        p99 = await _p99_held(run, n)
        if p99 is None:
            bad = n
            break
        good = (n, n / INTERVAL_S, p99)
        n *= 2
    for _ in range(2):
        if bad is None or good[0] == 0:
            break
        mid = (good[0] + bad) // 2
        p99 = await _p99_held(run, mid)
        if p99 is not None:
            good = (mid, mid / INTERVAL_S, p99)
        else:
            bad = mid
    return good


async def _dispatch(app: Litestar, settings: Settings, org_id: uuid.UUID, cluster_id: uuid.UUID, cred: str,
                    samples: int) -> list[float]:
    sessions = create_sessionmaker(create_app_engine(settings))
    scope = TenantScope.for_system(org_id, "bench")
    notifier = notifier_for(settings.resolved_app_database_url)
    channel = commands.channel_for(cluster_id)
    headers = {AGENT_VERSION_HEADER: AGENT_VERSION, "authorization": f"Bearer {cred}"}
    out: list[float] = []
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
        for i in range(samples):
            poll = asyncio.create_task(client.get("/agent/v1/commands", params={"wait": 25}, headers=headers))
            while notifier.waiting(channel) == 0 or channel not in notifier.listening:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.005)  # let the poll reach its wait
            started = time.perf_counter()
            async with tenant_session(sessions, scope) as s:
                await commands.enqueue(s, org_id=org_id, cluster_id=cluster_id, kind="validate", dedupe_key=f"b{i}")
            resp = await poll
            out.append(time.perf_counter() - started)
            got = resp.json()["commands"]
            if len(got) != 1:
                raise RuntimeError(f"poll returned {resp.status_code} {resp.text[:200]}")
            await client.post(f"/agent/v1/commands/{got[0]['id']}/result", json={"ok": True}, headers=headers)
    return out


async def _notify_round_trips(dsn: str, samples: int) -> list[float]:
    listener = await asyncpg.connect(dsn)
    sender = await asyncpg.connect(dsn)
    got = asyncio.Event()
    listener_cb = lambda *_: got.set()  # noqa: E731
    await listener.add_listener("bench_notify", listener_cb)
    out: list[float] = []
    try:
        for _ in range(samples):
            got.clear()
            started = time.perf_counter()
            await sender.execute("SELECT pg_notify('bench_notify', '')")
            await got.wait()
            out.append(time.perf_counter() - started)
    finally:
        await listener.close()
        await sender.close()
    return out


async def run(ctx: BenchContext) -> list[Figure]:
    settings = (await ctx.settings()).with_(public_url="http://bench")
    cap = ctx.scale(full=32768, quick=4096)
    seconds = ctx.scale(full=8, quick=3)
    org_id, creds, cluster_ids = await _seed(settings.owner_database_url, cap)
    body = heartbeat_body()
    engine = create_app_engine(settings)
    full = create_app(settings, engine=engine)
    bare = Litestar([bare_heartbeat], logging_config=None)
    try:
        async with full.lifespan(), bare.lifespan():
            full_t = httpx.ASGITransport(app=full)  # type: ignore[arg-type]
            bare_t = httpx.ASGITransport(app=bare)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=full_t, base_url="http://bench", timeout=60) as fc, \
                    httpx.AsyncClient(transport=bare_t, base_url="http://bench", timeout=60) as bc:
                await _open_loop(fc, 200, body, creds, 2)  # warm-up: connection pool, prepared statements
                await _open_loop(bc, 200, body, creds, 2)  # and the same for the baseline
                agents, hb_rate, p99 = await _max_agents(lambda n: _open_loop(fc, n, body, creds, seconds),
                                                         start=250, cap=cap)
                b_agents, b_rate, b_p99 = await _max_agents(lambda n: _open_loop(bc, n, body, creds, seconds),
                                                            start=250, cap=cap)
            samples = ctx.scale(full=300, quick=60)
            dispatch = await _dispatch(full, settings, org_id, cluster_ids[0], creds[0], samples)
            notify = await _notify_round_trips(settings.resolved_app_database_url, samples)
    finally:
        await engine.dispose()
        await notifier_for(settings.resolved_app_database_url).aclose()
    capped = " (ramp cap reached)" if b_agents >= cap else ""
    return [
        Figure("agents.heartbeating_agents", agents, "agents", "agents.bare_litestar_agents", b_agents,
               goal=f"p99 < {P99_GOAL_MS:g} ms at one heartbeat per {INTERVAL_S:g} s{capped}"),
        Figure("agents.heartbeats_per_s", hb_rate, "req/s", "agents.bare_litestar_heartbeats_per_s", b_rate),
        Figure("agents.heartbeat_p99_at_max", p99, "ms", "agents.bare_litestar_p99_at_max", b_p99,
               higher_is_better=False),
        Figure("agents.dispatch_p50", percentile(dispatch, 50) * 1000, "ms", "agents.pg_notify_round_trip_p50",
               percentile(notify, 50) * 1000, higher_is_better=False),
        Figure("agents.dispatch_p99", percentile(dispatch, 99) * 1000, "ms", "agents.pg_notify_round_trip_p99",
               percentile(notify, 99) * 1000, higher_is_better=False, goal="milliseconds"),
    ]
