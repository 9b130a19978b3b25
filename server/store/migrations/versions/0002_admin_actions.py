"""Who called the admin API, and how each call ended.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_actions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("admin", sa.String(128)),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64)),
    )
    op.create_index("ix_admin_actions_time", "admin_actions", ["time"])


def downgrade() -> None:
    op.drop_table("admin_actions")
