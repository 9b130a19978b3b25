"""aigc.v1.AdminService on the whole stack (server + Envoy, as `make run`), on
SQLite and on PostgreSQL: the calls a caller key makes show up in ListCalls and
QueryUsage, over gRPC and REST; only admin keys get in; every bad input gets a
clear google.rpc.Status; every admin action is recorded with who."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from aigc.v1 import admin_service_pb2 as admin_pb
from aigc.v1 import admin_service_pb2_grpc, aigc_service_pb2_grpc, content_pb2, generation_pb2
from aigc.v1 import aigc_service_pb2 as pb
from server.access.keys import digest_of
from server.store import Store, StoreSettings
from server.store.schema import admin_actions
from tests.support.processes import running_server
from tests.support.stack import running_stack

CALLER_KEY = "aigc-caller-key-for-tests-0000000000000000000000"
ADMIN_KEY = "aigc-admin-key-for-tests-00000000000000000000000"
CONFIG = f"""
[[keys]]
name = "team-a"
sha256 = "{digest_of(CALLER_KEY).hex()}"

[prices.smollm2]
currency = "USD"
input = 1
output = 2
"""
CALLER = (("authorization", f"Bearer {CALLER_KEY}"),)
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
NASTY = "x'; DROP TABLE calls; --\"\\%_*"
REQUEST = pb.ChatRequest(
    messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Say hi.")],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=3, temperature=0),
)


class Env:
    def __init__(self, stack, store_env) -> None:
        self.stack = stack
        self.store_env = store_env
        self.channel = grpc.insecure_channel(stack.grpc_address)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.aigc = aigc_service_pb2_grpc.AigcServiceStub(self.channel)
        self.http = httpx.Client(base_url=stack.http, timeout=30)
        self.answers: list[pb.ChatResponse] = []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request, tmp_path_factory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("admin")
    (root / "aigc.toml").write_text(CONFIG)
    store_env = {"AIGC_DATA_DIR": str(root / "data")}
    if request.param == "postgresql":
        store_env["AIGC_DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    stack_env = {
        **store_env,
        "AIGC_CONFIG": str(root / "aigc.toml"),
        "AIGC_ADMIN_KEYS": f"ops:{digest_of(ADMIN_KEY).hex()}",
        "AIGC_RECORD_FLUSH_SECONDS": "0.05",
    }
    with running_stack(stack_env) as stack:
        e = Env(stack, store_env)
        for rid in ("adm-1", "adm-2"):
            e.answers.append(e.aigc.Chat(REQUEST, metadata=(*CALLER, ("x-request-id", rid)), timeout=60))
        with pytest.raises(grpc.RpcError):
            e.aigc.Chat(pb.ChatRequest(model="nope", messages=REQUEST.messages), metadata=CALLER, timeout=60)
        _wait_for_calls(e.admin, 3)
        try:
            yield e
        finally:
            e.http.close()
            e.channel.close()


def _wait_for_calls(admin, count: int) -> None:
    """The records are written within the flush interval: wait until they are."""
    deadline = time.monotonic() + 30
    while len(admin.ListCalls(admin_pb.ListCallsRequest(), metadata=ADMIN, timeout=10).calls) < count:
        assert time.monotonic() < deadline, "the calls were not recorded"
        time.sleep(0.05)


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Code, ErrorInfo reason and BadRequest violations of a failed call."""
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    reason, violations = "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    return error.code(), reason, violations


def fails(call, request, metadata=ADMIN):
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata, timeout=10)
    return status_of(caught.value)


def stamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


# --- what the admin sees ------------------------------------------------------------------------


def test_list_calls_shows_each_call_with_its_tokens_and_cost(env):
    calls = env.admin.ListCalls(admin_pb.ListCallsRequest(), metadata=ADMIN, timeout=10).calls
    by_id = {c.request_id: c for c in calls}
    for rid, answer in zip(("adm-1", "adm-2"), env.answers, strict=True):
        call = by_id[rid]
        assert (call.key_name, call.model, call.provider, call.method, call.status) == (
            "team-a",
            "smollm2",
            "local",
            "Chat",
            "OK",
        )
        assert call.usage == answer.usage  # tokens and cost exactly as the caller was told
        assert call.name.startswith("calls/") and call.latency.ToNanoseconds() > 0
    refused = next(c for c in calls if c.model == "nope")
    assert (refused.status, refused.reason, refused.HasField("usage")) == (
        "NOT_FOUND",
        "MODEL_NOT_FOUND",
        False,
    )
    assert [c.name for c in calls] == sorted((c.name for c in calls), key=lambda n: -int(n.split("/")[1]))


