"""docs/permissions.md is generated from the matrix, and must be the matrix the code enforces."""

from __future__ import annotations

from pathlib import Path

from tenants.permissions import render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"


def test_documented_permission_matrix_is_the_enforced_one() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/permissions.md is stale: run `python -m tenants.permissions > docs/permissions.md`"
    )
