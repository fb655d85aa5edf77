"""The governance policies page: admins add, replace and delete rules; problems show next to the field."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.factories import sign_in
from tests.jobs.conftest import Member


async def test_an_admin_adds_replaces_and_deletes_a_rule(
    http: httpx.AsyncClient, owner: Member, member: Member, db: async_sessionmaker[AsyncSession], jsettings: Settings
) -> None:
    await sign_in(http, db, owner.user, jsettings)
    page = f"/orgs/{owner.org.slug}/policies"
    empty = await http.get(page)
    assert empty.status_code == 200 and "No rules yet" in empty.text
    form = {"subject_kind": "member", "subject": member.user.email, "allowed_clusters": "eu-cpu, eu-gpu",
            "allowed_regions": "", "gpus_allowed": "on", "max_cpu": "4", "max_memory": "16Gi", "max_gpus": "1"}
    saved = await http.post(page, data=form)
    assert saved.status_code == 303
    shown = await http.get(saved.headers["location"])
    assert member.user.email in shown.text and "eu-cpu, eu-gpu" in shown.text and "4 vCPU" in shown.text
    # saving again for the same member replaces the rule instead of adding a second one
    assert (await http.post(page, data={**form, "max_cpu": "8", "gpus_allowed": ""})).status_code == 303
    api = await http.get(f"/api/v1/orgs/{owner.org.slug}/policies")
    [rule] = api.json()["policies"]
    assert (rule["max_cpu"], rule["gpus_allowed"], rule["max_memory_bytes"]) == (8.0, False, 16 << 30)
    deleted = await http.post(f"{page}/{rule['id']}/delete")
    assert deleted.status_code == 303
    assert "No rules yet" in (await http.get(page)).text


async def test_bad_values_show_next_to_their_field_and_keep_what_was_typed(
    http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession], jsettings: Settings
) -> None:
    await sign_in(http, db, owner.user, jsettings)
    page = f"/orgs/{owner.org.slug}/policies"
    resp = await http.post(page, data={"subject_kind": "member", "subject": "ghost@example.com", "max_memory": "huge",
                                       "allowed_regions": "eu-west-1"})
    assert resp.status_code == 422
    assert 'id="max_memory-error"' in resp.text and "eu-west-1" in resp.text
    resp = await http.post(page, data={"subject_kind": "member", "subject": "ghost@example.com"})
    assert resp.status_code == 422 and "is not a member of this organization" in resp.text


async def test_members_cannot_open_the_policies_page(
    http: httpx.AsyncClient, member: Member, db: async_sessionmaker[AsyncSession], jsettings: Settings
) -> None:
    await sign_in(http, db, member.user, jsettings)
    assert (await http.get(f"/orgs/{member.org.slug}/policies")).status_code == 403