def test_list_calls_filters_and_pages(env):
    ok = env.admin.ListCalls(
        admin_pb.ListCallsRequest(status="OK", model="smollm2"), metadata=ADMIN, timeout=10
    )
    assert {c.request_id for c in ok.calls} >= {"adm-1", "adm-2"} and all(c.status == "OK" for c in ok.calls)
    assert not env.admin.ListCalls(admin_pb.ListCallsRequest(key_name="team-b"), metadata=ADMIN).calls
    future = admin_pb.ListCallsRequest(start_time=stamp(int(time.time()) + 3600))
    assert not env.admin.ListCalls(future, metadata=ADMIN, timeout=10).calls
    everything = env.admin.ListCalls(admin_pb.ListCallsRequest(), metadata=ADMIN, timeout=10).calls
    seen, token = [], ""
    while True:
        page = env.admin.ListCalls(admin_pb.ListCallsRequest(page_size=1, page_token=token), metadata=ADMIN)
        seen.extend(c.name for c in page.calls)
        token = page.next_page_token
        if not token:
            break
    assert seen == [c.name for c in everything]


def test_query_usage_totals_by_key_and_model(env):
    request = admin_pb.QueryUsageRequest(
        start_time=stamp(int(time.time()) - 3600),
        group_by=[admin_pb.USAGE_DIMENSION_KEY, admin_pb.USAGE_DIMENSION_MODEL, admin_pb.USAGE_DIMENSION_DAY],
    )
    groups = env.admin.QueryUsage(request, metadata=ADMIN, timeout=10).groups
    group = next(g for g in groups if g.model == "smollm2")
    assert group.key_name == "team-a" and len(group.day) == 10
    assert group.calls >= 2 and group.errors == 0
    assert group.prompt_tokens == sum(a.usage.prompt_tokens for a in env.answers)
    assert group.completion_tokens == sum(a.usage.completion_tokens for a in env.answers)
    (cost,) = group.costs
    assert cost.currency_code == "USD"
    assert cost.units * 10**9 + cost.nanos == sum(
        a.usage.cost.units * 10**9 + a.usage.cost.nanos for a in env.answers
    )
    refused = next(g for g in groups if g.model == "nope")
    assert (refused.calls, refused.errors, refused.calls_without_usage, list(refused.costs)) == (1, 1, 1, [])


