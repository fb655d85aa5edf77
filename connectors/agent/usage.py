"""Usage metering in the agent: measure what started jobs hold, spool it, upload it in order.

* ``UsageMeter.tick(now)``: for every job this agent started or adopted (``spool.subjects``) and
  every window (``window_s``, default 60, aligned to the clock so windows never cross an hour) that
  ended since the job's watermark, one record per resource (vCPU in millicores, memory in bytes,
  GPUs by type) with ``quantity = allocated x seconds`` and a deterministic id; spooled together
  with the new watermark.
  The runtime says whether a job still runs (``job_status``); a job that ended is metered to its end.
* ``UsageUploader.run()``: oldest first, ``batch_size`` records per ``POST /agent/v1/usage``, the next
  batch only after the answer (backpressure); accepted and refused ids leave the spool. While the
  gateway is unreachable it backs off (full jitter, capped) and the records wait on disk.

* ``UsageMeter.adopt()``: the jobs the runtime holds (``runtime.jobs()``, read back from the cluster
  or the host) that the spool neither meters nor has metered to their end become subjects with no
  watermark, so they are metered from their start. This is what makes an empty state folder (a new
  pod: the spool is on an emptyDir) lose no usage: the records' ids are deterministic (job,
  resource, GPU type, window start), windows are aligned to the clock and a job's first one starts
  at the runtime's start time, so the windows the previous agent uploaded come out with the same
  ids and the gateway drops them as duplicates, and the ones lost with its spool are made again.
  (That holds while both agents use the same ``window_s``.) The reporter adopts when it starts,
  again every window until the runtime could be listed once, then every ``adopt_interval_s`` (a
  job whose start could not be recorded, and pruning of the spool's ``metered_jobs``).

* Storage: each tick first syncs the runtime's persistent volumes (``runtime.volumes()``, e.g. the
  Bound PVCs of the jobs namespace) with the spool: a new volume starts a subject, a gone one ends
  it, a resized one ends the old size's subject and starts the new size's at the same second, so the
  old size's windows end where the new size's begin and none is counted twice. Volume records
  (``storage``, ``allocated`` = bytes) name the volume; their id derives from the volume and the
  window start, like a job's. If the listing fails, the volumes known before stay as they are (a
  flaky API never ends their metering).

The wire shape and the id must match ``billing.usage.ingest`` / ``billing.usage.ids`` (this package
imports nothing of the control plane; a test checks both sides compute the same ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec

from connectors.agent.client import AgentClient, Fatal, Transient, _http_problem, _transport_problem
from connectors.agent.spool import DEFAULT_MAX_BYTES, Spool, Subject
from connectors.protocol import AGENT_VERSION, AGENT_VERSION_HEADER, JobSpec
from connectors.runtimes.base import RunningJob, RuntimeFailure, Volume

__all__ = [
    "UNITS",
    "BatchRefused",
    "UsageAck",
    "UsageMeter",
    "UsageRecord",
    "UsageReporter",
    "UsageSettings",
    "UsageUploader",
    "record_id",
]

log = logging.getLogger("metacloud.agent")

NAMESPACE = uuid.UUID("6d1f0b0e-5b8e-4a59-9d0c-3c3f4f7a8e21")  # = billing.usage.ids.NAMESPACE
UNITS = {"vcpu": "millicore_seconds", "memory": "byte_seconds", "gpu": "gpu_seconds", "storage": "byte_seconds"}
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_MAX_WINDOWS_PER_TICK = 5000  # a long catch-up is spread over ticks


def record_id(subject: str, resource: str, gpu_type: str, window_start: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{subject}|{resource}|{gpu_type}|{window_start}"))


class UsageRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    resource: str
    unit: str
    window_start: datetime
    window_end: datetime
    allocated: int
    quantity: int
    job_id: str | None = None
    volume: str | None = None
    gpu_type: str = ""


class Rejection(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    code: str = ""
    reason: str = ""


class UsageAck(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    accepted: list[str] = msgspec.field(default_factory=list)
    rejected: list[Rejection] = msgspec.field(default_factory=list)
    stored: int = 0
    duplicates: int = 0


@dataclass(frozen=True, kw_only=True)
class UsageSettings:
    window_s: int = 60  # must divide an hour
    batch_size: int = 5000
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    idle_upload_s: float = 5.0  # how often an empty spool is looked at again (a tick also wakes it)
    adopt_interval_s: float = 3600.0  # how often the runtime's jobs are compared with the spool's (``adopt``)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or 3600 % self.window_s:
            raise ValueError("the usage window must divide an hour (e.g. 10, 30, 60, 300 seconds)")


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Allocation(Protocol):
    """What a job holds: a ``JobSpec`` (a job this agent starts) or a ``RunningJob`` (one it adopts)."""

    @property
    def cpu_millis(self) -> int: ...

    @property
    def memory_bytes(self) -> int: ...

    @property
    def gpus(self) -> int: ...

    @property
    def gpu_resource(self) -> str: ...

    @property
    def node_selector(self) -> Mapping[str, str]: ...


def gpu_type_of(spec: Allocation) -> str:
    """The GPU model placement chose (node selector), else the resource's own name (``mig-1g.5gb``)."""
    model = spec.node_selector.get(GPU_PRODUCT_LABEL, "")
    if model:
        return model[:64]
    return spec.gpu_resource.rsplit("/", 1)[-1][:64] or "gpu"


