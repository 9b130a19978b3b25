"""The tables, as SQLAlchemy Core metadata: what the migrations build and the queries use.

Times are UTC. Money is an integer number of nano-units of `currency` (as in
google.type.Money), never a float. A token count or cost that the vendor did
not report is NULL - never 0 - so "no usage reported" stays visible.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# One row per finished call (server/store/recorder.py); never prompt or answer text.
calls = sa.Table(
    "calls",
    metadata,
    # BIGINT on PostgreSQL; SQLite auto-increments only an INTEGER primary key.
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    # When the call started (UTC).
    sa.Column("time", sa.DateTime(), nullable=False),
    # The caller's key name; NULL with authentication off.
    sa.Column("key_name", sa.String(128)),
    # The model id served (after any fallback), or what the request named.
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("provider", sa.String(128), nullable=False),
    # "grpc" (and REST through Envoy) or "openai" (the OpenAI-compatible door).
    sa.Column("surface", sa.String(16), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    # The google.rpc.Code name ("OK", "RESOURCE_EXHAUSTED", ...) and its ErrorInfo reason.
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
    # Model ids tried after the first failed, comma-separated ("" = none).
    sa.Column("fallbacks", sa.String(1024), nullable=False),
    sa.Column("cancelled", sa.Boolean(), nullable=False),
    sa.Index("ix_calls_time", "time"),
    sa.Index("ix_calls_key_name_time", "key_name", "time"),
    sa.Index("ix_calls_model_time", "model", "time"),
)

# One row per admin API call (server/admin/): who did what, and how it ended.
admin_actions = sa.Table(
    "admin_actions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(), nullable=False),
    # The admin key's name; NULL when the call was refused before one was known.
    sa.Column("admin", sa.String(128)),
    # The AdminService method, e.g. "ListCalls".
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    # The google.rpc.Code name and ErrorInfo reason it ended with.
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(64)),
    sa.Index("ix_admin_actions_time", "time"),
)

# Caller keys created through the admin API (server/admin/keys.py); config-file keys are not here.
api_keys = sa.Table(
    "api_keys",
    metadata,
    # The key id (`keys/{id}`): the name in logs, metrics and call records.
    sa.Column("id", sa.String(64), primary_key=True),
    # SHA-256 of the secret, hex; the secret itself is never stored.
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    # JSON list of model ids; NULL: every model.
    sa.Column("models", sa.Text()),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.Column("expire_time", sa.DateTime()),
    sa.Column("create_time", sa.DateTime(), nullable=False),
    sa.Column("update_time", sa.DateTime(), nullable=False),
)
