"""ErrorInfo's metadata keys are fixed per reason (AIP-193: a key once observed
for a reason is always present), for every reason docs/errors.md lists and every
reason Envoy makes itself: declared once, in server/errors.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from google.rpc import error_details_pb2

from server import errors
from server.access.gate import Overloaded
from server.access.keys import CallerKey, ModelNotAllowed, Unauthenticated
from server.access.quotas import QuotaExceeded, QuotaLimits, QuotaStoreUnavailable
from server.admin.access import AdminApiDisabled, AdminKeyRequired
from server.admin.servicer import AuthenticationOff, KeyExists, KeyNotFound, KeyReadOnly, StoreDisabled
from server.api.anthropic_door.app import CountTokensNotOffered
from server.api.calls import (
    MalformedRequest,
    RequestHeadersTooLarge,
    RequestTooLarge,
    ServerShuttingDown,
    UnknownRoute,
)
from server.errors import (
    AigcError,
    AnswerTooLarge,
    CapabilityNotSupported,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    ProviderNotConfigured,
    UpstreamError,
    UpstreamFailure,
)
from server.health import TooManyHealthWatches
from tests.support.processes import ROOT

KEY = CallerKey(name="team-a", digest=b"\0" * 32, models=None, limits=QuotaLimits())


def _upstream(failure: UpstreamFailure):
    # The fewest facts a provider may know, and the most.
    yield UpstreamError(failure, "boom", provider="openai")
    yield UpstreamError(
        failure,
        "boom",
        provider="openai",
        upstream_status=503,
        upstream_request_id="req_1",
        retry_after_seconds=2,
        timeout="idle" if failure is UpstreamFailure.TIMEOUT else "",
    )


# Every error the server makes, each built with as little and as much as its callers pass.
SERVER_ERRORS: list[AigcError] = [
    InvalidRequest({"messages": "required"}),
    CapabilityNotSupported("smollm2", "CAPABILITY_VISION", "messages[0].parts[0].image", "images"),
    ModelNotFound(""),
    ModelNotFound("gpt-x"),
    ProviderNotConfigured("gpt-x", "openai", "set OPENAI_API_KEY"),
    InternalError("a bug"),
    ServerShuttingDown(),
    MalformedRequest("Chat"),
    RequestTooLarge(None),
    RequestTooLarge(20_000_000),
    Unauthenticated("API_KEY_MISSING", "an API key is required"),
    Unauthenticated("API_KEY_INVALID", "that key is not valid"),
    ModelNotAllowed(KEY, "gpt-x"),
    QuotaExceeded("team-a", "requests_per_minute", 3.0),
    QuotaStoreUnavailable("redis down"),
    Overloaded(64),
    TooManyHealthWatches(100),
    CountTokensNotOffered(),
    AdminApiDisabled(),
    AdminKeyRequired(),
    StoreDisabled(),
    KeyNotFound("keys/k1"),
    KeyExists("k1"),
    KeyReadOnly("keys/k1"),
    AuthenticationOff(),
    AnswerTooLarge(32 * 1024 * 1024),
    UnknownRoute("GET", "/openai/v1/nope"),
    RequestHeadersTooLarge(),
    *(error for failure in UpstreamFailure for error in _upstream(failure)),
]


def metadata_keys(error: AigcError, request_id: str = "") -> set[str]:
    status = error.to_status(request_id)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == error.reason
    return set(info.metadata)


@pytest.mark.parametrize("error", SERVER_ERRORS, ids=lambda e: f"{e.reason}-{len(e.message)}")
def test_every_error_carries_exactly_its_reasons_keys(error: AigcError):
    declared = errors.ERROR_INFO_KEYS[error.reason]
    # With a request id and without one (reflection refused before a call had one).
    assert metadata_keys(error, "rid-1") == set(declared)
    assert metadata_keys(error) == set(declared)


def test_one_reason_one_key_set_across_cases():
    seen: dict[str, set[frozenset[str]]] = {}
    for error in SERVER_ERRORS:
        seen.setdefault(error.reason, set()).add(frozenset(metadata_keys(error, "rid")))
    assert {reason: sets for reason, sets in seen.items() if len(sets) > 1} == {}


def test_an_undeclared_key_is_a_bug_caught_where_the_error_is_made():
    class Sloppy(ModelNotFound):
        def __init__(self) -> None:
            AigcError.__init__(self, "x", metadata={"model": "m", "surprise": "1"})

    with pytest.raises(ValueError, match="surprise"):
        Sloppy()


def _reasons_in_docs() -> set[str]:
    """The ErrorInfo reason column of every table in docs/errors.md."""
    reasons: set[str] = set()
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and not set(cells[0]) <= {"-", ":"} and cells[4] != "ErrorInfo reason":
            reasons |= set(re.findall(r"`([A-Z][A-Z_]+)`", cells[4]))
    return reasons


def test_every_reason_in_docs_errors_md_is_declared_and_made():
    documented = _reasons_in_docs()
    assert len(documented) > 20, documented
    assert documented <= set(errors.ERROR_INFO_KEYS), documented - set(errors.ERROR_INFO_KEYS)
    made_by_server = {error.reason for error in SERVER_ERRORS}
    made_by_envoy = set(_envoy_reasons())
    # Each documented reason is made by the server (tested above) or by Envoy (below).
    assert documented <= made_by_server | made_by_envoy, documented - made_by_server - made_by_envoy


def _envoy_reasons() -> dict[str, set[str]]:
    """reason -> ErrorInfo metadata keys of every error Envoy makes itself (its local replies)."""
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "gateway" / "render.py"), "-o", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, set[str]] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo" and "reason" in node:
                found.setdefault(node["reason"], set()).add(frozenset(node.get("metadata", {})))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(rendered))
    return found


def test_envoys_own_errors_carry_their_reasons_declared_keys():
    made = _envoy_reasons()
    assert len(made) >= 8, made
    for reason, key_sets in made.items():
        assert key_sets == {frozenset(errors.ERROR_INFO_KEYS[reason])}, reason
