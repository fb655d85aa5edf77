"""``role_within``: which roles a granter may hand out (invites, role changes, API keys)."""

from __future__ import annotations

import pytest

from tenants.permissions import MATRIX, Permission, Role, role_within

# granter -> the roles it may grant, written out by hand so a matrix change shows up here
GRANTABLE = {
    "owner": {"owner", "admin", "billing", "member", "viewer"},
    "admin": {"admin", "billing", "member", "viewer"},
    "billing": {"billing", "viewer"},
    "member": {"member", "viewer"},
    "viewer": {"viewer"},
}


@pytest.mark.parametrize("granter", [r.value for r in Role])
def test_each_role_grants_exactly_the_roles_it_covers(granter: str) -> None:
    assert {r.value for r in Role if role_within(granter, r.value)} == GRANTABLE[granter]


def test_member_and_billing_cannot_grant_each_other() -> None:
    # same rank, different permissions: neither covers the other
    assert not role_within("member", "billing") and not role_within("billing", "member")


@pytest.mark.parametrize("bad", ["", "root", "OWNER", "owner "])
def test_unknown_roles_grant_nothing_and_are_never_within(bad: str) -> None:
    assert not role_within(bad, "viewer")
    assert not role_within("owner", bad)  # no permissions is not "less than yours": it is not a role


def test_only_admins_and_owners_manage_every_api_key() -> None:
    assert {r.value for r in Role if Permission.API_KEYS_MANAGE_ALL in MATRIX[r]} == {"owner", "admin"}
    assert {r.value for r in Role if Permission.API_KEYS_MANAGE in MATRIX[r]} == {"owner", "admin", "billing", "member"}
