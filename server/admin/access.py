"""Who may call the admin API: admin keys, never caller keys.

    AIGC_ADMIN_KEYS=ops:<sha256>,alice:<sha256>     # python -m server.access.keys hash <key>

Admin keys are separate from caller keys: same format (a random token whose
SHA-256 is configured), different list. A presented key is compared with
every admin hash in constant time, like caller keys (server/access/keys.py).

    no admin keys configured     FAILED_PRECONDITION  ADMIN_API_DISABLED
    no key presented             UNAUTHENTICATED      API_KEY_MISSING
    a caller key                 PERMISSION_DENIED    ADMIN_KEY_REQUIRED
    any other key                UNAUTHENTICATED      API_KEY_INVALID
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.rpc import code_pb2

from server.access.keys import KeyRing, Unauthenticated, bearer_token, digest_of
from server.envvars import ConfigError
from server.errors import AigcError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AdminApiDisabled(AigcError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "ADMIN_API_DISABLED"

    def __init__(self) -> None:
        super().__init__("the admin API is off: no admin keys are configured (AIGC_ADMIN_KEYS)")


class AdminKeyRequired(AigcError):
    code = code_pb2.PERMISSION_DENIED
    reason = "ADMIN_KEY_REQUIRED"

    def __init__(self) -> None:
        super().__init__("this is a caller key; the admin API needs an admin key")


@dataclasses.dataclass(frozen=True)
class AdminKey:
    name: str
    digest: bytes = dataclasses.field(repr=False)


class AdminKeys:
    def __init__(self, keys: Iterable[AdminKey]) -> None:
        self.keys = tuple(keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AdminKeys:
        """AIGC_ADMIN_KEYS: `name:sha256,name:sha256`. A bad entry stops the server
        without showing the hash."""
        keys: list[AdminKey] = []
        for item in (part.strip() for part in env.get("AIGC_ADMIN_KEYS", "").split(",")):
            if not item:
                continue
            name, _, digest = item.partition(":")
            if not _NAME.match(name):
                raise ConfigError(
                    "AIGC_ADMIN_KEYS: each entry is name:sha256, the name letters, digits, '_.-'"
                )
            if not _SHA256.match(digest.lower()):
                raise ConfigError(
                    f"AIGC_ADMIN_KEYS ({name}): sha256 must be 64 hex digits (the value was not shown)"
                )
            if any(key.name == name for key in keys):
                raise ConfigError(f"AIGC_ADMIN_KEYS: admin key name {name!r} is used twice")
            keys.append(AdminKey(name, bytes.fromhex(digest.lower())))
        return cls(keys)

    def check_separate(self, callers: KeyRing) -> None:
        """An admin key that is also a caller key would blur the two: refused at start-up."""
        for admin in self.keys:
            for caller in callers.keys:
                if hmac.compare_digest(admin.digest, caller.digest):
                    raise ConfigError(
                        f"admin key {admin.name!r} is also caller key {caller.name!r}: use different keys"
                    )

    def is_admin(self, metadata: Iterable[tuple[str, Any]]) -> bool:
        """Whether the call presents an admin key (every hash compared, in constant time)."""
        token = bearer_token(metadata)
        if token is None:
            return False
        presented = digest_of(token)
        found = False
        for key in self.keys:
            if hmac.compare_digest(key.digest, presented):
                found = True
        return found

    def authenticate(self, metadata: Iterable[tuple[str, Any]], callers: KeyRing) -> str:
        """The admin key's name; raises the errors in the module docstring."""
        if not self.keys:
            raise AdminApiDisabled()
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                "API_KEY_MISSING", "an admin key is required: send `authorization: Bearer <key>`"
            )
        presented = digest_of(token)
        found: AdminKey | None = None
        for key in self.keys:  # every key compared, in constant time
            if hmac.compare_digest(key.digest, presented):
                found = key
        if found is not None:
            return found.name
        caller = False
        for key in callers.keys:
            if hmac.compare_digest(key.digest, presented):
                caller = True
        if caller:
            raise AdminKeyRequired()
        raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
