"""Org admin console: an index for paging the audit log newest-first within one org.

Revision ID: 0004
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # keyset pagination: WHERE org_id = :org AND id < :before ORDER BY id DESC LIMIT n
    op.create_index("ix_audit_events_org_id_id", "audit_events", ["org_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_org_id_id", table_name="audit_events")
