"""Usage as people see it: JSON, CSV and the page, with cost after the free allowance."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.factories import MadeOrg, MadeUser, make_api_key, make_org, sign_in
from tests.usage.helpers import (
    AgentCluster,
    GiB,
    body,
    hour_ago,
    job_subject,
    make_cluster,
    make_jobs,
    records,
)

pytestmark = pytest.mark.usefixtures("payg_card")


async def _an_hour_of_usage(http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg,
                            cluster: AgentCluster) -> datetime:
    """One hour on two clusters: 3 x (4 vCPU, 8 GiB, 2 A100) on one, 1 x (2 vCPU, 2 GiB) on the other.
    At every moment: 14 vCPU (6 above the 8 free), 26 GiB (10 above the 16 free), 6 A100."""
    start = hour_ago(2)
    big = await make_jobs(db, cluster, 3, cpu_millis=4000, memory_bytes=8 * GiB, gpus=2, gpu_type="A100")
    other = await make_cluster(db, org.id, name="cpu-west")
    small = await make_jobs(db, other, 1, cpu_millis=2000, memory_bytes=2 * GiB)
    for c, recs in ((cluster, records([job_subject(j, cpu_millis=4000, memory_bytes=8 * GiB, gpus=2, gpu_type="A100")
                                       for j in big], start, 60)),
                    (other, records([job_subject(j, cpu_millis=2000, memory_bytes=2 * GiB) for j in small], start, 60))):
        resp = await http.post("/agent/v1/usage", content=body(recs), headers=c.headers())
        assert resp.status_code == 200 and not resp.json()["rejected"], resp.text
    return datetime.fromtimestamp(start, UTC)


def _days(start: datetime) -> dict[str, str]:
    return {"from": start.date().isoformat(), "to": start.date().isoformat()}


async def test_usage_json_prices_only_what_is_above_the_free_allowance(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg, cluster: AgentCluster) -> None:
    start = await _an_hour_of_usage(http, db, org, cluster)
    key = await make_api_key(db, org, role="viewer")
    resp = await http.get(f"/api/v1/orgs/{org.slug}/usage", params=_days(start),
                          headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    u = resp.json()
    assert u["period"]["label"] == f"{start:%Y-%m-%d}..{start:%Y-%m-%d}"
    assert u["totals"]["vcpu"]["quantity"] == "14.0000" and u["totals"]["vcpu"]["unit"] == "vCPU-hours"
    assert u["totals"]["memory"]["quantity"] == "26.0000" and u["totals"]["gpu:A100"]["quantity"] == "6.0000"
    assert u["free_allowance"]["vcpu"]["covered"]["quantity"] == "8.0000"
    assert u["free_allowance"]["vcpu"]["billable"]["quantity"] == "6.0000"
    assert u["free_allowance"]["memory"]["billable"]["quantity"] == "10.0000"
    # 6 vCPU-h x $0.04 + 10 GiB-h x $0.005 + 6 GPU-h x $2.50
    assert {ln["key"]: ln["amount_cents"] for ln in u["cost_lines"]} == {"vcpu": 24, "memory": 5, "gpu:A100": 1500}
    assert u["cost_to_date_cents"] == 1529
    assert sorted(c["name"] for c in u["by_cluster"]) == ["cpu-west", "gpu-east"]
    assert [d["date"] for d in u["by_day"]] == [start.date().isoformat()]


async def test_usage_csv_has_a_row_per_day_cluster_and_resource(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg, cluster: AgentCluster) -> None:
    start = await _an_hour_of_usage(http, db, org, cluster)
    key = await make_api_key(db, org)
    headers = {"Authorization": f"Bearer {key}"}
    resp = await http.get(f"/api/v1/orgs/{org.slug}/usage.csv", params=_days(start), headers=headers)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    got = {(r["cluster"], r["resource"], r["gpu_type"]): r["quantity"] for r in rows}
    assert got == {("gpu-east", "vcpu", ""): "12.0000", ("gpu-east", "memory", ""): "24.0000",
                   ("gpu-east", "gpu", "A100"): "6.0000", ("cpu-west", "vcpu", ""): "2.0000",
                   ("cpu-west", "memory", ""): "2.0000"}
    same = await http.get(f"/api/v1/orgs/{org.slug}/usage", params={**_days(start), "format": "csv"}, headers=headers)
    assert same.text == resp.text


async def test_a_period_that_makes_no_sense_is_refused_with_the_field(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg) -> None:
    key = await make_api_key(db, org)
    resp = await http.get(f"/api/v1/orgs/{org.slug}/usage", params={"from": "2026-05-10", "to": "2026-05-01"},
                          headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 422 and "to" in str(resp.json())


async def test_another_orgs_usage_is_not_found(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg) -> None:
    stranger = await make_org(db)
    key = await make_api_key(db, stranger)
    resp = await http.get(f"/api/v1/orgs/{org.slug}/usage", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 404


async def test_the_usage_page_shows_cost_allowance_and_charts(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg, owner: MadeUser,
        cluster: AgentCluster, settings: Settings) -> None:
    start = await _an_hour_of_usage(http, db, org, cluster)
    await sign_in(http, db, owner, settings)
    page = await http.get(f"/orgs/{org.slug}/usage", params={"month": f"{start:%Y-%m}"},
                          headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    html = page.text
    assert "$15.29" in html and "Free allowance" in html and "8 vCPU" in html
    assert html.count('<svg class="chart"') >= 3  # per-day charts, cost by resource, by cluster
    assert "cpu-west" in html and "gpu-east" in html and "Download CSV" in html
    bad = await http.get(f"/orgs/{org.slug}/usage", params={"from": "soon"}, headers={"accept": "text/html"})
    assert bad.status_code == 422 and "use a date like" in bad.text


async def test_an_empty_period_says_so(http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg,
                                       owner: MadeUser, settings: Settings) -> None:
    await sign_in(http, db, owner, settings)
    page = await http.get(f"/orgs/{org.slug}/usage", headers={"accept": "text/html"})
    assert page.status_code == 200 and "No usage in this period." in page.text and "$0.00" in page.text
