"""The agent's loop against a scripted gateway (httpx.MockTransport): what users and the control plane see."""

from __future__ import annotations

import logging
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.agent import Agent, AgentConfig, FileCredentialStore, MemoryCredentialStore, StoredCredential
from connectors.protocol import AGENT_VERSION_HEADER, Command
from tests.connectors.agent.fakes import SERVER, FakeGateway, FakeRuntime, problem, run_until


def _config(tmp_path: Path, **kw: Any) -> AgentConfig:
    values: dict[str, Any] = {"server_url": SERVER, "token": "mct_token", "state_dir": tmp_path,
                              "heartbeat_interval_s": 0.02}
    values.update(kw)
    return AgentConfig(**values)


def _agent(gw: FakeGateway, tmp_path: Path, *, runtime: FakeRuntime | None = None, **kw: Any) -> Agent:
    # rand=0: every backoff pause is zero, so retries cost no wall time in tests.
    return Agent(_config(tmp_path, **kw), runtime or FakeRuntime(), http=gw.client(), rand=lambda: 0.0)


async def test_registers_once_stores_the_credential_privately_and_heartbeats_inventory(tmp_path: Path) -> None:
    gw = FakeGateway()
    agent = _agent(gw, tmp_path)
    code = await run_until(agent, lambda: len(gw.heartbeats) >= 3)

    assert code == 0
    assert gw.count("/register") == 1
    assert gw.registrations[0].token == "mct_token" and gw.registrations[0].facts.runtime == "fake"
    assert gw.heartbeats[0].inventory.nodes[0].name == "n1"
    credential = tmp_path / "credential.json"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert "mca_first" in credential.read_text()
    assert agent.cluster_id == "cl_1"


async def test_every_call_says_the_agent_version_and_only_register_goes_without_a_credential(tmp_path: Path) -> None:
    gw = FakeGateway()
    await run_until(_agent(gw, tmp_path), lambda: len(gw.heartbeats) >= 1 and gw.count("/commands") >= 1)
    assert all(r.headers[AGENT_VERSION_HEADER] for r in gw.requests)
    register = next(r for r in gw.requests if r.url.path.endswith("/register"))
    assert "authorization" not in register.headers
    others = [r for r in gw.requests if not r.url.path.endswith("/register")]
    assert others and all(r.headers["authorization"] == "Bearer mca_first" for r in others)


async def test_a_stored_credential_is_used_and_the_token_is_not_redeemed_again(tmp_path: Path) -> None:
    gw = FakeGateway()
    await FileCredentialStore(tmp_path).save(StoredCredential(server_url=SERVER, cluster_id="cl_1", credential="mca_first"))
    code = await run_until(_agent(gw, tmp_path), lambda: len(gw.heartbeats) >= 2)
    assert code == 0 and gw.count("/register") == 0


async def test_commands_are_acknowledged_on_receipt_then_run_and_answered(tmp_path: Path) -> None:
    gw = FakeGateway()
    runtime = FakeRuntime()
    gw.pending = [
        Command(id="c1", kind="provision", payload={"quota": {"cpu": "8"}}),
        Command(id="c2", kind="start_job", payload={"job_id": "j1", "name": "train", "image": "img", "gpus": 1}),
        Command(id="c3", kind="fetch_logs", payload={"job_id": "j1", "tail_lines": 2}),
    ]
    await run_until(_agent(gw, tmp_path, runtime=runtime), lambda: len(gw.results) == 3)

    for cid in ("c1", "c2", "c3"):
        assert gw.events.index(f"ack:{cid}") < gw.events.index(f"result:{cid}")
    assert [name for name, _ in runtime.calls] == ["provision", "start_job"]  # in arrival order
    assert gw.results["c1"][0].ok and gw.results["c1"][0].result == {"created": ["namespace/metacloud-jobs"]}
    assert runtime.calls[1][1].gpus == 1
    assert gw.results["c3"][0].result == {"job_id": "j1", "logs": "line\nline\nline\n", "truncated": False}


async def test_an_unknown_command_kind_is_answered_with_an_error_and_the_agent_keeps_going(tmp_path: Path) -> None:
    gw = FakeGateway()
    gw.pending = [Command(id="c9", kind="teleport"), Command(id="c10", kind="validate")]
    code = await run_until(_agent(gw, tmp_path), lambda: len(gw.results) == 2)
    assert code == 0
    [result] = gw.results["c9"]
    assert result.ok is False and result.error is not None and "unknown command kind 'teleport'" in result.error
    assert gw.results["c10"][0].ok is True


