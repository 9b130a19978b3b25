"""Caller API keys: who may call, which models, under which quotas.

    python -m server.access.keys new team-a     # prints a new key and its config entry

A key is a random token (`aigc-` + 43 URL-safe characters, 256 bits) that the
caller sends as `authorization: Bearer <key>` (gRPC metadata, or the HTTP
header through Envoy). The service stores only its SHA-256: a random 256-bit
token cannot be guessed from a fast hash, so a slow password hash (bcrypt,
argon2) would add milliseconds per request for nothing. A presented key is
hashed and compared with every configured hash in constant time
(`hmac.compare_digest`), so the time taken says nothing about how close a
guess was. Keys never appear in logs, errors or metrics: the key's `name`
does.

Keys come from the AIGC_CONFIG file:

    [[keys]]
    name = "team-a"                    # shown in logs and metrics
    sha256 = "3f0c..."                 # python -m server.access.keys hash <key>
    models = ["gpt-4o-mini", "smollm2"]  # optional; default: every model
    requests_per_minute = 60           # optional quotas (server/access/quotas.py)
    tokens_per_minute = 100000
    max_concurrent_streams = 4

or from AIGC_API_KEYS (`name:sha256,name:sha256`, no models or quotas).

AIGC_AUTH (the server logs which rule holds at start-up):
- auto (the default) with keys configured, or on: every call needs a key.
- auto without keys: callers on this machine (loopback, or a unix socket;
  behind Envoy, the address Envoy names - server/access/clients.py) are
  served without a key; every other caller must send the key the server
  generated in $AIGC_DATA_DIR/caller-key (server/access/caller_key.py). So
  `make run` and curl on localhost work as they are, and nobody else spends
  the vendor keys.
- off: everyone is served without a key (an open relay; logged as a WARNING).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.rpc import code_pb2

from server.access.quotas import QuotaLimits
from server.envvars import ConfigError
from server.errors import AigcError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY_FIELDS = {
    "name",
    "sha256",
    "models",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_streams",
}
_PREFIX = "aigc-"


@dataclasses.dataclass(frozen=True)
class CallerKey:
    """A configured key: its name, its hash, what it may use."""

    name: str
    digest: bytes = dataclasses.field(repr=False)
    # Model ids (and aliases) the key may use; None: every model.
    models: frozenset[str] | None = None
    limits: QuotaLimits = dataclasses.field(default_factory=QuotaLimits)

    def allows(self, *names: str) -> bool:
        return self.models is None or any(name in self.models for name in names)


class Unauthenticated(AigcError):
    code = code_pb2.UNAUTHENTICATED

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ModelNotAllowed(AigcError):
    code = code_pb2.PERMISSION_DENIED
    reason = "MODEL_NOT_ALLOWED"

    def __init__(self, key: CallerKey, model: str) -> None:
        super().__init__(
            f"key {key.name!r} may not use model {model!r}", metadata={"key_name": key.name, "model": model}
        )


def new_key() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# The name the generated caller key goes by in logs and metrics.
GENERATED_KEY_NAME = "caller-key"


class KeyRing:
    """The configured keys; `enabled` says whether callers must present one.

    `local_without_key`: AIGC_AUTH=auto with no keys configured - callers on
    this machine need none, the others the generated key (`with_generated_key`,
    at start-up, from `key_file`).
    """

    def __init__(
        self,
        keys: Sequence[CallerKey],
        *,
        enabled: bool,
        local_without_key: bool = False,
        key_file: str = "",
    ) -> None:
        self.keys = tuple(keys)
        self.enabled = enabled
        self.local_without_key = local_without_key
        self.key_file = key_file

    def with_generated_key(self, key: str, key_file: str) -> KeyRing:
        """This ring (auto, no keys configured) with the generated key required of remote callers."""
        generated = CallerKey(name=GENERATED_KEY_NAME, digest=digest_of(key))
        return KeyRing([generated], enabled=True, local_without_key=True, key_file=key_file)

    def authenticate(self, metadata: Iterable[tuple[str, Any]], *, local: bool = False) -> CallerKey | None:
        """The caller's key from `authorization: Bearer ...`; None when auth is off,
        or when `local` (the caller is on this machine) and local callers need no key.

        Raises Unauthenticated: API_KEY_MISSING without one, API_KEY_INVALID for
        one that matches no configured key.
        """
        if not self.enabled or (local and self.local_without_key):
            return None
        token = bearer_token(metadata)
        if token is None and self.local_without_key:
            raise Unauthenticated(
                "API_KEY_MISSING",
                "an API key is required from callers on other machines: send `authorization: Bearer "
                f"<key>` with the key in $AIGC_DATA_DIR/caller-key on the server ({self.key_file}); "
                "or configure caller keys ([[keys]] in AIGC_CONFIG, or AIGC_API_KEYS); "
                "or set AIGC_AUTH=off to serve everyone without a key",
            )
        if token is None:
            raise Unauthenticated(
                "API_KEY_MISSING", "an API key is required: send `authorization: Bearer <key>`"
            )
        presented = digest_of(token)
        found: CallerKey | None = None
        for key in self.keys:  # every key compared, in constant time: no early exit
            if hmac.compare_digest(key.digest, presented):
                found = key
        if found is None:
            raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
        return found


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for name, value in metadata:
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def load_keys(data: Mapping[str, Any], env: Mapping[str, str], where: str) -> KeyRing:
    """The key ring from the config file's [[keys]], AIGC_API_KEYS and AIGC_AUTH, checked.

    AIGC_AUTH=auto without keys gives a ring with `local_without_key`: the key for
    remote callers is generated (or read) when the server starts, not here."""
    keys: list[CallerKey] = []
    entries = data.get("keys", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: keys must be a list of tables ([[keys]])")
    for index, entry in enumerate(entries):
        label = f"{where} [[keys]] #{index + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: expected a table")
        unknown = sorted(set(entry) - _KEY_FIELDS)
        if "key" in entry or "api_key" in entry:
            raise ConfigError(
                f"{label}: a key must not be written in the file; write its sha256 "
                "(python -m server.access.keys hash <key>)"
            )
        if unknown:
            raise ConfigError(
                f"{label}: unknown key {unknown[0]!r}; expected {', '.join(sorted(_KEY_FIELDS))}"
            )
        keys.append(_key(entry, label))
    for item in (p.strip() for p in env.get("AIGC_API_KEYS", "").split(",")):
        if item:
            name, _, digest = item.partition(":")
            keys.append(_key({"name": name, "sha256": digest}, "AIGC_API_KEYS"))
    names = [k.name for k in keys]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{where}: key name {duplicate!r} is used twice")
    mode = env.get("AIGC_AUTH", "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"AIGC_AUTH={mode!r}: expected auto, on or off")
    enabled = mode == "on" or (mode == "auto" and bool(keys))
    if enabled and not keys:
        raise ConfigError(
            "AIGC_AUTH=on but no keys are configured ([[keys]] in AIGC_CONFIG, or AIGC_API_KEYS)"
        )
    return KeyRing(keys, enabled=enabled, local_without_key=mode == "auto" and not keys)


def _key(entry: Mapping[str, Any], label: str) -> CallerKey:
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{label}: name must be letters, digits, '_', '.' or '-' (at most 64)")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
        raise ConfigError(f"{label} ({name}): sha256 must be 64 hex digits (the value was not shown)")
    models = entry.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise ConfigError(f"{label} ({name}): models must be a list of model names")

    def limit(field: str) -> int | None:
        value = entry.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{label} ({name}): {field} must be a whole number above 0")
        return value

    return CallerKey(
        name=name,
        digest=bytes.fromhex(digest.lower()),
        models=frozenset(models) if models is not None else None,
        limits=QuotaLimits(
            requests_per_minute=limit("requests_per_minute"),
            tokens_per_minute=limit("tokens_per_minute"),
            max_concurrent_streams=limit("max_concurrent_streams"),
        ),
    )


def main(argv: list[str]) -> int:
    usage = "usage: python -m server.access.keys new NAME | hash KEY"
    if len(argv) == 2 and argv[0] == "new" and _NAME.match(argv[1]):
        key = new_key()
        print(f"key (give it to the caller; it is not stored): {key}\n")
        print(f'[[keys]]\nname = "{argv[1]}"\nsha256 = "{digest_of(key).hex()}"')
        return 0
    if len(argv) == 2 and argv[0] == "hash":
        print(digest_of(argv[1]).hex())
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = [
    "GENERATED_KEY_NAME",
    "CallerKey",
    "KeyRing",
    "ModelNotAllowed",
    "Unauthenticated",
    "bearer_token",
    "digest_of",
    "load_keys",
    "new_key",
]
