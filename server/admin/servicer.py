"""aigc.v1.AdminService over gRPC (and REST through Envoy): recorded calls and usage.

Each RPC: authenticate the admin key (server/admin/access.py), check the
request (every bad field named in one INVALID_ARGUMENT), read the store
(server/admin/queries.py), and record the action with the admin's name in
`admin_actions` - refused calls too, with the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import sqlalchemy as sa
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import code_pb2
from google.type import money_pb2

from aigc.v1 import admin_service_pb2 as pb
from aigc.v1 import admin_service_pb2_grpc, generation_pb2
from server.access.keys import CallerKey, KeyRing, digest_of, new_key
from server.admin.access import AdminKeys
from server.admin.keys import CallerKeys, RuntimeKey, delete_key, insert_key, select_key, update_key
from server.admin.queries import DIMENSIONS, CallFilter, page_of_calls, usage_totals
from server.api.calls import request_id
from server.api.grpc_servicer import status_to_grpc
from server.errors import AigcError, InternalError, InvalidRequest
from server.store import Store
from server.store.schema import admin_actions

if TYPE_CHECKING:
    from server.routing import Router

log = logging.getLogger("aigc.admin")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_MAX_TEXT = 256
_CODE_NAMES = frozenset(code_pb2.Code.keys())
_DIMENSION_NAMES = {
    pb.USAGE_DIMENSION_KEY: "key_name",
    pb.USAGE_DIMENSION_MODEL: "model",
    pb.USAGE_DIMENSION_PROVIDER: "provider",
    pb.USAGE_DIMENSION_SURFACE: "surface",
    pb.USAGE_DIMENSION_DAY: "day",
}
assert set(_DIMENSION_NAMES.values()) == set(DIMENSIONS)
# Timestamps the store's columns can hold (Python's datetime range).
_MIN_SECONDS = int(datetime.datetime(1, 1, 1, tzinfo=datetime.UTC).timestamp())
_MAX_SECONDS = int(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC).timestamp())

_Response = TypeVar("_Response")


class StoreDisabled(AigcError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "STORE_DISABLED"

    def __init__(self) -> None:
        super().__init__("calls are not recorded here (AIGC_RECORD_CALLS=false): there is nothing to query")


class KeyNotFound(AigcError):
    code = code_pb2.NOT_FOUND
    reason = "KEY_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"no key {name!r}; ListKeys shows the keys", metadata={"name": name})


class KeyExists(AigcError):
    code = code_pb2.ALREADY_EXISTS
    reason = "KEY_EXISTS"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"a key named {key_id!r} exists already", metadata={"key_id": key_id})


class KeyReadOnly(AigcError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "KEY_READ_ONLY"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name!r} comes from the server's configuration: change it there", metadata={"name": name}
        )


class AuthenticationOff(AigcError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "AUTHENTICATION_OFF"

    def __init__(self) -> None:
        super().__init__(
            "authentication is off here (no caller keys configured, or AIGC_AUTH=off): a created key "
            "would not be asked for; configure a key or set AIGC_AUTH=on"
        )


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        admins: AdminKeys,
        callers: KeyRing | CallerKeys,
        store: Store | None,
        router: Router | None = None,
    ) -> None:
        self.admins = admins
        self._callers = callers
        self._store = store
        self._router = router

    # --- keys -------------------------------------------------------------------------------------

    async def CreateKey(self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:  # noqa: N802
        async def run(store: Store) -> pb.Key:
            callers = self._runtime_keys()
            violations: dict[str, str] = {}
            if not _KEY_ID.match(request.key_id):
                violations["key_id"] = (
                    "letters, digits, '_', '.', '-'; at most 64; starting with a letter or digit"
                )
            if not request.HasField("key"):
                violations["key"] = "required: the key's settings ({} for none)"
            models = self._models(list(request.key.models), "key.models", violations)
            expire = _time(request.key, "expire_time", violations, prefix="key.")
            if violations:
                raise InvalidRequest(violations)
            if not callers.enabled:
                raise AuthenticationOff()
            if any(key.name == request.key_id for key in callers.config.keys):
                raise KeyExists(request.key_id)
            secret = new_key()
            try:
                created = await insert_key(
                    store, request.key_id, digest_of(secret), models, request.key.disabled, expire
                )
            except sa.exc.IntegrityError:
                raise KeyExists(request.key_id) from None
            await callers.refresh()
            answer = _key(created)
            answer.secret = secret
            return answer

        return await self._serve("CreateKey", context, run)

    async def GetKey(self, request: pb.GetKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:  # noqa: N802
        async def run(store: Store) -> pb.Key:
            key_id = _key_id(request.name, "name")
            callers = self._runtime_keys()
            config = next((key for key in callers.config.keys if key.name == key_id), None)
            if config is not None:
                return _config_key(config)
            found = await select_key(store, key_id)
            if found is None:
                raise KeyNotFound(request.name)
            return _key(found)

        return await self._serve("GetKey", context, run)

    async def ListKeys(  # noqa: N802
        self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKeysResponse:
        async def run(store: Store) -> pb.ListKeysResponse:
            violations: dict[str, str] = {}
            if not 0 <= request.page_size <= _MAX_PAGE_SIZE:
                violations["page_size"] = f"from 0 (meaning {_DEFAULT_KEYS_PAGE}) to {_MAX_PAGE_SIZE}"
            after = _read_keys_token(request.page_token, violations) if request.page_token else ""
            if violations:
                raise InvalidRequest(violations)
            size = request.page_size or _DEFAULT_KEYS_PAGE
            callers = self._runtime_keys()
            await callers.refresh()
            every = sorted(
                [*(_config_key(key) for key in callers.config.keys), *(_key(key) for key in callers.runtime)],
                key=lambda key: key.name,
            )
            rest = [key for key in every if key.name > after]
            response = pb.ListKeysResponse(keys=rest[:size])
            if len(rest) > size:
                response.next_page_token = _keys_token(rest[size - 1].name)
            return response

        return await self._serve("ListKeys", context, run)

    async def UpdateKey(self, request: pb.UpdateKeyRequest, context: grpc.aio.ServicerContext) -> pb.Key:  # noqa: N802
        async def run(store: Store) -> pb.Key:
            key_id = _key_id(request.key.name, "key.name")
            violations: dict[str, str] = {}
            paths = list(request.update_mask.paths)
            if not paths:
                violations["update_mask"] = f"required: the fields to change, of {', '.join(_UPDATABLE)}"
            for path in paths:
                if path not in _UPDATABLE:
                    violations["update_mask"] = f"{path!r} cannot be changed; only {', '.join(_UPDATABLE)}"
            changes: dict[str, Any] = {}
            if "models" in paths:
                changes["models"] = self._models(list(request.key.models), "key.models", violations)
            if "disabled" in paths:
                changes["disabled"] = request.key.disabled
            if "expire_time" in paths:
                changes["expire_time"] = _time(request.key, "expire_time", violations, prefix="key.")
            if violations:
                raise InvalidRequest(violations)
            callers = self._runtime_keys()
            if any(key.name == key_id for key in callers.config.keys):
                raise KeyReadOnly(request.key.name)
            updated = await update_key(store, key_id, changes)
            if updated is None:
                raise KeyNotFound(request.key.name)
            await callers.refresh()
            return _key(updated)

        return await self._serve("UpdateKey", context, run)

    async def DeleteKey(  # noqa: N802
        self, request: pb.DeleteKeyRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        async def run(store: Store) -> empty_pb2.Empty:
            key_id = _key_id(request.name, "name")
            callers = self._runtime_keys()
            if any(key.name == key_id for key in callers.config.keys):
                raise KeyReadOnly(request.name)
            if not await delete_key(store, key_id):
                raise KeyNotFound(request.name)
            await callers.refresh()
            return empty_pb2.Empty()

        return await self._serve("DeleteKey", context, run)

    def _runtime_keys(self) -> CallerKeys:
        if not isinstance(self._callers, CallerKeys):
            raise StoreDisabled()
        return self._callers

    def _models(self, names: list[str], field: str, violations: dict[str, str]) -> list[str] | None:
        """The key's models, each one this server serves; None for every model."""
        if len(names) > _MAX_MODELS:
            violations[field] = f"at most {_MAX_MODELS} models"
            return None
        for index, name in enumerate(names):
            if not name or len(name) > _MAX_TEXT:
                violations[f"{field}[{index}]"] = f"a model id of 1 to {_MAX_TEXT} characters"
                continue
            if self._router is not None:
                try:
                    self._router.resolve(name)
                except AigcError:
                    violations[f"{field}[{index}]"] = "not a model this server serves (see ListModels)"
        return sorted(set(names)) or None

    # --- calls and usage --------------------------------------------------------------------------

    async def ListCalls(  # noqa: N802 - gRPC method names
        self, request: pb.ListCallsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCallsResponse:
        async def run(store: Store) -> pb.ListCallsResponse:
            where, size, before_id = _list_calls_arguments(request)
            rows = await page_of_calls(store, where, size=size + 1, before_id=before_id)
            response = pb.ListCallsResponse(calls=[_call(row) for row in rows[:size]])
            if len(rows) > size:
                response.next_page_token = _page_token(rows[size - 1]["id"], where)
            return response

        return await self._serve("ListCalls", context, run)

    async def QueryUsage(  # noqa: N802
        self, request: pb.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryUsageResponse:
        async def run(store: Store) -> pb.QueryUsageResponse:
            where, group_by = _query_usage_arguments(request)
            groups = await usage_totals(store, where, group_by)
            return pb.QueryUsageResponse(groups=[_group(group) for group in groups])

        return await self._serve("QueryUsage", context, run)

    async def _serve(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        run: Callable[[Store], Awaitable[_Response]],
    ) -> _Response:
        metadata = context.invocation_metadata() or ()
        rid = request_id(metadata)
        admin: str | None = None
        error: AigcError | None = None
        try:
            admin = self.admins.authenticate(metadata, self._callers)
            if self._store is None:
                raise StoreDisabled()
            return await run(self._store)
        except AigcError as exc:
            error = exc
        except Exception:
            log.exception("admin %s failed", method, extra={"request_id": rid})
            error = InternalError(f"internal error; the server log has details under request id {rid}")
        finally:
            await self._record(method, rid, admin, error)
        code, message, trailers = status_to_grpc(error.to_status(rid))
        await context.abort(code, message, (*trailers, ("x-request-id", rid)))
        raise AssertionError("unreachable: abort raises")

    async def _record(self, method: str, rid: str, admin: str | None, error: AigcError | None) -> None:
        status = code_pb2.Code.Name(error.code) if error is not None else "OK"
        reason = error.reason if error is not None else None
        log.info(
            "admin %s %s by %s",
            method,
            status,
            admin or "(no admin key)",
            extra={
                "request_id": rid,
                "admin": admin,
                "method": method,
                "code": status,
                "error_reason": reason,
            },
        )
        if self._store is None:
            return
        row = {
            "time": datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
            "admin": admin,
            "method": method,
            "request_id": rid,
            "status": status,
            "reason": reason,
        }
        try:
            async with self._store.engine.begin() as conn:
                await conn.execute(admin_actions.insert(), [row])
        except Exception as exc:  # the answer stands; the log line above has the action
            log.warning(
                "admin action not recorded: %s: %s", type(exc).__name__, exc, extra={"request_id": rid}
            )


# --- requests ---------------------------------------------------------------------------------


def _list_calls_arguments(request: pb.ListCallsRequest) -> tuple[CallFilter, int, int | None]:
    violations: dict[str, str] = {}
    size = request.page_size or _DEFAULT_PAGE_SIZE
    if not 0 <= request.page_size <= _MAX_PAGE_SIZE:
        violations["page_size"] = f"from 0 (meaning {_DEFAULT_PAGE_SIZE}) to {_MAX_PAGE_SIZE}"
    _text(request.key_name, "key_name", violations)
    _text(request.model, "model", violations)
    if request.status and request.status not in _CODE_NAMES:
        violations["status"] = "a google.rpc.Code name such as OK, NOT_FOUND or RESOURCE_EXHAUSTED"
    start = _time(request, "start_time", violations)
    end = _time(request, "end_time", violations)
    if start is not None and end is not None and start >= end:
        violations["end_time"] = "must be after start_time"
    where = CallFilter(request.key_name, request.model, request.status, start, end)
    before_id = None
    if request.page_token and not violations:
        before_id = _read_page_token(request.page_token, where, violations)
    if violations:
        raise InvalidRequest(violations)
    return where, size, before_id


def _query_usage_arguments(request: pb.QueryUsageRequest) -> tuple[CallFilter, tuple[str, ...]]:
    violations: dict[str, str] = {}
    if not request.HasField("start_time"):
        violations["start_time"] = "required: the start of the time range"
    start = _time(request, "start_time", violations)
    end = _time(request, "end_time", violations)
    if start is not None and end is not None and start >= end:
        violations["end_time"] = "must be after start_time"
    _text(request.key_name, "key_name", violations)
    _text(request.model, "model", violations)
    group_by: list[str] = []
    for index, value in enumerate(request.group_by):
        name = _DIMENSION_NAMES.get(value)
        if name is None:
            violations[f"group_by[{index}]"] = "one of USAGE_DIMENSION_KEY, _MODEL, _PROVIDER, _SURFACE, _DAY"
        elif name in group_by:
            violations[f"group_by[{index}]"] = "each dimension at most once"
        else:
            group_by.append(name)
    if violations:
        raise InvalidRequest(violations)
    return CallFilter(request.key_name, request.model, "", start, end), tuple(group_by)


def _text(value: str, field: str, violations: dict[str, str]) -> None:
    if len(value) > _MAX_TEXT:
        violations[field] = f"at most {_MAX_TEXT} characters"


def _time(request: Any, field: str, violations: dict[str, str], prefix: str = "") -> datetime.datetime | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        violations[prefix + field] = "a time between years 1 and 9999 (RFC 3339, e.g. 2026-12-01T00:00:00Z)"
        return None
    return stamp.ToDatetime()  # naive UTC, as the store keeps times


def _fingerprint(where: CallFilter) -> str:
    """Ties a page token to the filters it was made for."""
    text = json.dumps([where.key_name, where.model, where.status, str(where.start), str(where.end)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _page_token(last_id: int, where: CallFilter) -> str:
    raw = json.dumps({"before": last_id, "filter": _fingerprint(where)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_page_token(token: str, where: CallFilter, violations: dict[str, str]) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        before = data["before"]
        fingerprint = data["filter"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        violations["page_token"] = "not a next_page_token of ListCalls"
        return None
    if isinstance(before, bool) or not isinstance(before, int) or before < 0:
        violations["page_token"] = "not a next_page_token of ListCalls"
        return None
    if fingerprint != _fingerprint(where):
        violations["page_token"] = "made for other filters: list from the first page again"
        return None
    return before


# --- responses --------------------------------------------------------------------------------


def _call(row: dict[str, Any]) -> pb.Call:
    call = pb.Call(
        name=f"calls/{row['id']}",
        request_id=row["request_id"],
        create_time=_timestamp(row["time"]),
        key_name=row["key_name"] or "",
        model=row["model"],
        provider=row["provider"],
        surface=row["surface"],
        method=row["method"],
        status=row["status"],
        reason=row["reason"] or "",
        latency=_duration_ms(row["latency_ms"]),
        retries=row["retries"],
        fallbacks=[name for name in row["fallbacks"].split(",") if name],
        cancelled=row["cancelled"],
    )
    if row["ttft_ms"] is not None:
        call.time_to_first_token.CopyFrom(_duration_ms(row["ttft_ms"]))
    if row["prompt_tokens"] is not None:
        usage = generation_pb2.Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"] or 0,
            total_tokens=row["prompt_tokens"] + (row["completion_tokens"] or 0),
        )
        for field in ("reasoning_tokens", "cached_prompt_tokens", "cache_write_prompt_tokens"):
            if row[field] is not None:
                setattr(usage, field, row[field])
        if row["cost_nanos"] is not None:
            usage.cost.CopyFrom(_money(row["cost_nanos"], row["currency"] or ""))
        call.usage.CopyFrom(usage)
    return call


def _group(group: dict[str, Any]) -> pb.UsageGroup:
    return pb.UsageGroup(
        key_name=group.get("key_name") or "",
        model=group.get("model") or "",
        provider=group.get("provider") or "",
        surface=group.get("surface") or "",
        day=group.get("day") or "",
        calls=group["calls"],
        errors=group["errors"],
        calls_without_usage=group["calls_without_usage"],
        prompt_tokens=group["prompt_tokens"],
        completion_tokens=group["completion_tokens"],
        reasoning_tokens=group["reasoning_tokens"],
        cached_prompt_tokens=group["cached_prompt_tokens"],
        costs=[_money(nanos, currency) for currency, nanos in sorted(group["costs"].items())],
        mean_latency=_duration_ms(float(group["mean_latency_ms"] or 0)),
        max_latency=_duration_ms(float(group["max_latency_ms"] or 0)),
    )


def _timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.replace(tzinfo=datetime.UTC))
    return stamp


def _duration_ms(ms: float) -> duration_pb2.Duration:
    nanos = round(ms * 1_000_000)
    return duration_pb2.Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def _money(nanos: int, currency: str) -> money_pb2.Money:
    units, rest = divmod(nanos, 1_000_000_000)
    return money_pb2.Money(currency_code=currency, units=units, nanos=rest)


_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UPDATABLE = ("models", "disabled", "expire_time")
_DEFAULT_KEYS_PAGE = 100
_MAX_MODELS = 100


def _key_id(name: str, field: str) -> str:
    prefix, _, key_id = name.partition("/")
    if prefix != "keys" or not _KEY_ID.match(key_id):
        raise InvalidRequest({field: "a key's resource name: keys/{key_id}"})
    return key_id


def _keys_token(last: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode().rstrip("=")


def _read_keys_token(token: str, violations: dict[str, str]) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        after = None
    if not isinstance(after, str) or not after.startswith("keys/"):
        violations["page_token"] = "not a next_page_token of ListKeys"
        return ""
    return after


def _key(key: RuntimeKey) -> pb.Key:
    answer = pb.Key(
        name=f"keys/{key.id}",
        models=sorted(key.models or ()),
        disabled=key.disabled,
        create_time=_timestamp(key.create_time),
        update_time=_timestamp(key.update_time),
        source=pb.KEY_SOURCE_RUNTIME,
    )
    if key.expire_time is not None:
        answer.expire_time.CopyFrom(_timestamp(key.expire_time))
    return answer


def _config_key(key: CallerKey) -> pb.Key:
    return pb.Key(name=f"keys/{key.name}", models=sorted(key.models or ()), source=pb.KEY_SOURCE_CONFIG)


def register(servicer: AdminServicer, server: grpc.aio.Server) -> None:
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)


__all__ = ["SERVICE_NAME", "AdminServicer", "StoreDisabled", "register"]
