"""The job pages: list with a state filter, the submit form with errors in place, detail, cancel, re-run."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.dashboard.rows import log_agent
from tests.dashboard.world import make_world
from tests.factories import add_member, make_user, sign_in

HTML = {"accept": "text/html"}


async def test_the_list_filters_by_state_and_pending_jobs_say_why_they_wait(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.a_owner, settings)
    everything = await client.get(f"/orgs/{w.a.slug}/jobs", headers=HTML)
    assert everything.status_code == 200
    for name in ("train", "prep", "big", "warm", "done", "oops"):
        assert f">{name}</a>" in everything.text
    assert "b-job" not in everything.text
    pending = await client.get(f"/orgs/{w.a.slug}/jobs?state=pending", headers=HTML)
    assert ">big</a>" in pending.text and ">warm</a>" in pending.text and ">train</a>" not in pending.text
    assert "Free plan: 8 vCPU in use of 8" in pending.text and "pulling the image" in pending.text
    failed = await client.get(f"/orgs/{w.a.slug}/jobs?state=failed", headers=HTML)
    assert ">oops</a>" in failed.text and ">big</a>" not in failed.text


async def test_the_form_shows_each_problem_next_to_its_field_and_keeps_the_values(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.a_owner, settings)
    form = await client.get(f"/orgs/{w.a.slug}/jobs/new", headers=HTML)
    assert form.status_code == 200 and 'name="_csrf_token"' in form.text and '<option value="gpu-a"' in form.text
    bad = await client.post(f"/orgs/{w.a.slug}/jobs", headers=HTML, data={
        "name": "train2", "image": "", "command": "python 'unclosed", "env": "LR=0.1\nNOT A PAIR", "cpu": "-1",
        "memory": "lots", "gpus": "0", "mode": "cluster", "cluster": "", "priority": "500"})
    assert bad.status_code == 422
    errors = dict(re.findall(r'<span class="field-error" id="([a-z_]+)-error">([^<]+)</span>', bad.text))
    assert set(errors) >= {"command", "env", "cpu", "memory", "cluster", "priority"}
    assert "line 2" in errors["env"] and "4Gi" in errors["memory"]
    assert 'value="train2"' in bad.text and "LR=0.1\nNOT A PAIR</textarea>" in bad.text  # nothing typed is lost


async def test_submitting_from_the_page_queues_the_job_and_shows_its_detail(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.a_owner, settings)
    made = await client.post(f"/orgs/{w.a.slug}/jobs", headers=HTML, data={
        "name": "from-page", "image": "python:3.12", "command": "python -c 'print(1)'", "args": "--a\n--b",
        "env": "LR=0.1", "cpu": "0.5", "memory": "512Mi", "gpus": "0", "mode": "cluster", "cluster": "cpu-b",
        "priority": "60", "max_runtime_s": "120"})
    assert made.status_code == 303, made.text
    page = await client.get(made.headers["location"], headers=HTML)
    assert page.status_code == 200
    assert "from-page" in page.text and "state-queued" in page.text and "Submitted from-page" in page.text
    assert "0.5 vCPU · 0.5 GiB · 0 GPU" in page.text and "cluster: cpu-b" in page.text
    assert "<code>python -c &#39;print(1)&#39;</code> <code>--a</code> <code>--b</code>" in page.text
    assert "No log yet: the job has not started." in page.text and "Cancel job" in page.text
    assert 'src="/static/job_detail.js"' in page.text and "/logs?tail=200&amp;follow=true" in page.text


async def test_detail_shows_the_timeline_reason_and_log_then_reruns(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.a_owner, settings)
    async with log_agent(db, w.clusters["cpu-b"], "loading data\nTraceback: boom\n"):
        page = await client.get(f"/orgs/{w.a.slug}/jobs/{w.jobs['oops']}", headers=HTML)
    assert page.status_code == 200
    assert "the command exited with code 3" in page.text and "state-failed" in page.text
    assert "loading data\nTraceback: boom\n</pre>" in page.text
    assert "waiting for a cluster" in page.text  # the timeline's first event
    assert "Cancel job" not in page.text and "Run again" in page.text
    again = await client.post(f"/orgs/{w.a.slug}/jobs/{w.jobs['oops']}/rerun", headers=HTML)
    assert again.status_code == 303 and str(w.jobs["oops"]) not in again.headers["location"]
    new = await client.get(again.headers["location"], headers=HTML)
    assert "oops" in new.text and "state-queued" in new.text and "an earlier job" in new.text


async def test_cancel_from_the_page_and_viewers_only_look(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    viewer = await make_user(db)
    await add_member(db, w.a, viewer, "viewer")
    await sign_in(client, db, viewer, settings)
    look = await client.get(f"/orgs/{w.a.slug}/jobs/{w.jobs['big']}", headers=HTML)
    assert look.status_code == 200 and "Cancel job" not in look.text and "Run again" not in look.text
    assert (await client.post(f"/orgs/{w.a.slug}/jobs/{w.jobs['big']}/cancel", headers=HTML)).status_code == 403
    assert (await client.get(f"/orgs/{w.a.slug}/jobs/new", headers=HTML)).status_code == 403

    await sign_in(client, db, w.a_owner, settings)
    done = await client.post(f"/orgs/{w.a.slug}/jobs/{w.jobs['big']}/cancel", headers=HTML)
    assert done.status_code == 303
    page = await client.get(done.headers["location"], headers=HTML)
    assert "big is cancelled." in page.text and "state-cancelled" in page.text


async def test_another_orgs_job_pages_answer_404(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.b_owner, settings)
    assert (await client.get(f"/orgs/{w.a.slug}/jobs", headers=HTML)).status_code == 404
    assert (await client.get(f"/orgs/{w.b.slug}/jobs/{w.jobs['train']}", headers=HTML)).status_code == 404
    assert (await client.post(f"/orgs/{w.b.slug}/jobs/{w.jobs['train']}/cancel", headers=HTML)).status_code == 404
