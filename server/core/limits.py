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
# The largest unary answer, in bytes of its parts: delivered whole on every
# surface (gRPC, REST through Envoy's transcoder, the OpenAI door), refused on
# every surface past it (OUT_OF_RANGE, ANSWER_TOO_LARGE) as soon as the vendor's
# stream passes it, which is then closed. Envoy's transcoder buffers a unary
# answer whole: gateway/render.py sizes its limit from this. Streams have no
# such limit (each message is small).
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# Request headers, on every HTTP surface: Envoy's `max_request_headers_kb` and
# `max_headers_count` (gateway/render.py holds the same numbers), and the
# OpenAI door's own listener (each header up to the whole budget; Envoy in
# front bounds the sum). The gRPC server takes 64 KiB of metadata: the 60 KiB
# plus what Envoy adds (x-forwarded-*, x-request-id, ...).
MAX_REQUEST_HEADER_KB = 60
MAX_REQUEST_HEADERS = 100


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


__all__ = ["MAX_ANSWER_BYTES", "MAX_REQUEST_BYTES", "MAX_REQUEST_HEADERS", "MAX_REQUEST_HEADER_KB", "Limits"]
