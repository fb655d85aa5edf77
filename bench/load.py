"""An in-process HTTP load driver: N requests through ``httpx.ASGITransport`` with C concurrent workers."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from litestar import Litestar

__all__ = ["LoadResult", "drive", "percentile"]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LoadResult:
    seconds: float
    latencies: list[float]  # per request, seconds

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @classmethod
    def combine(cls, results: Sequence[LoadResult]) -> LoadResult:
        """One result from several rounds of the same load."""
        return cls(sum(r.seconds for r in results), [x for r in results for x in r.latencies])


async def drive(
    app: Litestar,
    path: str,
    *,
    requests: int,
    concurrency: int = 8,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """GET ``path`` ``requests`` times from ``concurrency`` workers; any non-2xx answer aborts the run."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one() -> float:
            start = time.perf_counter()
            response = await client.get(path, headers=headers)
            elapsed = time.perf_counter() - start
            if not response.is_success:
                raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
            return elapsed

        remaining = requests
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await one())

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        seconds = time.perf_counter() - start
    return LoadResult(seconds=seconds, latencies=latencies)
