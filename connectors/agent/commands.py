"""Commands from the gateway, executed through the runtime: every failure becomes an error result."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from connectors.protocol import AGENT_VERSION, Command, CommandKind, CommandResult, JobSpec
from connectors.runtimes.base import Runtime, RuntimeFailure

__all__ = ["LOG_RESULT_MAX_CHARS", "CommandExecutor"]

log = logging.getLogger("metacloud.agent")

LOG_RESULT_MAX_CHARS = 256 * 1024  # logs travel in a command result; keep the tail, not megabytes

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class JobLedger(Protocol):
    """Where started and stopped jobs are recorded for usage metering (``connectors.agent.usage``)."""

    async def job_started(self, spec: JobSpec) -> None: ...

    async def job_stopped(self, job_id: str) -> None: ...


class CommandExecutor:
    """Maps a command kind to the runtime call. Payloads:

    * ``provision``: ``{"quota": {"requests.cpu": "64", ...}, "priority_classes": [{"name", "value"}]}`` (optional)
    * ``validate``: ``{}``
    * ``start_job``: the ``JobSpec`` fields (or ``{"spec": {...}}``); the result says ``"job_reports": true``
      when this agent will push the job's status
    * ``cancel_job`` / ``job_status``: ``{"job_id"}``; ``fetch_logs``: ``{"job_id", "tail_lines"?}``
    * ``cleanup``: runtime options, e.g. ``{"delete_namespace": true}``
    """

    def __init__(self, runtime: Runtime, jobs: JobLedger | None = None, *,
                 on_started: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self.jobs = jobs
        self.on_started = on_started  # told each started job id (the job reporter watches it)
        self.handlers: dict[str, Handler] = {
            CommandKind.PROVISION: runtime.provision,
            CommandKind.VALIDATE: self._validate,
            CommandKind.START_JOB: self._start_job,
            CommandKind.CANCEL_JOB: self._cancel_job,
            CommandKind.FETCH_LOGS: self._fetch_logs,
            CommandKind.JOB_STATUS: self._job_status,
            CommandKind.CLEANUP: runtime.cleanup,
        }

    async def execute(self, command: Command) -> CommandResult:
        """Run one command through the runtime; every failure becomes an error result, never a crash."""
        handler = self.handlers.get(command.kind)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return CommandResult(ok=False, error=f"unknown command kind {command.kind!r} (agent {AGENT_VERSION} knows {known})")
        try:
            result = await handler(command.payload)
        except RuntimeFailure as exc:
            log.warning("command %s (%s) failed: %s", command.id, command.kind, exc)
            return CommandResult(ok=False, error=str(exc))
        except (msgspec.ValidationError, KeyError, TypeError, ValueError) as exc:
            return CommandResult(ok=False, error=f"invalid {command.kind} payload: {exc!r}")
        except Exception as exc:
            log.exception("command %s (%s) crashed", command.id, command.kind)
            return CommandResult(ok=False, error=f"agent error during {command.kind}: {type(exc).__name__}: {exc}")
        return CommandResult(ok=True, result=result)

    async def _validate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.runtime.validate()

    async def _start_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        spec = msgspec.convert(payload.get("spec", payload), JobSpec)
        result = await self.runtime.start_job(spec)
        if self.on_started is not None:
            self.on_started(spec.job_id)
            result = {**result, "job_reports": True}  # the gateway waits for our reports instead of asking
        await self._record("start", spec.job_id, lambda jobs: jobs.job_started(spec))
        return result

    async def _record(self, what: str, job_id: str, call: Callable[[JobLedger], Awaitable[None]]) -> None:
        """Usage bookkeeping never fails a command: the job runs either way."""
        if self.jobs is None:
            return
        try:
            await call(self.jobs)
        except Exception:
            log.exception("could not record the %s of job %s for usage metering", what, job_id)

    async def _cancel_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        job_id = str(payload["job_id"])
        await self.runtime.cancel_job(job_id)
        await self._record("stop", job_id, lambda jobs: jobs.job_stopped(job_id))
        return {"job_id": job_id, "cancelled": True}

    async def _job_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return (await self.runtime.job_status(str(payload["job_id"]))).to_dict()

    async def _fetch_logs(self, payload: dict[str, Any]) -> dict[str, Any]:
        job_id = str(payload["job_id"])
        tail = payload.get("tail_lines")
        text = await self.runtime.logs(job_id, int(tail) if tail is not None else None)
        truncated = len(text) > LOG_RESULT_MAX_CHARS
        return {"job_id": job_id, "logs": text[-LOG_RESULT_MAX_CHARS:], "truncated": truncated}
