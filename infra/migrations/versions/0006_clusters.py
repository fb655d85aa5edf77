"""Clusters: records and history, registration tokens, agent credentials, inventory, command queue.

Revision ID: 0006
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tenants.rls import enable_tenant_rls_sql

revision: str = "0006"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = (
    "clusters",
    "cluster_events",
    "registration_tokens",
    "cluster_credentials",
    "cluster_inventories",
    "agent_commands",
)


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("runtime", sa.String(length=16), nullable=True),
        sa.Column("agent_version", sa.String(length=32), nullable=True),
        sa.Column("kubernetes_version", sa.String(length=32), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workflow_id", sa.String(length=200), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_clusters_created_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_clusters_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
        sa.UniqueConstraint("org_id", "name", name="uq_clusters_org_id_name"),
    )
    op.create_index(op.f("ix_clusters_org_id"), "clusters", ["org_id"], unique=False)
    op.create_table(
        "agent_commands",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_agent_commands_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_agent_commands_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_commands")),
        sa.UniqueConstraint("cluster_id", "dedupe_key", name="uq_agent_commands_cluster_id_dedupe_key"),
    )
    op.create_index(
        "ix_agent_commands_cluster_id_state", "agent_commands", ["cluster_id", "state"], unique=False
    )
    op.create_index(op.f("ix_agent_commands_org_id"), "agent_commands", ["org_id"], unique=False)
    op.create_table(
        "cluster_credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_credentials_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_cluster_credentials_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_credentials")),
        sa.UniqueConstraint("prefix", name=op.f("uq_cluster_credentials_prefix")),
    )
    op.create_index(
        op.f("ix_cluster_credentials_cluster_id"), "cluster_credentials", ["cluster_id"], unique=False
    )
    op.create_index(op.f("ix_cluster_credentials_org_id"), "cluster_credentials", ["org_id"], unique=False)
    op.create_table(
        "cluster_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_events_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_cluster_events_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_events")),
    )
    op.create_index("ix_cluster_events_cluster_id_at", "cluster_events", ["cluster_id", "at"], unique=False)
    op.create_index(op.f("ix_cluster_events_org_id"), "cluster_events", ["org_id"], unique=False)
    op.create_table(
        "cluster_inventories",
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("cpu_total_millis", sa.BigInteger(), nullable=False),
        sa.Column("cpu_allocated_millis", sa.BigInteger(), nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_allocated_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpu_total", sa.Integer(), nullable=False),
        sa.Column("gpu_allocated", sa.Integer(), nullable=False),
        sa.Column("storage_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_allocated_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpus_by_type", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("inventory", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_inventories_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_cluster_inventories_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", name=op.f("pk_cluster_inventories")),
    )
    op.create_index(op.f("ix_cluster_inventories_org_id"), "cluster_inventories", ["org_id"], unique=False)
    op.create_table(
        "registration_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_registration_tokens_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_registration_tokens_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_registration_tokens_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_registration_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_registration_tokens_cluster_id"), "registration_tokens", ["cluster_id"], unique=False
    )
    op.create_index(op.f("ix_registration_tokens_org_id"), "registration_tokens", ["org_id"], unique=False)
    for table in TENANT_TABLES:
        for stmt in enable_tenant_rls_sql(table):
            op.execute(stmt)


def downgrade() -> None:
    op.drop_index(op.f("ix_registration_tokens_org_id"), table_name="registration_tokens")
    op.drop_index(op.f("ix_registration_tokens_cluster_id"), table_name="registration_tokens")
    op.drop_table("registration_tokens")
    op.drop_index(op.f("ix_cluster_inventories_org_id"), table_name="cluster_inventories")
    op.drop_table("cluster_inventories")
    op.drop_index(op.f("ix_cluster_events_org_id"), table_name="cluster_events")
    op.drop_index("ix_cluster_events_cluster_id_at", table_name="cluster_events")
    op.drop_table("cluster_events")
    op.drop_index(op.f("ix_cluster_credentials_org_id"), table_name="cluster_credentials")
    op.drop_index(op.f("ix_cluster_credentials_cluster_id"), table_name="cluster_credentials")
    op.drop_table("cluster_credentials")
    op.drop_index(op.f("ix_agent_commands_org_id"), table_name="agent_commands")
    op.drop_index("ix_agent_commands_cluster_id_state", table_name="agent_commands")
    op.drop_table("agent_commands")
    op.drop_index(op.f("ix_clusters_org_id"), table_name="clusters")
    op.drop_table("clusters")
