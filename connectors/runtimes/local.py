"""The local runtime: jobs are processes on this host (bare hosts, and the machine itself in ``make dev``).

Each job runs in its own process group (so cancel stops its children too), with stdout and stderr
in ``<state>/jobs/<id>/output.log``, its allocation and start in ``allocation.json`` (so ``jobs()``
can tell an agent with an empty usage spool what to meter) and its outcome in ``status.json`` (read
back after an agent restart). CPU and memory are reported, not enforced. GPUs are seen only through
``nvidia-smi``.
Inventory uses ``os`` and ``/proc`` only: the agent must not need psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from connectors.protocol import AGENT_VERSION, AgentFacts, GpuCapacity, Inventory, JobSpec, NodeInventory
from connectors.runtimes.base import JobPhase, JobStatus, RunningJob, RuntimeFailure, Volume

__all__ = ["LocalRuntime", "host_cpu_millis", "host_memory_bytes"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_LOG_TAIL_MAX_BYTES = 4 << 20  # the tail of a huge log is read from its last 4 MiB
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_ALLOCATION = "allocation.json"


def host_cpu_millis() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))  # honours taskset/cpusets, unlike cpu_count
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus * 1000


def host_memory_bytes() -> int:
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if not total:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # Inside a container the cgroup limit is what the jobs can really use.
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and 0 < int(limit) < total:
            total = int(limit)
    return total


def _nvidia_gpus() -> list[str]:
    """GPU names from nvidia-smi, or [] when it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(  # noqa: S603 - fixed arguments, absolute path from which()
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Job:
    spec: JobSpec
    directory: Path
    process: asyncio.subprocess.Process
    started_at: datetime
    gpus: list[int] = field(default_factory=list)
    cancelled: bool = False
    deadline_hit: bool = False
    finished_at: datetime | None = None
    waiter: asyncio.Task[None] | None = None


class LocalRuntime:
    kind = "local"

    def __init__(self, state_dir: Path | str | None = None, *, kill_grace_s: float = 10.0) -> None:
        base = Path(state_dir) if state_dir else Path.home() / ".metacloud-agent"
        self.jobs_dir = base / "jobs"
        self.kill_grace_s = kill_grace_s
        self._jobs: dict[str, _Job] = {}
        self._gpu_names: list[str] | None = None

    async def _gpus(self) -> list[str]:
        if self._gpu_names is None:
            self._gpu_names = await asyncio.to_thread(_nvidia_gpus)
        return self._gpu_names

    def _dir(self, job_id: str) -> Path:
        safe = _SAFE.sub("-", job_id).strip("-.")[:80]
        if safe != job_id:  # keep distinct ids distinct after cleaning
            safe = f"{safe}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"
        return self.jobs_dir / safe

    # --- facts and inventory --------------------------------------------------------------------

    async def facts(self) -> AgentFacts:
        machine = platform.machine().lower()
        return AgentFacts(
            runtime=self.kind, agent_version=AGENT_VERSION, hostname=socket.gethostname(),
            platform=f"{sys.platform}/{_ARCH.get(machine, machine)}",
        )

    def _running(self) -> list[_Job]:
        return [job for job in self._jobs.values() if job.process.returncode is None]

    async def inventory(self) -> Inventory:
        running = self._running()
        gpu_names = await self._gpus()
        gpus: list[GpuCapacity] = []
        if gpu_names:
            used = sum(len(job.gpus) for job in running)
            models = sorted(set(gpu_names))
            gpus = [GpuCapacity(resource="nvidia.com/gpu", model=models[0] if len(models) == 1 else ", ".join(models),
                                allocatable=len(gpu_names), allocated=used)]
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        disk = await asyncio.to_thread(shutil.disk_usage, self.jobs_dir)
        hostname = socket.gethostname()
        machine = platform.machine().lower()
        node = NodeInventory(
            name=hostname,
            cpu_allocatable_millis=host_cpu_millis(),
            cpu_allocated_millis=sum(job.spec.cpu_millis for job in running),
            memory_allocatable_bytes=host_memory_bytes(),
            memory_allocated_bytes=sum(job.spec.memory_bytes for job in running),
            gpus=gpus,
            labels={
                "kubernetes.io/hostname": hostname,
                "kubernetes.io/os": sys.platform,
                "kubernetes.io/arch": _ARCH.get(machine, machine),
                "metacloud.io/runtime": self.kind,
            },
        )
        return Inventory(nodes=[node], storage_total_bytes=disk.total, storage_allocated_bytes=disk.used)

    async def provision(self, payload: dict[str, Any]) -> dict[str, Any]:
        existed = self.jobs_dir.is_dir()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        return {"jobs_dir": str(self.jobs_dir), "created": [] if existed else [str(self.jobs_dir)],
                "existing": [str(self.jobs_dir)] if existed else []}

    async def validate(self) -> dict[str, Any]:
        problems: list[str] = []
        writable = False
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            probe = self.jobs_dir / ".probe"
            probe.write_text("ok")
            probe.unlink()
            writable = True
        except OSError as exc:
            problems.append(f"cannot write to {self.jobs_dir}: {exc.strerror or exc}")
        gpus: dict[str, int] = {}
        for name in await self._gpus():
            key = f"nvidia.com/gpu|{name}"
            gpus[key] = gpus.get(key, 0) + 1
        return {"ok": not problems, "permissions": {f"write {self.jobs_dir}": writable}, "gpus": gpus,
                "problems": problems}

    async def cleanup(self, payload: dict[str, Any]) -> dict[str, Any]:
        cancelled = []
        for job in self._running():
            await self.cancel_job(job.spec.job_id)
            cancelled.append(job.spec.job_id)
        removed = False
        if payload.get("delete_data", False) and self.jobs_dir.exists():
            await asyncio.to_thread(shutil.rmtree, self.jobs_dir, True)
            removed = True
        return {"cancelled": cancelled, "deleted_data": removed}

    # --- jobs -----------------------------------------------------------------------------------

    async def start_job(self, spec: JobSpec) -> dict[str, Any]:
        if spec.job_id in self._jobs or (self._dir(spec.job_id) / "status.json").exists():
            return {"job_id": spec.job_id, "existing": True}
        argv = [*spec.command, *spec.args]
        if not argv:
            raise RuntimeFailure("a local job needs a command (the local runtime does not run images)")
        gpu_ids: list[int] = []
        if spec.gpus:
            total = len(await self._gpus())
            busy = {i for job in self._running() for i in job.gpus}
            free = [i for i in range(total) if i not in busy]
            if len(free) < spec.gpus:
                raise RuntimeFailure(f"this host has {len(free)} free GPU(s) of {total}; the job asks for {spec.gpus}")
            gpu_ids = free[: spec.gpus]
        directory = self._dir(spec.job_id)
        directory.mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(spec.env)
        env["METACLOUD_JOB_ID"] = spec.job_id
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        with (directory / "output.log").open("ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    cwd=directory, env=env, start_new_session=True,  # own process group: cancel reaches children
                )
            except OSError as exc:
                raise RuntimeFailure(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        job = _Job(spec=spec, directory=directory, process=process, started_at=_now(), gpus=gpu_ids)
        self._jobs[spec.job_id] = job
        _save_allocation(job)
        job.waiter = asyncio.create_task(self._watch(job), name=f"local-job-{spec.job_id}")
        return {"job_id": spec.job_id, "pid": process.pid, "existing": False,
                **({"note": "image ignored by the local runtime"} if spec.image else {})}

    async def _watch(self, job: _Job) -> None:
        try:
            if job.spec.max_runtime_s:
                try:
                    await asyncio.wait_for(asyncio.shield(job.process.wait()), job.spec.max_runtime_s)
                except TimeoutError:
                    job.deadline_hit = True
                    await self._stop(job)
            await job.process.wait()
        finally:
            if job.process.returncode is not None:  # not when the agent stops watching a running job
                job.finished_at = _now()
                status = self._status_of(job)
                with contextlib.suppress(OSError):
                    (job.directory / "status.json").write_text(json.dumps(status.to_dict(), default=str))

    async def _stop(self, job: _Job) -> None:
        process = job.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.kill_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def _status_of(self, job: _Job) -> JobStatus:
        code = job.process.returncode
        if code is None:
            return JobStatus(job_id=job.spec.job_id, phase=JobPhase.RUNNING, started_at=job.started_at)
        if job.cancelled:
            phase, reason = JobPhase.FAILED, "cancelled"
        elif job.deadline_hit:
            phase, reason = JobPhase.FAILED, f"ran longer than its max runtime ({job.spec.max_runtime_s} s)"
        elif code == 0:
            phase, reason = JobPhase.SUCCEEDED, ""
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (possibly out of memory)" if -code == signal.SIGKILL else ""
            phase, reason = JobPhase.FAILED, f"killed by {name}{hint}"
        else:
            phase, reason = JobPhase.FAILED, f"exited with code {code}"
        return JobStatus(job_id=job.spec.job_id, phase=phase, reason=reason, exit_code=code,
                         started_at=job.started_at, finished_at=job.finished_at or _now())

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One by one: each is a look at a process or a small file on this host."""
        return {job_id: await self.job_status(job_id) for job_id in job_ids}

    async def job_status(self, job_id: str) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is not None:
            if job.process.returncode is not None and job.waiter is not None and not job.waiter.done():
                await asyncio.shield(job.waiter)  # exited a moment ago: let the watcher record it
            return self._status_of(job)
        saved = self._dir(job_id) / "status.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            return JobStatus(
                job_id=job_id, phase=data.get("phase", JobPhase.UNKNOWN), reason=data.get("reason", ""),
                exit_code=data.get("exit_code"),
                started_at=datetime.fromisoformat(data["started_at"]) if data.get("started_at") else None,
                finished_at=datetime.fromisoformat(data["finished_at"]) if data.get("finished_at") else None,
            )
        if self._dir(job_id).exists():
            return JobStatus(job_id=job_id, phase=JobPhase.UNKNOWN, reason="the agent restarted while this job ran")
        return JobStatus(job_id=job_id, phase=JobPhase.UNKNOWN, reason="no such job on this host")

    async def cancel_job(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.process.returncode is not None:
            return
        job.cancelled = True
        await self._stop(job)
        if job.waiter is not None:
            await asyncio.shield(job.waiter)

    async def logs(self, job_id: str, tail_lines: int | None = None) -> str:
        path = self._dir(job_id) / "output.log"
        if not path.exists():
            return ""
        return await asyncio.to_thread(_tail, path, tail_lines)

    async def jobs(self) -> list[RunningJob]:
        """The jobs whose folder holds their allocation (jobs started by an agent that did not write
        one are left out: there is nothing to meter them by)."""
        return await asyncio.to_thread(self._stored_jobs)

    def _stored_jobs(self) -> list[RunningJob]:
        found = []
        for path in sorted(self.jobs_dir.glob(f"*/{_ALLOCATION}")):
            try:
                found.append(msgspec.json.decode(path.read_bytes(), type=RunningJob))
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                continue  # unreadable or cut short by a crash: nothing to meter it by
        return found

    async def volumes(self) -> list[Volume]:
        """None: a bare host has no persistent volumes of the org's; its disks are the host's own, not metered."""
        return []

    async def aclose(self) -> None:
        """Leave running jobs alone (they outlive an agent restart) but stop watching them."""
        for job in self._jobs.values():
            if job.waiter is not None and not job.waiter.done():
                job.waiter.cancel()


def _save_allocation(job: _Job) -> None:
    """Write what the job holds and when it started, without its command or environment (which may hold
    secrets). A failed write never stops a started job: only its re-metering by a later agent is lost."""
    spec = job.spec
    allocation = RunningJob(job_id=spec.job_id, cpu_millis=spec.cpu_millis, memory_bytes=spec.memory_bytes,
                            gpus=spec.gpus, gpu_resource=spec.gpu_resource, node_selector=dict(spec.node_selector),
                            started_at=job.started_at, created_at=job.started_at)
    with contextlib.suppress(OSError):
        (job.directory / _ALLOCATION).write_bytes(msgspec.json.encode(allocation))


def _tail(path: Path, lines: int | None) -> str:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _LOG_TAIL_MAX_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    if lines is None:
        return text
    if lines <= 0:
        return ""
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)
