"""Join the branches that features grew in parallel from the identity and cluster schemas.

Revision ID: 0011
Revises: 0004, 0008, 0009, 0010
"""

from collections.abc import Sequence

revision: str = "0011"
down_revision: str | tuple[str, ...] | None = ("0004", "0008", "0009", "0010")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
