"""The record of every call.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("key_name", sa.String(128)),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("reasoning_tokens", sa.Integer()),
        sa.Column("cached_prompt_tokens", sa.Integer()),
        sa.Column("cache_write_prompt_tokens", sa.Integer()),
        sa.Column("cost_nanos", sa.BigInteger()),
        sa.Column("currency", sa.String(3)),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float()),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("fallbacks", sa.String(1024), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_calls_time", "calls", ["time"])
    op.create_index("ix_calls_key_name_time", "calls", ["key_name", "time"])
    op.create_index("ix_calls_model_time", "calls", ["model", "time"])


def downgrade() -> None:
    op.drop_table("calls")
