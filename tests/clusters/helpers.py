"""A protocol-level stand-in for the agent (plain httpx calls), and small helpers of the cluster tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from connectors.protocol import (
    AGENT_VERSION,
    AGENT_VERSION_HEADER,
    AgentFacts,
    GpuCapacity,
    Heartbeat,
    Inventory,
    NodeInventory,
    RegisterRequest,
    Taint,
)

GiB = 1 << 30


def gpu_inventory(nodes: int = 2, gpus_per_node: int = 4) -> Inventory:
    """Nodes with A100s, a taint and labels, as a Kubernetes agent reports them."""
    return Inventory(
        nodes=[
            NodeInventory(
                name=f"gpu-{i}", cpu_allocatable_millis=32000, cpu_allocated_millis=1000 * i,
                memory_allocatable_bytes=128 * GiB, memory_allocated_bytes=4 * GiB,
                gpus=[GpuCapacity(resource="nvidia.com/gpu", model="A100", allocatable=gpus_per_node, allocated=i)],
                taints=[Taint(key="nvidia.com/gpu", effect="NoSchedule")],
                labels={"nvidia.com/gpu.product": "A100", "kubernetes.io/hostname": f"gpu-{i}"},
            )
            for i in range(nodes)
        ],
        storage_classes=["standard"], storage_total_bytes=500 * GiB, kubernetes_version="v1.30.2",
    )


class FakeAgent:
    """Speaks protocol v1 to the gateway through ``client`` (an httpx client on the ASGI app)."""

    def __init__(self, client: httpx.AsyncClient, token: str, *, version: str = AGENT_VERSION) -> None:
        self.client = client
        self.token = token
        self.version = version
        self.credential: str | None = None
        self.cluster_id: str | None = None
        self.inventory = gpu_inventory()

    def headers(self) -> dict[str, str]:
        h = {AGENT_VERSION_HEADER: self.version}
        if self.credential:
            h["Authorization"] = f"Bearer {self.credential}"
        return h

    async def register(self) -> httpx.Response:
        body = RegisterRequest(token=self.token, facts=AgentFacts(runtime="kubernetes", agent_version=self.version,
                                                                  kubernetes_version="v1.30.2", hostname="kmock"))
        resp = await self.client.post("/agent/v1/register", content=msgspec.json.encode(body),
                                      headers={**self.headers(), "content-type": "application/json"})
        if resp.status_code == 200:
            self.credential = resp.json()["credential"]
            self.cluster_id = resp.json()["cluster_id"]
        return resp

    async def heartbeat(self) -> httpx.Response:
        body = Heartbeat(sent_at=datetime.now(UTC), agent_version=self.version, inventory=self.inventory)
        resp = await self.client.post("/agent/v1/heartbeat", content=msgspec.json.encode(body),
                                      headers={**self.headers(), "content-type": "application/json"})
        if resp.status_code == 200 and resp.json().get("new_credential"):
            self.credential = resp.json()["new_credential"]
        return resp

    async def poll(self, wait: int = 0) -> list[dict[str, Any]]:
        resp = await self.client.get("/agent/v1/commands", params={"wait": wait}, headers=self.headers(),
                                     timeout=wait + 10)
        assert resp.status_code == 200, resp.text
        commands: list[dict[str, Any]] = resp.json()["commands"]
        return commands

    async def ack(self, command_id: str) -> httpx.Response:
        return await self.client.post(f"/agent/v1/commands/{command_id}/ack", headers=self.headers())

    async def result(self, command_id: str, ok: bool = True, result: dict[str, Any] | None = None,
                     error: str | None = None) -> httpx.Response:
        return await self.client.post(f"/agent/v1/commands/{command_id}/result", headers=self.headers(),
                                      json={"ok": ok, "result": result or {}, "error": error})

    async def serve(self, until: Callable[[], Awaitable[bool]], *, answers: dict[str, dict[str, Any]] | None = None,
                    timeout: float = 20.0) -> list[str]:
        """Heartbeat, poll, ack and answer commands (``answers`` by kind, default ok) until ``until()``."""
        kinds: list[str] = []
        async with asyncio.timeout(timeout):
            while not await until():
                await self.heartbeat()
                for cmd in await self.poll(wait=1):
                    kinds.append(cmd["kind"])
                    assert (await self.ack(cmd["id"])).status_code == 204
                    answer = (answers or {}).get(cmd["kind"], {"ok": True, "result": {}})
                    assert (await self.result(cmd["id"], **answer)).status_code == 204
        return kinds


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 15.0, every: float = 0.1) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polling state that another component changes
            await asyncio.sleep(every)
