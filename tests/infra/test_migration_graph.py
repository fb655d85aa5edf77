"""One line of history: a new migration must build on the single head."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from infra.migrate import alembic_config
from tenants.settings import Settings


def test_migrations_have_a_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config(Settings(database_url="postgresql://x@/y")))
    heads = script.get_heads()
    assert len(heads) == 1, f"several heads {heads}: add a merge migration or build on the head"
