"""The agent's main loop: register once, then heartbeat and long-poll commands until stopped.

These tasks run side by side once registered: the heartbeat loop (inventory every interval), the
poll loop (``GET /commands?wait=N``; every command is acknowledged as soon as it arrives), one
worker that executes commands in arrival order and posts their results, the usage loop
(``connectors.agent.usage``) and, unless ``job_reports`` is off, the job report loop
(``connectors.agent.job_reports``: job status pushed as it changes). Network trouble is retried
with exponential backoff and full jitter (capped at 60 s), so a gateway restart costs a few seconds.
A ``Fatal`` answer (credential revoked, token refused, upgrade required) ends ``run`` with its exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from connectors.agent.client import (
    EXIT_BAD_TOKEN,
    EXIT_CREDENTIAL_REVOKED,
    AgentClient,
    CommandGone,
    Fatal,
    Transient,
)
from connectors.agent.commands import CommandExecutor
from connectors.agent.config import AgentConfig
from connectors.agent.credentials import (
    CredentialStore,
    CredentialStoreError,
    FileCredentialStore,
    StoredCredential,
    token_digest,
)
from connectors.agent.job_reports import JobReporter
from connectors.agent.usage import UsageReporter, UsageSettings
from connectors.protocol import (
    AGENT_VERSION,
    Command,
    CommandResult,
    Heartbeat,
    Inventory,
    RegisterRequest,
)
from connectors.runtimes.base import Runtime, RuntimeFailure

__all__ = ["Agent", "Diagnostics", "backoff_delay"]

log = logging.getLogger("metacloud.agent")

_REMEMBERED_RESULTS = 256
MIN_EMPTY_POLL_S = 0.25


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt 0 is the first retry)."""
    return rand() * min(cap, base * float(2 ** min(attempt, 32)))


