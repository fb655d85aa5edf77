"""Jobs: job records and their timeline, governance policies, plans and entitlements (seeded).

Revision ID: 0008
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tenants.rls import enable_tenant_rls_sql

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("jobs", "job_events", "governance_policies", "org_entitlements")

GIB = 1 << 30
# Plan caps are data: (plan, title, order, {resource: cap}); None = unlimited, 0 = none.
PLANS = (
    ("free", "Free", 0, {"cpu_millis": 8000, "memory_bytes": 16 * GIB, "gpus": 0}),
    ("payg", "Pay-as-you-go", 1, {"cpu_millis": None, "memory_bytes": None, "gpus": None}),
    ("enterprise", "Enterprise", 2, {"cpu_millis": None, "memory_bytes": None, "gpus": None}),
)


def _uuid_fk(column: str, table: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
    )
    op.create_table(
        "plan_entitlements",
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan"], ["plans.name"], name=op.f("fk_plan_entitlements_plan_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("plan", "resource", name=op.f("pk_plan_entitlements")),
    )
    op.create_table(
        "org_entitlements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        _uuid_fk("org_id", "org_entitlements", "orgs", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_entitlements")),
        sa.UniqueConstraint("org_id", "resource", name="uq_org_entitlements_org_id_resource"),
    )
    op.create_index(op.f("ix_org_entitlements_org_id"), "org_entitlements", ["org_id"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("submitted_by", sa.Uuid(), nullable=True),
        sa.Column("submitted_role", sa.String(length=16), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=True),
        sa.Column("command", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("env", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=True),
        sa.Column("placement", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_runtime_s", sa.Integer(), nullable=True),
        sa.Column("on_lost", sa.String(length=16), nullable=False),
        sa.Column("lost_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=True),
        sa.Column("node_name", sa.String(length=253), nullable=True),
        sa.Column("assignment", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("placement_version", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rerun_of", sa.Uuid(), nullable=True),
        sa.Column("workflow_id", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_jobs_cluster_id_clusters"), ondelete="SET NULL"
        ),
        _uuid_fk("org_id", "jobs", "orgs", "CASCADE"),
        sa.ForeignKeyConstraint(["rerun_of"], ["jobs.id"], name=op.f("fk_jobs_rerun_of_jobs"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["submitted_by"], ["users.id"], name=op.f("fk_jobs_submitted_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_org_id_created_at_id", "jobs", ["org_id", "created_at", "id"], unique=False)
    op.create_index("ix_jobs_state", "jobs", ["state"], unique=False)
    op.create_index("ix_jobs_cluster_id_state", "jobs", ["cluster_id", "state"], unique=False)
    op.create_index(op.f("ix_jobs_org_id"), "jobs", ["org_id"], unique=False)
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"),
        _uuid_fk("org_id", "job_events", "orgs", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    op.create_index("ix_job_events_job_id_at", "job_events", ["job_id", "at"], unique=False)
    op.create_index(op.f("ix_job_events_org_id"), "job_events", ["org_id"], unique=False)
    op.create_table(
        "governance_policies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("allowed_clusters", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("allowed_regions", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("gpus_allowed", sa.Boolean(), nullable=False),
        sa.Column("max_cpu_millis", sa.BigInteger(), nullable=True),
        sa.Column("max_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        _uuid_fk("org_id", "governance_policies", "orgs", "CASCADE"),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_governance_policies_updated_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_governance_policies")),
        sa.UniqueConstraint("org_id", "subject_kind", "subject", name="uq_governance_policies_org_id_subject"),
    )
    op.create_index(op.f("ix_governance_policies_org_id"), "governance_policies", ["org_id"], unique=False)
    for table in TENANT_TABLES:
        for stmt in enable_tenant_rls_sql(table):
            op.execute(stmt)
    plans = sa.table("plans", sa.column("name"), sa.column("title"), sa.column("sort_order"))
    caps = sa.table("plan_entitlements", sa.column("plan"), sa.column("resource"), sa.column("cap"))
    op.bulk_insert(plans, [{"name": n, "title": t, "sort_order": o} for n, t, o, _ in PLANS])
    op.bulk_insert(caps, [{"plan": n, "resource": r, "cap": c} for n, _, _, cs in PLANS for r, c in cs.items()])


def downgrade() -> None:
    op.drop_index(op.f("ix_governance_policies_org_id"), table_name="governance_policies")
    op.drop_table("governance_policies")
    op.drop_index(op.f("ix_job_events_org_id"), table_name="job_events")
    op.drop_index("ix_job_events_job_id_at", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index(op.f("ix_jobs_org_id"), table_name="jobs")
    op.drop_index("ix_jobs_cluster_id_state", table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_org_id_created_at_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index(op.f("ix_org_entitlements_org_id"), table_name="org_entitlements")
    op.drop_table("org_entitlements")
    op.drop_table("plan_entitlements")
    op.drop_table("plans")
