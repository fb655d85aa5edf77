"""The first-hour journey of a new customer, in a real browser against the real stack.

Sign up -> verify the email from the dev mailbox -> sign in -> open the signup org -> invite a member -> connect
a bare host through the wizard by running the command it shows (the page turns "attached" with the capacity by
itself) -> submit a job -> watch the dashboard -> see the job's first log line -> see its usage -> upgrade with a
test card -> the operator closes the period -> open the invoice.

Every step is timed (machine time; typing is a machine's too) and ends with a screenshot in
``test-artifacts/e2e/``; ``timings.json`` there carries the step times and the time to value: from the signup
form submitted to the job's first log line shown. ``bench/bench_journey.py`` reports that figure.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from tests.e2e.journey import TIME_TO_VALUE_GOAL_S, Journey
from tests.e2e.stack import BIN, RunningStack

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
JOB_LINE = "hello from metacloud"
# The journey the issue asks for, in order.
STEPS = ["sign up", "verify the email", "sign in", "open the org", "invite a member", "name the cluster",
         "run the agent: attached with capacity", "submit a job", "watch the dashboard", "see the first log line",
         "see usage", "upgrade with a test card", "close a period", "open the invoice"]
ATTACH_TIMEOUT_MS = 45_000  # the agent registers, the attach workflow validates, the page polls every 2 s
LOG_TIMEOUT_MS = 45_000  # placement, dispatch over the agent's long poll, the process starting, the log shipped
USAGE_WINDOW_S = 5
USAGE_TIMEOUT_S = 45.0  # the rest of the agent's usage window, its upload, the page reloaded every 2 s


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-state"


@pytest_asyncio.fixture(loop_scope="session")
async def agents() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Agents the test starts; stopped (SIGTERM, then SIGKILL) when it ends."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def agent_argv(shown: str, state_dir: Path) -> list[str]:
    """The command the wizard shows, run as shown: only the program is resolved in this virtualenv."""
    argv = shlex.split(shown)
    assert argv[0] == "metacloud-agent", shown
    return [str(BIN / "metacloud-agent"), *argv[1:], "--state-dir", str(state_dir)]


def agent_env(stack: RunningStack) -> dict[str, str]:
    # 5 s usage windows instead of the default 60 s, so "see usage" waits seconds, not up to a minute. The
    # command itself runs as the wizard shows it.
    return {**stack.env, "METACLOUD_USAGE_WINDOW_S": str(USAGE_WINDOW_S)}


async def _mail_link(page: Page, base: str, to: str, subject: str) -> str:
    await page.goto(f"{base}/dev/mailbox")
    mail = page.locator("article.mail").filter(has_text=f"To {to}").filter(has_text=subject).first
    await expect(mail).to_be_visible()
    href = await mail.locator("ul a").first.get_attribute("href")
    assert href, f"no link in the mail {subject!r} to {to}"
    return href


async def test_a_new_customer_goes_from_signup_to_a_job_and_an_invoice_in_the_browser(
    stack: RunningStack, page: Page, agent_dir: Path, agents: list[asyncio.subprocess.Process], tmp_path: Path
) -> None:
    base = stack.url
    seen: dict[str, str] = {"password": PASSWORD}
    journey = Journey(page, stack_start_s=stack.started_in_s or None)
    email = f"ada-{secrets.token_hex(3)}@example.com"
    org_name = f"Ada Labs {secrets.token_hex(2)}"

    async with journey.step("sign up"):
        await page.goto(f"{base}/signup")
        await page.fill("input[name=email]", email)
        await page.fill("input[name=name]", "Ada Lovelace")
        await page.fill("input[name=password]", PASSWORD)
        await page.fill("input[name=org_name]", org_name)
        journey.mark("signup submitted")
        await page.click("form[action='/signup'] button")
        await expect(page.locator("h1")).to_have_text("Check your inbox")

    async with journey.step("verify the email"):
        link = await _mail_link(page, base, email, "Verify your email")
        seen["verification token"] = link.split("token=", 1)[1]
        assert link.startswith(f"{base}/verify?token="), link
        await page.goto(link)
        await expect(page.locator("h1")).to_have_text("Your email is verified")

    async with journey.step("sign in"):
        await page.goto(f"{base}/login")
        await page.fill("input[name=email]", email)
        await page.fill("input[name=password]", PASSWORD)
        await page.click("form[action='/login'] button")
        await page.wait_for_url(re.compile(r"/orgs/[^/]+$"))
        await expect(page.locator("main h1")).to_have_text(org_name)
    slug = page.url.rsplit("/", 1)[1]
    assert "Please verify your email" not in await page.content()

    async with journey.step("open the org"):
        await page.goto(f"{base}/orgs")
        await page.click(f"a[href='/orgs/{slug}']")
        await expect(page.locator("main h1")).to_have_text(org_name)
        await expect(page.locator("main")).to_contain_text("your role: owner")

    member = f"grace-{secrets.token_hex(3)}@example.com"
    async with journey.step("invite a member"):
        await page.goto(f"{base}/orgs/{slug}/invites")
        form = page.locator(f"form[action='/orgs/{slug}/invites']")
        await form.locator("input[name=email]").fill(member)
        await form.locator("select[name=role]").select_option("member")
        await form.locator("button").click()
        row = page.locator("tr", has_text=member)
        await expect(row).to_be_visible()
        await expect(row).to_contain_text("member")
    invite_link = await _mail_link(page, base, member, f"You are invited to join {org_name}")
    assert invite_link.startswith(f"{base}/invites/accept?token="), invite_link
    seen["invite token"] = invite_link.split("token=", 1)[1]

    async with journey.step("name the cluster"):
        await page.goto(f"{base}/orgs/{slug}/clusters/new")
        await page.fill("input[name=name]", "ada-workstation")
        await page.select_option("select[name=provider]", "bare_host")
        await page.click(f"form[action='/orgs/{slug}/clusters'] button")
        await expect(page.locator("h1")).to_have_text("Connect ada-workstation")
        shown = (await page.locator("#cmd-host").inner_text()).strip()
        seen["registration token"] = shlex.split(shown)[shlex.split(shown).index("--token") + 1]
        await expect(page.locator("#live [data-field=state]")).to_have_text("pending")

    async with journey.step("run the agent: attached with capacity"):
        with (tmp_path / "agent.log").open("wb") as log:  # the child keeps its own copy of the descriptor
            agents.append(await asyncio.create_subprocess_exec(*agent_argv(shown, agent_dir), stdout=log,
                                                               stderr=asyncio.subprocess.STDOUT, env=agent_env(stack)))
        # The page polls the cluster's API itself: no reload here.
        await expect(page.locator("#live [data-field=state]")).to_have_text("attached", timeout=ATTACH_TIMEOUT_MS)
        await expect(page.locator("#capacity")).to_be_visible()
        await expect(page.locator("#done")).to_be_visible()
    cpus = (await page.locator("#capacity [data-field=cpus]").inner_text()).strip()
    memory = (await page.locator("#capacity [data-field=memory_gib]").inner_text()).strip()
    assert float(cpus) > 0 and float(memory) > 0, (cpus, memory)
    assert agents[0].returncode is None, (tmp_path / "agent.log").read_text()

    async with journey.step("submit a job"):
        await page.goto(f"{base}/orgs/{slug}/jobs")
        await page.click(f"a[href='/orgs/{slug}/jobs/new']")
        await page.fill("input[name=name]", "hello")
        await page.fill("input[name=command]", f"sh -c 'echo {JOB_LINE}; sleep 1'")
        await page.fill("input[name=cpu]", "1")
        await page.fill("input[name=memory]", "256Mi")
        await page.click(f"form[action='/orgs/{slug}/jobs'] button")
        await page.wait_for_url(re.compile(rf"/orgs/{slug}/jobs/[0-9a-f-]{{36}}"))
        await expect(page.locator("main h1")).to_contain_text("hello")
    job_url = page.url.split("?", 1)[0]

    async with journey.step("watch the dashboard"):
        await page.goto(f"{base}/orgs/{slug}/dashboard")
        await expect(page.locator("main h1")).to_have_text("Dashboard")
        await expect(page.locator("#clusters tr", has_text="ada-workstation")).to_contain_text("attached")

    async with journey.step("see the first log line"):
        await page.goto(job_url)
        await _wait_for_log_line(page, JOB_LINE)
        journey.mark("first log line shown")
        await expect(page.locator("#log")).to_contain_text(JOB_LINE)

    async with journey.step("see usage"):
        await page.goto(f"{base}/orgs/{slug}/usage")
        await expect(page.locator("main h1")).to_contain_text("Usage")
        await expect(page.locator("main")).to_contain_text("Free allowance")
        # The agent meters each job per clock-aligned window and uploads it when the window ends.
        await _reload_until(page, page.locator("tr", has_text="ada-workstation"), USAGE_TIMEOUT_S)
        await expect(page.locator("main")).to_contain_text("Cost to date: $0.00")  # 1 vCPU for a second: free

    async with journey.step("upgrade with a test card"):
        await page.goto(f"{base}/orgs/{slug}/billing")
        await expect(page.locator("#plan")).to_have_text("Free")
        form = page.locator(f"form[action='/orgs/{slug}/billing/card']")
        await form.locator("select[name=test_card]").select_option("pm_card_visa")
        await form.locator("button").click()
        await expect(page.locator(".flash")).to_contain_text("You are on Pay-as-you-go now")
        await expect(page.locator("#plan")).to_have_text("Pay-as-you-go")
        await expect(page.locator("#card")).to_contain_text("ending 4242")

    async with journey.step("close a period"):
        # The platform's operator closes the month now (the billing cycle would, two days after it ends).
        promote = await asyncio.create_subprocess_exec(str(BIN / "metacloud"), "create-operator", email,
                                                       env=stack.cli_env(), stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        said, _ = await promote.communicate()
        assert promote.returncode == 0, said.decode()
        await page.goto(f"{base}/operator/billing")
        form = page.locator("form[action='/operator/billing/close']")
        await form.locator("input[name=org]").fill(slug)
        await form.locator("button").click()
        flash = page.locator(".flash")
        await expect(flash).to_contain_text(re.compile(rf"{slug} \d{{4}}-\d{{2}}: invoice MC-"))
    number = re.search(r"invoice (MC-[\w-]+),", await flash.inner_text())
    assert number, await flash.inner_text()

    async with journey.step("open the invoice"):
        await page.goto(f"{base}/orgs/{slug}/billing")
        await page.click(f"a:text-is('{number[1]}')")
        await expect(page.locator("main h1")).to_have_text(f"Invoice {number[1]}")
        await expect(page.locator("main")).to_contain_text("$0.00")

    report = journey.write(last_step=STEPS[-1], missing=[])
    assert [s["name"] for s in report["steps"]] == STEPS
    assert report["time_to_value_s"] is not None
    assert report["time_to_value_s"] < TIME_TO_VALUE_GOAL_S * 2, report  # the goal is < 60 s; twice that is a bug

    # Every secret the journey saw stays out of every process's log (gateway, worker, Temporal, the agent...).
    seen["session token"] = next(c["value"] for c in await page.context.cookies() if c["name"] == "mc_session")
    seen["agent credential"] = json.loads((agent_dir / "credential.json").read_text())["credential"]
    logs = [*stack.state_dir.joinpath("logs").glob("*.log"), tmp_path / "agent.log"]
    text = "\n".join(f.read_text(errors="replace") for f in logs)
    assert "metacloud-agent" in text and len(logs) >= 4, "the logs are missing: nothing was checked"
    assert [kind for kind, value in seen.items() if value in text] == []


async def _reload_until(page: Page, target: Locator, timeout_s: float) -> None:
    """Reload until ``target`` shows (pages without a live update), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await target.count():
        assert time.monotonic() < deadline, f"not shown within {timeout_s:.0f} s: {target}"
        await asyncio.sleep(2)
        await page.reload()
    await expect(target.first).to_be_visible()


async def _wait_for_log_line(page: Page, line: str) -> None:
    """Follow the log live when the job is still running; a finished job shows its log tail on the page."""
    log = page.locator("#log")
    follow = page.locator("button[data-follow]")
    if await follow.is_visible():
        await follow.click()
    await expect(log).to_contain_text(line, timeout=LOG_TIMEOUT_MS)
