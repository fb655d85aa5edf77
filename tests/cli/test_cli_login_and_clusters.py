"""``metacloud login``, ``clusters ls`` and ``usage`` against the real app, in-process."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.cli_client import Context, config, run
from tests.cli.conftest import SERVER, Cli
from tests.dashboard.world import make_world
from tests.factories import make_api_key, make_org


async def test_login_checks_the_key_and_stores_it_readable_only_by_the_user(
    cli: Cli, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    key = await make_api_key(db, org)
    done = await cli.login(org.slug, key)
    assert done.code == 0, done.err
    assert org.slug in done.out and key not in done.out + done.err
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert json.loads(cli.config_path.read_text()) == {"server": SERVER, "org": org.slug, "api_key": key}


async def test_login_with_a_prompt_never_echoes_the_key(cli: Cli, db: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(db)
    key = await make_api_key(db, org)
    done = await cli("login", "--server", SERVER + "/", "--org", org.slug, prompt=key)
    assert done.code == 0 and key not in done.out + done.err
    assert json.loads(cli.config_path.read_text())["server"] == SERVER


async def test_a_wrong_key_is_refused_in_one_line_and_nothing_is_stored(
    cli: Cli, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    wrong = "mc_deadbeef_" + "x" * 40
    done = await cli.login(org.slug, wrong)
    assert done.code == 1
    assert done.err.startswith("error: ") and done.err.count("\n") == 1 and wrong not in done.err
    assert not cli.config_path.exists()


async def test_commands_before_login_say_how_to_log_in(cli: Cli) -> None:
    done = await cli("jobs", "ls")
    assert done.code == 1 and done.err == "error: not logged in: run metacloud login --server URL --org SLUG\n"


async def test_clusters_ls_prints_a_table_or_json_of_the_orgs_clusters_only(
    cli: Cli, db: async_sessionmaker[AsyncSession]
) -> None:
    w = await make_world(db)
    assert (await cli.login(w.a.slug, w.a_key)).code == 0
    table = await cli("clusters", "ls")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PROVIDER", "REGION", "CPU", "USED", "MEMORY", "USED", "GPUS",
                                "USED", "HEARTBEAT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"gpu-a", "cpu-b", "old-c"}  # never org B's b-one
    assert rows["gpu-a"][1] == "attached" and rows["gpu-a"][4] == "8/64" and rows["gpu-a"][6] == "1/8"
    assert rows["old-c"][1] == "disconnected" and rows["old-c"][-1] == "10m"
    as_json = await cli("clusters", "ls", "--json")
    assert sorted(c["name"] for c in json.loads(as_json.out)) == ["cpu-b", "gpu-a", "old-c"]


async def test_usage_prints_the_period_resources_and_cost_or_json(
    cli: Cli, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    assert (await cli.login(org.slug, await make_api_key(db, org))).code == 0
    done = await cli("usage")
    assert done.code == 0, done.err
    assert done.out.startswith(f"Usage of {org.slug} for ") and "Cost to date: " in done.out
    as_json = await cli("usage", "--json", "--from", "2026-01-01", "--to", "2026-01-31")
    assert json.loads(as_json.out)["period"]["label"]


async def test_usage_says_plainly_when_the_server_has_no_usage_api(tmp_path: Path) -> None:
    def server(request: httpx.Request) -> httpx.Response:  # an older gateway: the org answers, /usage does not
        if request.url.path == "/api/v1/orgs/acme":
            return httpx.Response(200, json={"slug": "acme", "name": "Acme", "role": "member"})
        return httpx.Response(404, json={"status": 404, "detail": "Not Found", "code": "not_found"})

    config.save(tmp_path / "c.json", config.Credentials(server=SERVER, org="acme", api_key="mc_x_y"))
    err = io.StringIO()
    ctx = Context(out=io.StringIO(), err=err, env={}, config_path=tmp_path / "c.json",
                  transport=httpx.MockTransport(server))
    assert await run(["usage"], ctx) == 1
    assert err.getvalue() == "usage is not available on this server yet\n"