def job_spec_record(spec: Allocation) -> dict[str, Any]:
    return {"cpu_millis": spec.cpu_millis, "memory_bytes": spec.memory_bytes, "gpus": spec.gpus,
            "gpu_type": gpu_type_of(spec) if spec.gpus else ""}


def window_records(subject: Subject, start: int, end: int) -> list[UsageRecord]:
    """The records of one window ``[start, end)`` of a job or volume."""
    seconds = end - start
    spec = subject.spec
    if subject.kind == "volume":
        name = str(spec["volume"])  # the spool key also carries size and start (``volume_key``); records name the volume
        parts = [("storage", int(spec.get("bytes", 0)), "")]
    else:
        name = subject.subject
        parts = [("vcpu", int(spec.get("cpu_millis", 0)), ""), ("memory", int(spec.get("memory_bytes", 0)), ""),
                 ("gpu", int(spec.get("gpus", 0)), str(spec.get("gpu_type") or "gpu"))]
    out = []
    for resource, allocated, gpu_type in parts:
        if allocated <= 0:
            continue
        out.append(UsageRecord(
            id=record_id(name, resource, gpu_type, start), resource=resource, unit=UNITS[resource],
            window_start=_dt(start), window_end=_dt(end), allocated=allocated, quantity=allocated * seconds,
            job_id=name if subject.kind == "job" else None,
            volume=name if subject.kind == "volume" else None, gpu_type=gpu_type))
    return out


class MeteredRuntime(Protocol):
    """What the meter asks the runtime: whether a job still runs, which jobs and volumes exist."""

    async def job_status(self, job_id: str) -> Any: ...

    async def volumes(self) -> list[Volume]: ...

    async def jobs(self) -> list[RunningJob]: ...


def volume_key(volume: str, size_bytes: int, started_at: int) -> str:
    """The spool key of one volume at one size from one moment: a resize or a return is a new subject."""
    return f"{volume}@{size_bytes}@{started_at}"


