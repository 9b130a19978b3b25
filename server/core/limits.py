"""Size limits on requests, checked before any provider sees them.

One frozen dataclass so the core, the docs and (later) the configuration
agree on one set of numbers. Each bounds work a single request can cause:
a 10,000-message conversation, a 100 MB image or a megabyte of JSON Schema
is refused with INVALID_ARGUMENT up front, not tokenized by a model for
half a minute.
"""

from __future__ import annotations

import dataclasses

# The largest request body, in bytes: gRPC messages (server/api/grpc_servicer.py)
# and HTTP bodies at Envoy (gateway/render.py) alike, so both doors refuse the
# same requests - with INVALID_ARGUMENT (REQUEST_TOO_LARGE), which clients do
# not retry, not a RESOURCE_EXHAUSTED that they would.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    # Messages in one chat request.
    max_messages: int = 2048
    # Parts in one message.
    max_parts_per_message: int = 256
    # Characters in one text part (or prompt, or tool description).
    max_text_chars: int = 4 * 1024 * 1024
    # Images in one request, and bytes per inline image.
    max_images: int = 64
    max_image_bytes: int = 10 * 1024 * 1024
    # Function declarations in one request.
    max_tools: int = 128
    # A tool's `parameters` or a response schema, as JSON.
    max_schema_bytes: int = 64 * 1024


__all__ = ["MAX_REQUEST_BYTES", "Limits"]
