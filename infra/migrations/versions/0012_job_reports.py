"""Job reports pushed by the agent: when the last one taken for a job was observed (agent's clock) and received.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("report_observed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("report_received_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "report_received_at")
    op.drop_column("jobs", "report_observed_at")
