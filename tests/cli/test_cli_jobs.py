"""``metacloud jobs submit|ls|logs|cancel`` against the real app, in-process (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server.jobs.models import Job
from tenants.db import unscoped_session
from tests.cli.conftest import Cli, Result
from tests.dashboard.rows import log_agent, make_cluster, make_job, set_state, user_key
from tests.factories import MadeOrg, make_api_key, make_org, make_user

GiB = 1 << 30


@dataclass
class Setup:
    org: MadeOrg
    key: str
    cluster_id: uuid.UUID


@pytest.fixture
async def logged_in(cli: Cli, db: async_sessionmaker[AsyncSession]) -> Setup:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "member"})
    key = await user_key(db, org, user)
    cluster_id = await make_cluster(db, org.id, "lab")
    assert (await cli.login(org.slug, key)).code == 0
    return Setup(org=org, key=key, cluster_id=cluster_id)


def no_key(result: Result, key: str) -> None:
    assert key not in result.out and key not in result.err


async def job_named(db: async_sessionmaker[AsyncSession], name: str) -> uuid.UUID | None:
    async with unscoped_session(db, reason="test looks a job up") as s:
        found: uuid.UUID | None = (await s.execute(select(Job.id).where(Job.name == name))).scalar_one_or_none()
        return found


async def test_submit_sends_the_whole_request_and_ls_shows_the_job_with_its_reason(
    cli: Cli, logged_in: Setup
) -> None:
    done = await cli("jobs", "submit", "train", "--image", "python:3.12", "--command", "python train.py --epochs '3'",
                     "--arg=--fast", "--cpu", "2", "--memory", "4Gi", "--env", "LR=0.1", "--cluster", "lab",
                     "--priority", "70", "--max-runtime", "600")
    assert done.code == 0, done.err
    assert done.out.startswith("Submitted train as ") and "queued" in done.out
    no_key(done, logged_in.key)

    listed = json.loads((await cli("jobs", "ls", "--json")).out)
    [job] = listed["items"]
    assert job["name"] == "train" and job["state"] == "queued" and job["reason"]
    assert job["command"] == ["python", "train.py", "--epochs", "3"] and job["args"] == ["--fast"]
    assert job["resources"] == {"cpu": 2.0, "memory_bytes": 4 * GiB, "gpus": 0, "gpu_type": None}
    assert job["placement"]["mode"] == "cluster" and job["placement"]["cluster"] == "lab"
    assert job["priority"] == 70 and job["max_runtime_s"] == 600

    table = await cli("jobs", "ls")
    header, row = table.out.splitlines()[:2]
    assert header.split()[:4] == ["ID", "NAME", "STATE", "CLUSTER"]
    assert row.split()[:3] == [job["id"], "train", "queued"] and job["reason"][:30] in row
    assert (await cli("jobs", "ls", "--state", "running")).out == "No jobs in state running.\n"


async def test_submit_wait_shows_each_state_and_reason_then_exits_with_the_jobs_exit_code(
    cli: Cli, logged_in: Setup, db: async_sessionmaker[AsyncSession]
) -> None:
    async def scheduler_and_agent() -> None:
        while (job_id := await job_named(db, "w")) is None:  # noqa: ASYNC110 - waiting for the CLI's submit
            await asyncio.sleep(0.02)
        for state, reason, code in (("placed", "placed on lab", None), ("running", "", None),
                                    ("failed", "the command exited with code 3", 3)):
            await asyncio.sleep(0.3)
            await set_state(db, job_id, state, reason, cluster_id=logged_in.cluster_id, exit_code=code)

    mover = asyncio.create_task(scheduler_and_agent())
    done = await cli("jobs", "submit", "w", "--command", "false", "--wait")
    await mover
    assert done.code == 3, done.out + done.err
    lines = done.out.splitlines()
    assert lines[0].startswith("Submitted w as ")
    progress = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert progress[0].startswith("queued")
    assert progress[1:] == ["placed: placed on lab", "running on lab",
                            "failed on lab: the command exited with code 3"]
    assert lines[-1].startswith("w failed with exit code 3. Logs: metacloud jobs logs ")


async def test_logs_prints_the_tail_and_follow_streams_until_the_job_ends(
    cli: Cli, logged_in: Setup, db: async_sessionmaker[AsyncSession]
) -> None:
    job_id = await make_job(db, logged_in.org.id, "talky", "running", cluster_id=logged_in.cluster_id)
    async with log_agent(db, logged_in.cluster_id, "epoch 1\nepoch 2\n"):
        tail = await cli("jobs", "logs", str(job_id))
        assert tail.code == 0, tail.err
        assert tail.out == "epoch 1\nepoch 2\n"

        async def finish() -> None:
            await asyncio.sleep(0.5)
            await set_state(db, job_id, "succeeded", "exited with code 0", exit_code=0)

        finisher = asyncio.create_task(finish())
        followed = await asyncio.wait_for(cli("jobs", "logs", str(job_id), "-f"), timeout=15)
        await finisher
    assert followed.code == 0, followed.err
    assert followed.out == "epoch 1\nepoch 2\n"  # each line once, then the stream's end stops the command


async def test_cancel_cancels_and_follow_of_a_finished_job_ends_at_once(cli: Cli, logged_in: Setup) -> None:
    made = json.loads((await cli("jobs", "submit", "doomed", "--image", "busybox", "--json")).out)
    cancelled = await cli("jobs", "cancel", made["id"])
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.startswith(f"doomed ({made['id']}): cancelled")
    shown = json.loads((await cli("jobs", "show", made["id"], "--json")).out)
    assert shown["state"] == "cancelled" and [e["state"] for e in shown["events"]] == ["queued", "cancelled"]
    followed = await asyncio.wait_for(cli("jobs", "logs", made["id"], "-f"), timeout=10)
    assert followed.code == 0 and followed.out == ""
    again = await cli("jobs", "cancel", made["id"])  # a no-op, not an error
    assert again.code == 0


async def test_server_errors_are_one_line_with_exit_code_1_and_usage_errors_exit_2(
    cli: Cli, logged_in: Setup
) -> None:
    bad = await cli("jobs", "submit", "x", "--image", "busybox", "--memory", "lots")
    assert bad.code == 1 and bad.out == ""
    assert bad.err.startswith("error: ") and bad.err.count("\n") == 1 and "resources.memory" in bad.err
    missing = await cli("jobs", "cancel", str(uuid.uuid4()))
    assert missing.code == 1 and missing.err == "error: No such job in this organization.\n"
    usage = await cli("jobs", "submit", "x", "--image", "busybox", "--env", "NOEQUALS")
    assert usage.code == 2 and "--env expects KEY=VALUE" in usage.err
    neither = await cli("jobs", "submit", "x")
    assert neither.code == 2 and "--image" in neither.err
    for r in (bad, missing, usage, neither):
        no_key(r, logged_in.key)


async def test_a_viewer_key_cannot_submit_and_is_told_why(cli: Cli, db: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(db)
    assert (await cli.login(org.slug, await make_api_key(db, org, role="viewer"))).code == 0
    refused = await cli("jobs", "submit", "x", "--image", "busybox")
    assert refused.code == 1 and refused.err.startswith("error: ") and refused.err.count("\n") == 1
