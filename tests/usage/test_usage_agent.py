"""The agent's side: metering windows from started jobs, the spool across restarts, its bound, uploads."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from billing.usage.ids import record_id_text
from connectors.agent.commands import CommandExecutor
from connectors.agent.spool import Spool
from connectors.agent.usage import (
    BatchRefused,
    UsageAck,
    UsageMeter,
    UsageRecord,
    UsageSettings,
    UsageUploader,
)
from connectors.protocol import Command, JobSpec
from connectors.runtimes.base import JobStatus, RuntimeFailure, Volume

T0 = 1_780_000_000 - 1_780_000_000 % 3600  # an hour boundary


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


class Runtime:
    """Just enough of a runtime: jobs start, run, end when told; volumes are what ``volumes`` holds."""

    kind = "fake"

    def __init__(self) -> None:
        self.status: dict[str, JobStatus] = {}
        self.listed: list[Volume] | Exception = []

    async def start_job(self, spec: JobSpec) -> dict[str, Any]:
        self.status.setdefault(spec.job_id, JobStatus(job_id=spec.job_id, phase="pending"))
        return {"job_id": spec.job_id}

    async def cancel_job(self, job_id: str) -> None:
        self.status.pop(job_id, None)

    async def job_status(self, job_id: str) -> JobStatus:
        return self.status.get(job_id, JobStatus(job_id=job_id, phase="unknown"))

    async def volumes(self) -> list[Volume]:
        if isinstance(self.listed, Exception):
            raise self.listed
        return list(self.listed)

    async def provision(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    cleanup = provision


def _records(spool: Spool) -> list[UsageRecord]:
    return [msgspec.json.decode(r.body, type=UsageRecord) for r in spool.oldest(100_000)]


async def _start(executor: CommandExecutor, job_id: str, **spec: Any) -> None:
    payload = {"job_id": job_id, "name": job_id, **spec}
    result = await executor.execute(Command(id=f"c-{job_id}", kind="start_job", payload=payload))
    assert result.ok, result.error


async def test_a_running_job_is_metered_per_window_and_a_restart_neither_loses_nor_repeats(tmp_path: Path) -> None:
    clock, runtime = Clock(T0 + 30), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    executor = CommandExecutor(runtime, jobs=meter)  # type: ignore[arg-type]
    await _start(executor, "job-1", cpu_millis=1500, memory_bytes=2 << 30, gpus=1,
                 node_selector={"nvidia.com/gpu.product": "A100"})
    runtime.status["job-1"] = JobStatus(job_id="job-1", phase="running", started_at=clock())
    clock.at = T0 + 150  # two window boundaries passed: [30, 60) and [60, 120)
    assert await meter.tick() == 6
    recs = _records(spool)
    windows = sorted({(int(r.window_start.timestamp()) - T0, int(r.window_end.timestamp()) - T0) for r in recs})
    assert windows == [(30, 60), (60, 120)]
    gpu = [r for r in recs if r.resource == "gpu"]
    assert {(r.gpu_type, r.allocated, r.unit) for r in gpu} == {("A100", 1, "gpu_seconds")}
    assert {r.quantity for r in recs if r.resource == "vcpu"} == {1500 * 30, 1500 * 60}
    assert await meter.tick() == 0  # nothing new until the next boundary
    spool.close()

    # the agent restarts: a new spool on the same file, a new meter
    clock.at = T0 + 250
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    assert await meter.tick() == 6  # [120, 180) and [180, 240)
    runtime.status["job-1"] = JobStatus(job_id="job-1", phase="succeeded", started_at=datetime.fromtimestamp(T0 + 30, UTC),
                                        finished_at=datetime.fromtimestamp(T0 + 265, UTC))
    clock.at = T0 + 400
    assert await meter.tick() == 3  # [240, 265): metered to its end, and no further
    assert spool.subjects() == []
    recs = _records(spool)
    assert len({r.id for r in recs}) == len(recs) == 15
    assert sum(r.quantity for r in recs if r.resource == "vcpu") == 1500 * (265 - 30)
    spool.close()


async def test_a_cancelled_job_is_metered_until_it_was_stopped(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    executor = CommandExecutor(runtime, jobs=meter)  # type: ignore[arg-type]
    await _start(executor, "job-2", cpu_millis=1000, memory_bytes=1 << 30)
    runtime.status["job-2"] = JobStatus(job_id="job-2", phase="running")
    clock.at = T0 + 90
    assert (await executor.execute(Command(id="x", kind="cancel_job", payload={"job_id": "job-2"}))).ok
    clock.at = T0 + 300
    await meter.tick()
    vcpu = [r for r in _records(spool) if r.resource == "vcpu"]
    assert sum(r.quantity for r in vcpu) == 1000 * 90 and spool.subjects() == []
    spool.close()


async def test_the_spool_never_crosses_its_bound_and_says_so_loudly(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=1000)
    with caplog.at_level(logging.INFO, "metacloud.agent"):
        assert spool.append([(f"r{i}", b"x" * 100) for i in range(8)])  # 80 %
        assert not spool.append([("big", b"x" * 300)])  # would cross: refused, nothing written
    assert spool.count == 8 and spool.bytes_used == 800
    messages = [r.getMessage() for r in caplog.records]
    assert any("80 % full" in m and r.levelno == logging.WARNING for m, r in zip(messages, caplog.records, strict=True))
    assert any("is full" in m and r.levelno == logging.ERROR for m, r in zip(messages, caplog.records, strict=True))
    spool.remove([f"r{i}" for i in range(8)])
    assert spool.count == 0 and spool.bytes_used == 0
    spool.close()


async def test_a_full_spool_pauses_metering_without_losing_windows(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=10)
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    spool.subject_started("job-3", "job", {"cpu_millis": 1000, "memory_bytes": 0, "gpus": 0}, T0)
    runtime.status["job-3"] = JobStatus(job_id="job-3", phase="running")
    clock.at = T0 + 180
    assert await meter.tick() == 0  # refused: the watermark stays
    spool.max_bytes = 1 << 20
    assert await meter.tick() == 3  # the same three windows, metered late
    spool.close()


async def test_uploads_go_oldest_first_in_batches_and_a_poison_record_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append([(f"r{i:03d}", b'{"id":"r%03d"}' % i) for i in range(25)])
    sent: list[list[str]] = []

    async def send(body: bytes) -> UsageAck:
        ids = [r["id"] for r in msgspec.json.decode(body)["records"]]
        sent.append(ids)
        if "r013" in ids:
            raise BatchRefused(422, "cannot decode record r013")
        return UsageAck(accepted=ids, stored=len(ids))

    uploader = UsageUploader(spool, send, batch_size=10)
    while spool.count:
        await uploader.upload_once()
    assert sent[0] == [f"r{i:03d}" for i in range(10)]  # oldest first, 10 at a time
    assert [r[0] for r in spool.rejected()] == ["r013"]
    assert all(len(b) <= 10 for b in sent)
    spool.close()


def test_the_window_must_divide_an_hour() -> None:
    with pytest.raises(ValueError, match="divide an hour"):
        UsageSettings(window_s=7)
    assert UsageSettings(window_s=300).window_s == 300


# --- storage: the volumes the runtime lists -------------------------------------------------------

GiB = 1 << 30


def _storage(spool: Spool) -> list[tuple[int, int, int, int]]:
    """(start, end, allocated, quantity) of the spooled storage records, relative to T0, in time order."""
    recs = [r for r in _records(spool) if r.resource == "storage"]
    return sorted((int(r.window_start.timestamp()) - T0, int(r.window_end.timestamp()) - T0, r.allocated, r.quantity)
                  for r in recs)


async def test_a_listed_volume_is_metered_as_storage_with_the_ids_ingest_expects(tmp_path: Path) -> None:
    clock, runtime = Clock(T0 + 30), Runtime()
    runtime.listed = [Volume(id="pvc-uid-1", size_bytes=10 * GiB, name="metacloud-jobs/data")]
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    assert await meter.tick() == 0  # seen from T0+30: no window has ended yet
    clock.at = T0 + 150
    assert await meter.tick() == 2
    assert _storage(spool) == [(30, 60, 10 * GiB, 10 * GiB * 30), (60, 120, 10 * GiB, 10 * GiB * 60)]
    for r in _records(spool):
        assert (r.volume, r.job_id, r.unit, r.gpu_type) == ("pvc-uid-1", None, "byte_seconds", "")
        assert r.id == record_id_text("pvc-uid-1", "storage", "", int(r.window_start.timestamp()))
    spool.close()


async def test_a_volume_that_is_gone_is_metered_to_when_it_went_and_then_forgotten(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    runtime.listed = [Volume(id="pvc-2", size_bytes=GiB)]
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    await meter.tick()
    runtime.listed = []
    clock.at = T0 + 100
    await meter.tick()  # released at T0+100; [0, 60) metered
    clock.at = T0 + 300
    await meter.tick()  # [60, 100): to its end, and no further
    clock.at = T0 + 900
    assert await meter.tick() == 0
    assert _storage(spool) == [(0, 60, GiB, GiB * 60), (60, 100, GiB, GiB * 40)]
    assert spool.subjects() == []
    spool.close()


async def test_a_resized_volume_switches_size_at_one_second_without_overlapping_windows(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    runtime.listed = [Volume(id="pvc-3", size_bytes=10 * GiB)]
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    await meter.tick()
    runtime.listed = [Volume(id="pvc-3", size_bytes=20 * GiB)]  # expanded
    clock.at = T0 + 90
    await meter.tick()
    clock.at = T0 + 200
    await meter.tick()
    # back to back at T0+90: the old size up to it, the new one from it; no gap, no overlap
    assert _storage(spool) == [(0, 60, 10 * GiB, 10 * GiB * 60), (60, 90, 10 * GiB, 10 * GiB * 30),
                               (90, 120, 20 * GiB, 20 * GiB * 30), (120, 180, 20 * GiB, 20 * GiB * 60)]
    assert len({r.id for r in _records(spool)}) == 4
    [still] = spool.subjects()  # the old size is done and forgotten; the new one goes on
    assert still.spec == {"volume": "pvc-3", "bytes": 20 * GiB} and still.finished_at is None
    spool.close()


def test_a_resize_is_written_all_or_nothing(tmp_path: Path) -> None:
    """Ending the old size and starting the new one is one spool transaction: if the second half fails, the
    old size is still metered (ended without a successor, the volume would go unmetered until the next tick)."""
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.subjects_switched([], [("pvc-5@1@0", "volume", {"volume": "pvc-5", "bytes": 1})], 0)
    with pytest.raises(TypeError):  # a spec that cannot be stored: the insert fails after the update ran
        spool.subjects_switched(["pvc-5@1@0"], [("pvc-5@2@90", "volume", {"bytes": object()})], 90)
    [kept] = spool.subjects()
    assert (kept.subject, kept.finished_at) == ("pvc-5@1@0", None)
    spool.close()


async def test_a_failed_listing_keeps_metering_the_volumes_known_before(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, runtime = Clock(T0), Runtime()
    runtime.listed = [Volume(id="pvc-4", size_bytes=GiB)]
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    await meter.tick()
    runtime.listed = RuntimeFailure("list persistent volume claims in metacloud-jobs: permission denied")
    with caplog.at_level(logging.DEBUG, "metacloud.agent"):
        for at in (T0 + 60, T0 + 120, T0 + 180):
            clock.at = at
            await meter.tick()
    assert [(s, e) for s, e, _, _ in _storage(spool)] == [(0, 60), (60, 120), (120, 180)]
    failures = [r for r in caplog.records if "listing volumes failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.DEBUG  # once, not every tick
    runtime.listed = []  # the listing works again, and the volume is really gone
    clock.at = T0 + 200
    await meter.tick()
    clock.at = T0 + 300
    await meter.tick()
    assert _storage(spool)[-1] == (180, 200, GiB, GiB * 20) and spool.subjects() == []
    spool.close()


async def test_after_a_restart_a_volume_goes_on_as_the_same_subject(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    runtime.listed = [Volume(id="pvc-5", size_bytes=GiB)]
    spool = Spool(tmp_path / "spool.sqlite3")
    await UsageMeter(spool, runtime, window_s=60, clock=clock).tick()
    spool.close()
    clock.at = T0 + 130
    spool = Spool(tmp_path / "spool.sqlite3")
    assert await UsageMeter(spool, runtime, window_s=60, clock=clock).tick() == 2
    assert [(s, e) for s, e, _, _ in _storage(spool)] == [(0, 60), (60, 120)]
    assert [s.started_at for s in spool.subjects()] == [T0]
    spool.close()