def test_rest_through_envoy(env):
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    reply = env.http.get("/v1/calls", params={"page_size": 2}, headers=admin)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["calls"]) == 2
    since = {"start_time": "2000-01-01T00:00:00Z", "status": "NOT_FOUND", "key_name": "team-a"}
    reply = env.http.get("/v1/calls", params=since, headers=admin)
    assert reply.status_code == 200, reply.text
    assert [c["model"] for c in reply.json()["calls"]] == ["nope"]
    reply = env.http.get("/v1/calls", params={"start_time": "yesterday"}, headers=admin)
    assert reply.status_code == 400, reply.text
    reply = env.http.post(
        "/v1/usage:query",
        json={"start_time": "2000-01-01T00:00:00Z", "group_by": ["USAGE_DIMENSION_MODEL"]},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert reply.status_code == 200, reply.text
    assert {g["model"] for g in reply.json()["groups"]} >= {"smollm2", "nope"}
    refused = env.http.get("/v1/calls", headers={"authorization": f"Bearer {CALLER_KEY}"})
    assert refused.status_code == 403
    assert refused.json()["details"][0]["reason"] == "ADMIN_KEY_REQUIRED"


# --- who may call -------------------------------------------------------------------------------

RPCS = [
    ("ListCalls", admin_pb.ListCallsRequest()),
    ("QueryUsage", admin_pb.QueryUsageRequest(start_time=stamp(0))),
]


@pytest.mark.parametrize(("method", "request_"), RPCS)
def test_only_admin_keys_get_in(env, method, request_):
    call = getattr(env.admin, method)
    assert fails(call, request_, ())[:2] == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
    assert fails(call, request_, CALLER)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_KEY_REQUIRED")
    wrong = (("authorization", f"Bearer {NASTY}"),)
    assert fails(call, request_, wrong)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")


@pytest.mark.parametrize(("method", "request_"), RPCS)
def test_without_admin_keys_the_admin_api_is_off(stub, server, method, request_):
    """The session server has no AIGC_ADMIN_KEYS."""
    with grpc.insecure_channel(server.address) as channel:
        call = getattr(admin_service_pb2_grpc.AdminServiceStub(channel), method)
        code, reason, _ = fails(call, request_)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ADMIN_API_DISABLED")


def test_without_the_store_there_is_nothing_to_query():
    env = {"AIGC_RECORD_CALLS": "false", "AIGC_ADMIN_KEYS": f"ops:{digest_of(ADMIN_KEY).hex()}"}
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        code, reason, _ = fails(
            admin_service_pb2_grpc.AdminServiceStub(channel).ListCalls, admin_pb.ListCallsRequest()
        )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STORE_DISABLED")


def test_every_admin_action_is_recorded_with_who(env):
    env.admin.ListCalls(
        admin_pb.ListCallsRequest(), metadata=(*ADMIN, ("x-request-id", "audit-ok")), timeout=10
    )
    fails(env.admin.ListCalls, admin_pb.ListCallsRequest(), (*CALLER, ("x-request-id", "audit-refused")))

    async def actions() -> dict[str, dict]:
        store = await Store.open(StoreSettings.from_env(env.store_env))
        try:
            async with store.connect() as conn:
                rows = await conn.execute(admin_actions.select())
                return {row.request_id: dict(row._mapping) for row in rows}
        finally:
            await store.close()

    rows = asyncio.run(actions())
    assert (rows["audit-ok"]["admin"], rows["audit-ok"]["method"], rows["audit-ok"]["status"]) == (
        "ops",
        "ListCalls",
        "OK",
    )
    assert (rows["audit-refused"]["admin"], rows["audit-refused"]["reason"]) == (None, "ADMIN_KEY_REQUIRED")


# --- bad input ----------------------------------------------------------------------------------

BAD_LIST_CALLS = [
    (admin_pb.ListCallsRequest(page_size=-1), "page_size"),
    (admin_pb.ListCallsRequest(page_size=1001), "page_size"),
    (admin_pb.ListCallsRequest(page_token="not-a-token"), "page_token"),
    (admin_pb.ListCallsRequest(page_token=NASTY), "page_token"),
    (
        admin_pb.ListCallsRequest(page_token="eyJiZWZvcmUiOiAtMSwgImZpbHRlciI6ICJ4In0"),
        "page_token",
    ),  # before -1
    (admin_pb.ListCallsRequest(status="BOGUS"), "status"),
    (admin_pb.ListCallsRequest(status=NASTY), "status"),
    (admin_pb.ListCallsRequest(key_name="k" * 257), "key_name"),
    (admin_pb.ListCallsRequest(model="m" * 257), "model"),
    (admin_pb.ListCallsRequest(start_time=stamp(-(10**12))), "start_time"),
    (admin_pb.ListCallsRequest(end_time=stamp(10**12)), "end_time"),
    (admin_pb.ListCallsRequest(start_time=stamp(100), end_time=stamp(100)), "end_time"),
]


@pytest.mark.parametrize(("request_", "field"), BAD_LIST_CALLS)
def test_list_calls_bad_input_names_the_field(env, request_, field):
    code, reason, violations = fails(env.admin.ListCalls, request_)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert field in violations


def test_a_page_token_for_other_filters_is_refused(env):
    page = env.admin.ListCalls(admin_pb.ListCallsRequest(page_size=1), metadata=ADMIN, timeout=10)
    assert page.next_page_token
    other = admin_pb.ListCallsRequest(page_size=1, page_token=page.next_page_token, model="smollm2")
    code, _, violations = fails(env.admin.ListCalls, other)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "other filters" in violations["page_token"]


BAD_QUERY_USAGE = [
    (admin_pb.QueryUsageRequest(), "start_time"),
    (admin_pb.QueryUsageRequest(start_time=stamp(100), end_time=stamp(50)), "end_time"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0, nanos=-1)), "start_time"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0), group_by=[0]), "group_by[0]"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0), group_by=[99]), "group_by[0]"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0), group_by=[1, 2, 1]), "group_by[2]"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0), key_name="k" * 257), "key_name"),
    (admin_pb.QueryUsageRequest(start_time=stamp(0), model="m" * 257), "model"),
]


@pytest.mark.parametrize(("request_", "field"), BAD_QUERY_USAGE)
def test_query_usage_bad_input_names_the_field(env, request_, field):
    code, reason, violations = fails(env.admin.QueryUsage, request_)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert field in violations


def test_sql_metacharacters_in_every_string_are_just_text(env):
    """Matched as values, never run: no rows, no error - and the tables are all still there."""
    listed = env.admin.ListCalls(
        admin_pb.ListCallsRequest(key_name=NASTY, model=NASTY), metadata=ADMIN, timeout=10
    )
    assert not listed.calls
    usage = admin_pb.QueryUsageRequest(start_time=stamp(0), key_name=NASTY, model=NASTY, group_by=[1])
    assert not env.admin.QueryUsage(usage, metadata=ADMIN, timeout=10).groups
    assert env.admin.ListCalls(admin_pb.ListCallsRequest(), metadata=ADMIN, timeout=10).calls


def test_prometheus_counts_spend_by_key_and_model(env):
    metrics = httpx.get(f"http://127.0.0.1:{env.stack.metrics_port}/metrics", timeout=10).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("aigc_spend_total{") and 'key="team-a"' in line and 'model="smollm2"' in line
    )
    assert 'currency="USD"' in line
    spent = sum(a.usage.cost.units + a.usage.cost.nanos / 1e9 for a in env.answers)
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(spent, rel=1e-9)
    assert CALLER_KEY not in metrics and ADMIN_KEY not in metrics