class Diagnostics:
    """One log line per problem: when it starts (or changes), and one line when everything works again.

    Both loops report gateway trouble; the same line from two channels is logged once.
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        self.active: dict[str, str] = {}

    def problem(self, channel: str, line: str, *, level: int = logging.WARNING) -> None:
        if self.active.get(channel) == line:
            return
        already = line in self.active.values()
        self.active[channel] = line
        if not already:
            self.logger.log(level, "%s", line)

    def ok(self, channel: str, recovered: str) -> None:
        if self.active.pop(channel, None) is not None and not self.active:
            self.logger.info("%s", recovered)


class Agent:
    """``await Agent(config, runtime).run(stop)`` returns the process exit code (0 when ``stop`` was set)."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: Runtime,
        http: httpx.AsyncClient | None = None,
        *,
        store: CredentialStore | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        usage: UsageSettings | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.store: CredentialStore = store if store is not None else FileCredentialStore(config.state_dir)
        self.client = AgentClient(config, http, clock=clock, on_clock_skew=self._clock_skew)
        self.rand = rand
        self.clock = clock
        self.diag = Diagnostics()
        self.heartbeat_interval_s: float = config.heartbeat_interval_s or 15.0
        self.command_wait_s: int = config.command_wait_s or 25
        self.cluster_id: str | None = None
        self.registered = asyncio.Event()  # set once a credential is in hand (tests and callers wait on it)
        self.heartbeats_sent = 0
        self.exit_line: str | None = None  # the fatal line, when run ended on one
        self._inventory = Inventory()
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._pending: set[str] = set()
        self._done: OrderedDict[str, CommandResult] = OrderedDict()
        self._skewed = False
        self._token_sha256: str | None = None
        # Usage metering: started jobs are recorded by the executor, metered per window into an on-disk spool
        # in state_dir and uploaded by `_usage_loop` (see connectors.agent.usage).
        self.usage = UsageReporter(config.state_dir, runtime, settings=usage, clock=clock)
        self.reports = JobReporter(runtime, interval_s=config.report_interval_s, backoff_cap_s=config.backoff_cap_s,
                                   clock=clock, rand=rand)
        self.commands = CommandExecutor(runtime, jobs=self.usage,
                                        on_started=self.reports.watch if config.job_reports else None)

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        session = asyncio.create_task(self._session(), name="agent-session")
        stopper = asyncio.create_task(stop.wait(), name="agent-stop")
        try:
            await asyncio.wait([session, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (session, stopper):
                task.cancel()
            results = await asyncio.gather(session, stopper, return_exceptions=True)
            await self.client.aclose()
            self.usage.close()
        outcome = results[0]
        if isinstance(outcome, int):
            return outcome
        if isinstance(outcome, Fatal):
            return await self._fatal(outcome)
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            log.error("the agent stopped on an unexpected error: %r", outcome, exc_info=outcome)
            return 1
        log.info("agent stopped")
        return 0

    async def _fatal(self, problem: Fatal) -> int:
        self.exit_line = problem.line
        log.error("%s", problem.line)
        if problem.exit_code == EXIT_CREDENTIAL_REVOKED:
            # A revoked credential is useless: forget it so a new token can register cleanly.
            with contextlib.suppress(CredentialStoreError):
                await self.store.clear()
        return problem.exit_code

    async def _session(self) -> int:
        if self.config.plain_http_remote:
            log.warning("%s uses plain http: the agent's credential crosses the network unencrypted; use https",
                        self.config.server_url)
        stored = await self._load_credential()
        token = self.config.token
        if stored is not None and token and stored.token_sha256 not in (None, token_digest(token)):
            log.info("a new registration token was given: registering again (the stored credential was for cluster %s)",
                     stored.cluster_id)
            stored = None
        if stored is not None and stored.server_url != self.config.server_url:
            # Never send a credential to a gateway it was not issued by.
            raise Fatal(
                f"the credential in {self.store.describe()} belongs to {stored.server_url}, not "
                f"{self.config.server_url}: run the new install command (with its token) to connect here",
                EXIT_BAD_TOKEN,
            )
        if stored is None:
            if not self.config.token:
                line = (f"no stored credential in {self.store.describe()} and no registration token: "
                        "pass --token (or METACLOUD_TOKEN) from the cluster connect page")
                self.exit_line = line
                log.error("%s", line)
                return EXIT_BAD_TOKEN
            stored = await self._register(self.config.token)
        self.client.credential = stored.credential
        self.cluster_id = stored.cluster_id
        self._token_sha256 = stored.token_sha256
        self.registered.set()
        log.info("connected to %s as cluster %s (runtime %s, agent %s)", self.config.server_url, stored.cluster_id,
                 self.runtime.kind, AGENT_VERSION)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat_loop(), name="agent-heartbeat")
                group.create_task(self._poll_loop(), name="agent-poll")
                group.create_task(self._worker(), name="agent-worker")
                group.create_task(self._usage_loop(), name="agent-usage")
                if self.config.job_reports:
                    group.create_task(self._report_loop(), name="agent-job-reports")
        except BaseExceptionGroup as group_error:
            fatal = _first_fatal(group_error)
            if fatal is None:
                raise
            raise fatal from None
        return 0  # pragma: no cover - the loops only end by an exception

    async def _retry_pause(self, attempt: int, problem: Transient | None = None) -> None:
        if problem is not None and problem.retry_after_s is not None:
            await asyncio.sleep(min(problem.retry_after_s, self.config.backoff_cap_s))
        else:
            await asyncio.sleep(backoff_delay(attempt, cap=self.config.backoff_cap_s, rand=self.rand))

    async def _load_credential(self) -> StoredCredential | None:
        attempt = 0
        while True:
            try:
                stored = await self.store.load()
            except CredentialStoreError as exc:
                self.diag.problem("store", str(exc), level=logging.ERROR)
                await self._retry_pause(attempt)
                attempt += 1
                continue
            self.diag.ok("store", "credential store readable again")
            return stored

    async def _register(self, token: str) -> StoredCredential:
        attempt = 0
        while True:
            try:
                facts = await self.runtime.facts()
                answer = await self.client.register(RegisterRequest(token=token, facts=facts))
            except RuntimeFailure as exc:
                self.diag.problem("runtime", f"cannot read this cluster's facts: {exc}")
                await self._retry_pause(attempt)
                attempt += 1
                continue
            except Transient as problem:
                self.diag.problem("gateway", problem.line)
                await self._retry_pause(attempt, problem)
                attempt += 1
                continue
            break
        self.diag.ok("gateway", f"reached {self.config.server_url}")
        stored = StoredCredential(server_url=self.config.server_url, cluster_id=answer.cluster_id,
                                  credential=answer.credential, token_sha256=token_digest(token))
        try:
            await self.store.save(stored)
        except CredentialStoreError as exc:
            log.error("%s: the agent works until it restarts, then it cannot register again with the same token", exc)
        if self.config.heartbeat_interval_s is None:
            self.heartbeat_interval_s = float(answer.heartbeat_interval_s)
        if self.config.command_wait_s is None:
            self.command_wait_s = answer.command_wait_s
        log.info("registered as cluster %s; credential stored in %s", answer.cluster_id, self.store.describe())
        return stored

    def _clock_skew(self, line: str | None) -> None:
        if line and not self._skewed:
            log.warning("%s", line)
        elif not line and self._skewed:
            log.info("clock skew resolved: this host's clock agrees with the gateway's")
        self._skewed = bool(line)

    # --- heartbeats -----------------------------------------------------------------------------

    async def _collect_inventory(self) -> Inventory:
        try:
            self._inventory = await self.runtime.inventory()
        except RuntimeFailure as exc:
            self.diag.problem("inventory", f"inventory failed, sending the last one: {exc}")
        except Exception as exc:  # a runtime bug must not stop the heartbeats that keep the cluster attached
            log.debug("inventory crashed", exc_info=True)
            self.diag.problem("inventory", f"inventory failed, sending the last one: {exc!r}")
        else:
            self.diag.ok("inventory", "inventory works again")
        return self._inventory

    async def _heartbeat_loop(self) -> None:
        attempt = 0
        while True:
            inventory = await self._collect_inventory()
            try:
                answer = await self.client.heartbeat(
                    Heartbeat(sent_at=self.clock(), agent_version=AGENT_VERSION, inventory=inventory)
                )
            except Transient as problem:
                self.diag.problem("heartbeat", problem.line)
                await self._retry_pause(attempt, problem)
                attempt += 1
                continue
            attempt = 0
            self.heartbeats_sent += 1
            self.diag.ok("heartbeat", f"connected to {self.config.server_url} again")
            if answer.new_credential and answer.new_credential != self.client.credential:
                await self._rotate(answer.new_credential)
            if self.config.heartbeat_interval_s is None:
                self.heartbeat_interval_s = float(answer.heartbeat_interval_s)
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _rotate(self, credential: str) -> None:
        self.client.credential = credential
        try:
            await self.store.save(StoredCredential(
                server_url=self.config.server_url, cluster_id=self.cluster_id or "", credential=credential,
                token_sha256=self._token_sha256,
            ))
        except CredentialStoreError as exc:
            log.error("%s: using the rotated credential in memory only", exc)
        else:
            log.info("agent credential rotated and stored in %s", self.store.describe())

    # --- usage ----------------------------------------------------------------------------------

    async def _usage_loop(self) -> None:
        def report(line: str | None) -> None:
            if line is None:
                self.diag.ok("usage", f"usage uploads to {self.config.server_url} work again")
            else:
                self.diag.problem("usage", line)

        await self.usage.run(self.client, on_problem=report)

    # --- job reports ----------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        def report(line: str | None) -> None:
            if line is None:
                self.diag.ok("job-reports", f"job reports to {self.config.server_url} work again")
            else:
                self.diag.problem("job-reports", line)

        await self.reports.run(self.client, on_problem=report)

    # --- commands -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                batch = await self.client.commands(self.command_wait_s)
            except Transient as problem:
                self.diag.problem("commands", problem.line)
                await self._retry_pause(attempt, problem)
                attempt += 1
                continue
            attempt = 0
            self.diag.ok("commands", f"connected to {self.config.server_url} again")
            for command in batch.commands:
                await self._receive(command)
            if not batch.commands and loop.time() - started < MIN_EMPTY_POLL_S:
                # Something in between answers long polls at once (a proxy, an old gateway): don't spin.
                await asyncio.sleep(MIN_EMPTY_POLL_S)

    async def _receive(self, command: Command) -> None:
        """Acknowledge at once; queue for the worker unless it is already queued or done."""
        try:
            await self.client.ack(command.id)
        except CommandGone as gone:
            log.info("command %s (%s) skipped: %s", command.id, command.kind, gone.line)
            return
        except Transient as problem:
            # Not acknowledged: the lease expires and the gateway sends it again.
            self.diag.problem("commands", problem.line)
            return
        if command.id in self._pending:
            return  # redelivered while still queued or running
        self._pending.add(command.id)
        await self._queue.put(command)

    async def _worker(self) -> None:
        while True:
            command = await self._queue.get()
            try:
                result = self._done.get(command.id)
                if result is None:  # a redelivery after our result got lost is answered, not run again
                    result = await self.execute(command)
                    self._done[command.id] = result
                    while len(self._done) > _REMEMBERED_RESULTS:
                        self._done.popitem(last=False)
                await self._post_result(command, result)
            finally:
                self._pending.discard(command.id)

    async def _post_result(self, command: Command, result: CommandResult) -> None:
        attempt = 0
        while True:
            try:
                await self.client.result(command.id, result)
                return
            except CommandGone as gone:
                log.info("result of command %s (%s) dropped: %s", command.id, command.kind, gone.line)
                return
            except Transient as problem:
                self.diag.problem("commands", problem.line)
                await self._retry_pause(attempt, problem)
                attempt += 1

    async def execute(self, command: Command) -> CommandResult:
        """Run one command through the runtime; every failure becomes an error result, never a crash."""
        return await self.commands.execute(command)


def _first_fatal(group: BaseExceptionGroup[BaseException]) -> Fatal | None:
    for exc in group.exceptions:
        if isinstance(exc, Fatal):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_fatal(exc)
            if found is not None:
                return found
    return None
