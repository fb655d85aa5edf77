"""Row-level security plumbing: the app role, the per-table policy, and the catalog audit.

The application connects as ``metacloud_app``: NOSUPERUSER, NOBYPASSRLS, owner of no table.
Every table with an ``org_id`` column gets ENABLE + FORCE row level security and the policy
``tenant_isolation``; ``audit_rls`` lists every table where that is not so (a test runs it over
the migrated database, so a new tenant table that forgot its policy fails CI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from tenants.settings import APP_ROLE

__all__ = ["APP_ROLE", "POLICY_NAME", "RlsProblem", "audit_rls", "create_app_role_sql", "enable_tenant_rls_sql"]

POLICY_NAME = "tenant_isolation"

# Once a pooled connection has set app.org_id it reads back as '' rather than NULL: NULLIF covers both.
_PREDICATE = (
    "(current_setting('app.unscoped', true) = 'on' "
    "OR {column} = NULLIF(current_setting('app.org_id', true), '')::uuid)"
)


def enable_tenant_rls_sql(table: str, column: str = "org_id") -> list[str]:
    """Statements that put ``table`` under tenant RLS; call from a migration with ``op.execute``."""
    predicate = _PREDICATE.format(column=column)
    return [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
        f'DROP POLICY IF EXISTS {POLICY_NAME} ON "{table}"',
        f'CREATE POLICY {POLICY_NAME} ON "{table}" USING {predicate} WITH CHECK {predicate}',
    ]


def create_app_role_sql(password: str = "") -> list[str]:
    """Idempotent: creates the app role if missing and grants it data access (not ownership)."""
    stmts = [
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            END IF;
        END
        $$
        """,
        f"ALTER ROLE {APP_ROLE} NOSUPERUSER NOBYPASSRLS",
        f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}",
    ]
    if password:
        escaped = password.replace("'", "''")
        stmts.append(f"ALTER ROLE {APP_ROLE} PASSWORD '{escaped}'")
    return stmts


@dataclass(frozen=True, slots=True)
class RlsProblem:
    table: str
    problem: str

    def __str__(self) -> str:
        return f"{self.table}: {self.problem}"


_AUDIT_TABLES = text(
    """
    SELECT c.relname AS table,
           c.relrowsecurity AS enabled,
           c.relforcerowsecurity AS forced,
           pg_get_userbyid(c.relowner) AS owner,
           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = :policy) AS policies,
           (SELECT pg_get_expr(p.polqual, p.polrelid) FROM pg_policy p
             WHERE p.polrelid = c.oid AND p.polname = :policy) AS qual
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
     ORDER BY c.relname
    """
)
_AUDIT_ROLE = text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role")


def audit_rls(conn: Connection) -> list[RlsProblem]:
    """Every tenant table (a column ``org_id``) must be ENABLEd, FORCEd, policed and not owned by the app."""
    problems: list[RlsProblem] = []
    role: Any = conn.execute(_AUDIT_ROLE, {"role": APP_ROLE}).first()
    if role is None:
        problems.append(RlsProblem("-", f"role {APP_ROLE} does not exist"))
    else:
        if role.rolsuper:
            problems.append(RlsProblem("-", f"role {APP_ROLE} is a superuser"))
        if role.rolbypassrls:
            problems.append(RlsProblem("-", f"role {APP_ROLE} has BYPASSRLS"))
    for row in conn.execute(_AUDIT_TABLES, {"policy": POLICY_NAME}):
        if not row.enabled:
            problems.append(RlsProblem(row.table, "row level security is not enabled"))
        if not row.forced:
            problems.append(RlsProblem(row.table, "row level security is not FORCEd (the owner would bypass it)"))
        if row.policies == 0:
            problems.append(RlsProblem(row.table, f"no {POLICY_NAME} policy"))
        elif "app.org_id" not in (row.qual or ""):
            problems.append(RlsProblem(row.table, f"{POLICY_NAME} policy does not compare with app.org_id"))
        if row.owner == APP_ROLE:
            problems.append(RlsProblem(row.table, f"owned by {APP_ROLE}, which would bypass RLS"))
    return problems
