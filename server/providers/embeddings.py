"""What a provider's `embed` takes and returns (see Provider.embed in base.py).

    vectors = await provider.embed(EmbeddingRequest(upstream_model, inputs, ...))

One call is one vendor request: the core (server/core/embedding.py) has
already split the caller's inputs into batches of at most the provider's
`max_embedding_inputs`, and joins the vectors back in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(slots=True)
class EmbeddingRequest:
    """One batch of texts, validated, as a provider receives it."""

    # The model's name at the vendor.
    upstream_model: str
    # Non-empty texts; at most the provider's max_embedding_inputs.
    inputs: Sequence[str]
    # The vector length asked for; None: the model's own.
    dimensions: int | None = None
    # An aigc.v1.EmbeddingTask value (0: unspecified).
    task: int = 0
    user_id: str = ""
    # Merged into the vendor's request body; keys checked against the
    # provider's reserved_embedding_keys.
    vendor_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Event-loop time by which the caller's deadline passes (minus a margin).
    deadline: float | None = None


@dataclasses.dataclass(slots=True)
class Embeddings:
    """The vectors of one batch, in input order, and the tokens the vendor counted."""

    vectors: list[list[float]]
    # None when the vendor reports no count (Gemini): never estimated.
    prompt_tokens: int | None = None


__all__ = ["EmbeddingRequest", "Embeddings"]