async def test_a_runtime_failure_is_reported_as_the_commands_error(tmp_path: Path) -> None:
    gw = FakeGateway()
    gw.pending = [Command(id="c1", kind="provision", payload={"fail": True}),
                  Command(id="c2", kind="start_job", payload={"name": "no job id"})]
    await run_until(_agent(gw, tmp_path), lambda: len(gw.results) == 2)
    assert gw.results["c1"][0].error == "create namespace metacloud-jobs: permission denied"
    assert gw.results["c2"][0].ok is False and "invalid start_job payload" in (gw.results["c2"][0].error or "")


async def test_a_redelivered_command_is_answered_again_but_not_run_twice(tmp_path: Path) -> None:
    gw = FakeGateway()
    runtime = FakeRuntime()
    gw.pending = [Command(id="c1", kind="provision")]
    agent = _agent(gw, tmp_path, runtime=runtime)

    def redeliver_once() -> bool:
        if len(gw.results.get("c1", [])) == 1 and gw.events.count("ack:c1") == 1:
            gw.pending = [Command(id="c1", kind="provision", attempt=2)]
        return len(gw.results.get("c1", [])) == 2

    await run_until(agent, redeliver_once)
    assert [name for name, _ in runtime.calls] == ["provision"]


async def test_a_command_the_gateway_took_back_is_not_run(tmp_path: Path) -> None:
    gw = FakeGateway()
    runtime = FakeRuntime()
    gw.pending = [Command(id="gone", kind="provision"), Command(id="c2", kind="validate")]
    gw.intercept = lambda r: problem(409, "invalid_request", "lease expired") if r.url.path.endswith("/gone/ack") else None
    await run_until(_agent(gw, tmp_path, runtime=runtime), lambda: "c2" in gw.results)
    assert [name for name, _ in runtime.calls] == ["validate"] and "gone" not in gw.results


async def test_a_revoked_credential_stops_the_agent_with_exit_3_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = FakeGateway()
    agent = _agent(gw, tmp_path)

    def revoke_after_two() -> bool:
        gw.revoked = len(gw.heartbeats) >= 2
        return False

    with caplog.at_level(logging.INFO, "metacloud.agent"):
        code = await run_until(agent, revoke_after_two)
    assert code == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [agent.exit_line]
    assert "the cluster was detached or its agent credential revoked" in errors[0]
    assert not (tmp_path / "credential.json").exists()  # forgotten: a new token can register cleanly


@pytest.mark.parametrize(("code", "words"), [
    ("token_invalid", "not accepted (unknown, already used, or revoked)"),
    ("token_expired", "has expired"),
])
async def test_a_refused_registration_token_exits_2_with_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: str, words: str
) -> None:
    gw = FakeGateway()
    gw.intercept = lambda r: problem(401, code) if r.url.path.endswith("/register") else None
    with caplog.at_level(logging.WARNING, "metacloud.agent"):
        exit_code = await run_until(_agent(gw, tmp_path), lambda: False)
    assert exit_code == 2
    assert [r.getMessage() for r in caplog.records] == [caplog.records[0].getMessage()]
    assert words in caplog.records[0].getMessage()
    assert gw.count("/register") == 1  # refusals are final: no retry storm against the gateway


async def test_an_agent_too_old_for_the_gateway_exits_4_with_the_upgrade_hint(tmp_path: Path) -> None:
    gw = FakeGateway()
    gw.intercept = lambda r: problem(426, "agent_upgrade_required", "upgrade to 0.2.0: pip install -U metacloud")
    agent = _agent(gw, tmp_path)
    assert await run_until(agent, lambda: False) == 4
    assert agent.exit_line is not None and "too old" in agent.exit_line and "upgrade to 0.2.0" in agent.exit_line


async def test_a_gateway_restart_costs_one_log_line_and_the_agent_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = FakeGateway()
    outage = {"left": 0}

    def down(request: httpx.Request) -> httpx.Response | None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused") from ConnectionRefusedError(111, "refused")
        return None

    gw.intercept = down

    def restart_once() -> bool:
        if len(gw.heartbeats) == 2 and outage["left"] == 0 and not restart_once.done:  # type: ignore[attr-defined]
            outage["left"] = 12
            restart_once.done = True  # type: ignore[attr-defined]
        return len(gw.heartbeats) >= 5

    restart_once.done = False  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, "metacloud.agent"):
        code = await run_until(_agent(gw, tmp_path), restart_once)
    assert code == 0
    messages = [r.getMessage() for r in caplog.records]
    refused = [m for m in messages if "connection refused by gw.example.com" in m]
    assert len(refused) == 1
    assert any(m.endswith("again") for m in messages)
    assert gw.count("/register") == 1