class UsageMeter:
    def __init__(self, spool: Spool, runtime: MeteredRuntime, *, window_s: int = 60,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.spool = spool
        self.runtime = runtime
        self.window_s = window_s
        self.clock = clock
        self._encoder = msgspec.json.Encoder()
        self._volumes_failing = False
        self._jobs_failing = False

    # --- what runs (called by the command executor) --------------------------------------------

    async def job_started(self, spec: JobSpec) -> None:
        await asyncio.to_thread(self.spool.subject_started, spec.job_id, "job", job_spec_record(spec),
                                int(self.clock().timestamp()))

    async def job_stopped(self, job_id: str) -> None:
        await asyncio.to_thread(self.spool.subject_finished, job_id, int(self.clock().timestamp()))

    async def _open_volumes(self) -> list[Subject]:
        return [s for s in await asyncio.to_thread(self.spool.subjects) if s.kind == "volume" and s.finished_at is None]

    async def sync_volumes(self) -> None:
        """Make the metered volumes those the runtime lists now: start new ones, end gone ones, and
        switch a resized one (the old size ends at the second the new one starts, so no window counts
        twice), all in one spool transaction (a crash never leaves a volume ended but not restarted).
        A failed listing changes nothing: metering goes on with the volumes known before."""
        try:
            listed = await self.runtime.volumes()
        except Exception as exc:  # the runtime is down or not allowed to list: keep what we know
            if not self._volumes_failing:
                log.debug("listing volumes failed, metering the ones known before: %r", exc)
            self._volumes_failing = True
            return
        if self._volumes_failing:
            log.debug("listing volumes works again")
        self._volumes_failing = False
        wanted = {v.id: v for v in listed}
        open_now = await self._open_volumes()
        metered = {str(s.spec["volume"]): int(s.spec["bytes"]) for s in open_now}
        now = int(self.clock().timestamp())
        ended = []
        for subject in open_now:
            volume, size = str(subject.spec["volume"]), int(subject.spec["bytes"])
            if volume not in wanted or wanted[volume].size_bytes != size:
                log.info("storage: stop metering volume %s at %d bytes", volume, size)
                ended.append(subject.subject)
        started = []
        for volume, found in wanted.items():
            if metered.get(volume) != found.size_bytes:
                log.info("storage: metering volume %s (%s) at %d bytes", volume, found.name, found.size_bytes)
                started.append((volume_key(volume, found.size_bytes, now), "volume",
                                {"volume": volume, "bytes": found.size_bytes}))
        if ended or started:
            await asyncio.to_thread(self.spool.subjects_switched, ended, started, now)

    async def adopt(self) -> bool:
        """Meter, from their start, the runtime's jobs the spool neither meters nor metered to their end.

        Returns whether the runtime could be listed. A failure is logged once (and its end once): the
        agent goes on metering what it knows, and the caller asks again later.
        """
        try:
            listed = await self.runtime.jobs()
        except Exception as exc:  # the runtime is down or not allowed to list: metering goes on without these
            if not self._jobs_failing:
                log.warning("usage: cannot list the runtime's jobs (%s): jobs this agent did not start are not "
                            "metered until it can; trying again at the next window",
                            exc if isinstance(exc, RuntimeFailure) else repr(exc))
            self._jobs_failing = True
            return False
        if self._jobs_failing:
            log.info("usage: listing the runtime's jobs works again")
        self._jobs_failing = False
        now = self.clock()
        found = [(job.job_id, job_spec_record(job), int((job.started_at or job.created_at or now).timestamp()))
                 for job in listed]  # ``_span`` prefers the runtime's start: this counts only if it has none
        adopted = await asyncio.to_thread(self.spool.adopt_jobs, found)
        if adopted:
            log.info("usage: metering %d job(s) found on the runtime from their start (e.g. %s); windows uploaded "
                     "before come out with the same ids and the gateway drops them", len(adopted), adopted[0])
        return True

    # --- metering ------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Sync the volumes, then meter every subject up to the last window boundary; returns the records spooled."""
        await self.sync_volumes()
        now = int(self.clock().timestamp())
        boundary = now - now % self.window_s
        spooled = 0
        for subject in await asyncio.to_thread(self.spool.subjects):
            spooled += await self._meter(subject, boundary)
        return spooled

    async def _span(self, subject: Subject) -> tuple[int | None, int | None, bool]:
        """(start, end or None while running, known): from the runtime for jobs, the ledger for volumes."""
        if subject.kind != "job":
            return subject.started_at, subject.finished_at, True
        try:
            status = await self.runtime.job_status(subject.subject)
        except Exception as exc:  # the runtime is down: try again next tick, the watermark keeps our place
            log.debug("job_status %s failed: %r", subject.subject, exc)
            return None, None, False
        phase = str(getattr(status, "phase", "unknown"))
        started = getattr(status, "started_at", None)
        finished = getattr(status, "finished_at", None)
        start = int(started.timestamp()) if started is not None else subject.started_at
        if phase == "pending":
            return None, subject.finished_at, True  # not running yet: nothing held by us to meter
        if phase == "running":
            return start, subject.finished_at, True
        if phase in ("succeeded", "failed"):
            end = int(finished.timestamp()) if finished is not None else subject.finished_at
            return start, end if end is not None else start, True
        # unknown: the runtime no longer has it (cancelled and removed): it ran until we stopped it
        return start, subject.finished_at if subject.finished_at is not None else subject.metered_until or start, True

    async def _meter(self, subject: Subject, boundary: int) -> int:
        start, end, known = await self._span(subject)
        if not known:
            return 0
        if start is None:
            if end is not None:  # ended without ever running
                await asyncio.to_thread(self.spool.forget_subject, subject.subject)
            return 0
        begin = subject.metered_until if subject.metered_until is not None else start
        upto = boundary if end is None else min(boundary, end)
        if upto <= begin:
            if end is not None and begin >= end:
                await asyncio.to_thread(self.spool.forget_subject, subject.subject)
            return 0
        records: list[tuple[str, bytes]] = []
        t, windows = begin, 0
        while t < upto and windows < _MAX_WINDOWS_PER_TICK:
            w_end = min(t - t % self.window_s + self.window_s, upto)
            records += [(r.id, self._encoder.encode(r)) for r in window_records(subject, t, w_end)]
            t, windows = w_end, windows + 1
        if not await asyncio.to_thread(self.spool.append, records, advance=[(subject.subject, t, end)]):
            return 0  # spool full: the watermark stays, these windows are metered again later
        if end is not None and t >= end:
            await asyncio.to_thread(self.spool.forget_subject, subject.subject)
        return len(records)


class BatchRefused(Exception):
    """The gateway refused the batch as a whole (400/413/422): it will not take it as it is."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


Sender = Callable[[bytes], Awaitable[UsageAck]]


def client_sender(client: AgentClient) -> Sender:
    """``POST /agent/v1/usage`` with the agent's credential; errors mapped as for every agent call."""

    async def send(body: bytes) -> UsageAck:
        # The answer lists up to 5,000 random ids: gzip would cost the gateway more CPU than it saves bytes.
        headers = {AGENT_VERSION_HEADER: AGENT_VERSION, "Content-Type": "application/json",
                   "Authorization": f"Bearer {client.credential}", "Accept-Encoding": "identity"}
        try:
            response = await client.http.post(f"{client.config.server_url}/agent/v1/usage", content=body,
                                              headers=headers)
        except httpx.TransportError as exc:
            raise _transport_problem(exc, client.config, "usage upload") from exc
        if response.status_code in (400, 413, 422):
            raise BatchRefused(response.status_code, response.text[:300])
        if not response.is_success:
            raise _http_problem(response, client.config, "usage upload", command=False)
        try:
            return msgspec.json.decode(response.content, type=UsageAck)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Transient(f"the answer to usage upload from {client.config.server_url} is not a gateway's") from exc

    return send


class UsageUploader:
    def __init__(self, spool: Spool, send: Sender, *, batch_size: int = 5000, backoff_cap_s: float = 60.0,
                 idle_s: float = 5.0, rand: Callable[[], float] = random.random,
                 on_problem: Callable[[str | None], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.spool = spool
        self.send = send
        self.batch_size = batch_size
        self.backoff_cap_s = backoff_cap_s
        self.idle_s = idle_s
        self.rand = rand
        self.on_problem = on_problem or (lambda line: log.warning("%s", line) if line else None)
        self.sleep = sleep
        self.wake = asyncio.Event()
        self.uploaded = 0
        self.batches = 0
        self._size = batch_size

    async def upload_once(self) -> int:
        """Send the oldest batch and apply the answer; returns how many records left the spool."""
        batch = await asyncio.to_thread(self.spool.oldest, self._size)
        if not batch:
            return 0
        body = b'{"records":[' + b",".join(r.body for r in batch) + b"]}"
        try:
            ack = await self.send(body)
        except BatchRefused as refused:
            if len(batch) > 1:  # find the record it chokes on: halve until one
                self._size = max(1, len(batch) // 2)
                log.warning("the gateway refused a usage batch of %d records (%s); retrying in smaller batches",
                            len(batch), refused)
                return 0
            log.error("the gateway refused usage record %s for good (%s): kept in the spool's rejected table",
                      batch[0].id, refused)
            return await asyncio.to_thread(self.spool.remove, [batch[0].id],
                                           rejected=[(batch[0].id, f"http_{refused.status}", refused.detail)])
        self._size = self.batch_size
        sent = {r.id for r in batch}
        rejected = [(r.id, r.code, r.reason) for r in ack.rejected if r.id in sent]
        if rejected:
            log.warning("the gateway refused %d usage records, e.g. %s: %s (kept in the spool's rejected table)",
                        len(rejected), rejected[0][0], rejected[0][2])
        done = [i for i in ack.accepted if i in sent] + [r[0] for r in rejected]
        removed = await asyncio.to_thread(self.spool.remove, done, rejected=rejected)
        self.uploaded += removed
        self.batches += 1
        return removed

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                removed = await self.upload_once()
            except Fatal:
                raise
            except Transient as problem:
                self.on_problem(f"usage upload: {problem.line}; {self.spool.count} records wait in the spool")
                delay = problem.retry_after_s if problem.retry_after_s is not None else \
                    self.rand() * min(self.backoff_cap_s, float(2 ** min(attempt, 32)))
                attempt += 1
                await self.sleep(delay)
                continue
            if attempt:
                self.on_problem(None)
            attempt = 0
            if removed == 0 and self.spool.count == 0:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.idle_s)


class UsageReporter:
    """What the agent loop runs: the meter every window and the uploader, over one spool."""

    def __init__(self, state_dir: Path, runtime: MeteredRuntime, *, settings: UsageSettings | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings or UsageSettings()
        self.state_dir = state_dir
        self.runtime = runtime
        self.clock = clock
        self._spool: Spool | None = None
        self._meter: UsageMeter | None = None

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.state_dir / "usage-spool.sqlite3", max_bytes=self.settings.spool_max_bytes)
        return self._spool

    @property
    def meter(self) -> UsageMeter:
        if self._meter is None:
            self._meter = UsageMeter(self.spool, self.runtime, window_s=self.settings.window_s, clock=self.clock)
        return self._meter

    async def job_started(self, spec: JobSpec) -> None:
        await self.meter.job_started(spec)

    async def job_stopped(self, job_id: str) -> None:
        await self.meter.job_stopped(job_id)

    async def run(self, client: AgentClient, *, on_problem: Callable[[str | None], None] | None = None) -> None:
        uploader = UsageUploader(self.spool, client_sender(client), batch_size=self.settings.batch_size,
                                 backoff_cap_s=client.config.backoff_cap_s, idle_s=self.settings.idle_upload_s,
                                 on_problem=on_problem)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._meter_loop(uploader), name="agent-usage-meter")
            group.create_task(uploader.run(), name="agent-usage-upload")

    async def _meter_loop(self, uploader: UsageUploader) -> None:
        window = self.settings.window_s
        adopt_at = 0.0  # at once: after a new pod (an empty spool) the jobs already running are metered again
        while True:
            try:
                if self.clock().timestamp() >= adopt_at and await self.meter.adopt():
                    adopt_at = self.clock().timestamp() + self.settings.adopt_interval_s
                if await self.meter.tick():
                    uploader.wake.set()
            except Exception:  # metering must never stop the agent; the watermark keeps the place
                log.exception("usage metering failed; retrying at the next window")
            now = self.clock().timestamp()
            await asyncio.sleep(window - now % window + 0.05)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