async def test_no_credential_and_no_token_exits_2_naming_the_flag(tmp_path: Path) -> None:
    agent = _agent(FakeGateway(), tmp_path, token=None)
    assert await run_until(agent, lambda: False) == 2
    assert agent.exit_line is not None and "--token" in agent.exit_line


async def test_a_credential_stored_for_another_gateway_is_never_sent_to_this_one(tmp_path: Path) -> None:
    gw = FakeGateway()
    store = MemoryCredentialStore(StoredCredential(server_url="https://old.example.com", cluster_id="c", credential="mca_old"))
    agent = Agent(_config(tmp_path), FakeRuntime(), http=gw.client(), store=store)
    assert await run_until(agent, lambda: False) == 2
    assert gw.requests == [] and agent.exit_line is not None and "old.example.com" in agent.exit_line


async def test_a_rotated_credential_is_stored_and_used_from_the_next_call(tmp_path: Path) -> None:
    gw = FakeGateway()
    gw.new_credential = "mca_second"
    store = MemoryCredentialStore()
    agent = Agent(_config(tmp_path), FakeRuntime(), http=gw.client(), store=store, rand=lambda: 0.0)
    await run_until(agent, lambda: len(gw.heartbeats) >= 3)
    assert store.stored is not None and store.stored.credential == "mca_second"
    assert gw.requests[-1].headers["authorization"] == "Bearer mca_second"


async def test_clock_skew_over_a_minute_is_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = FakeGateway()
    gw.clock_offset = timedelta(minutes=5)
    with caplog.at_level(logging.WARNING, "metacloud.agent"):
        await run_until(_agent(gw, tmp_path), lambda: len(gw.heartbeats) >= 3)
    skew = [r.getMessage() for r in caplog.records if "clock skew" in r.getMessage()]
    assert len(skew) == 1
    assert "300 s behind the gateway's" in skew[0] or "299 s behind" in skew[0]


async def test_a_bare_host_agent_runs_a_job_and_reports_its_status_and_logs(tmp_path: Path) -> None:
    from connectors.runtimes import make_runtime

    gw = FakeGateway()
    runtime = make_runtime("local", state_dir=tmp_path)
    agent = Agent(_config(tmp_path), runtime, http=gw.client(), rand=lambda: 0.0)
    gw.pending = [Command(id="c1", kind="start_job",
                          payload={"job_id": "j1", "name": "hello", "command": ["sh", "-c", "echo hello; exit 3"]})]
    polls: list[str] = []  # job_status commands sent so far

    def progress() -> bool:
        last = gw.results.get(polls[-1]) if polls else None
        if "c1" in gw.results and (not polls or (last and last[0].result["phase"] == "running")):
            polls.append(f"status-{len(polls)}")  # ask (again) until the job has ended
            gw.pending = [Command(id=polls[-1], kind="job_status", payload={"job_id": "j1"})]
        elif last and last[0].result["phase"] == "failed" and not any(r.url.path.endswith("/c3/ack") for r in gw.requests):
            gw.pending = [Command(id="c3", kind="fetch_logs", payload={"job_id": "j1"})]
        return "c3" in gw.results

    assert await run_until(agent, progress) == 0
    status = gw.results[polls[-1]][0].result
    assert (status["phase"], status["exit_code"], status["reason"]) == ("failed", 3, "exited with code 3")
    assert gw.results["c3"][0].result["logs"] == "hello\n"
    assert gw.heartbeats[0].inventory.nodes[0].cpu_allocatable_millis >= 1000


async def test_the_same_install_command_run_again_reuses_the_credential_but_a_new_token_registers_anew(
    tmp_path: Path,
) -> None:
    gw = FakeGateway()
    await run_until(_agent(gw, tmp_path), lambda: len(gw.heartbeats) >= 1)
    await run_until(_agent(gw, tmp_path), lambda: len(gw.heartbeats) >= 2)
    assert gw.count("/register") == 1

    gw.issue = "mca_new"
    gw.credentials.add("mca_new")
    await run_until(_agent(gw, tmp_path, token="mct_other"), lambda: len(gw.heartbeats) >= 3)
    assert gw.count("/register") == 2
    assert "mca_new" in (tmp_path / "credential.json").read_text()
