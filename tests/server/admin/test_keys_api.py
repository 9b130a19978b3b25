"""Caller keys through aigc.v1.AdminService: created, changed and revoked on one
replica, in force on another within seconds - two real servers on one
database, SQLite and PostgreSQL - and every bad input answered clearly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from aigc.v1 import admin_service_pb2 as admin_pb
from aigc.v1 import admin_service_pb2_grpc, aigc_service_pb2_grpc
from aigc.v1 import aigc_service_pb2 as pb
from server.access.keys import digest_of
from tests.server.admin.test_admin_api import ADMIN, ADMIN_KEY, CALLER, CONFIG, NASTY, REQUEST, fails
from tests.support.grpcurl import grpcurl
from tests.support.processes import ServerProcess, running_server


class Replicas:
    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.channels = [grpc.insecure_channel(s.address) for s in servers]
        self.admin = [admin_service_pb2_grpc.AdminServiceStub(c) for c in self.channels]
        self.aigc = [aigc_service_pb2_grpc.AigcServiceStub(c) for c in self.channels]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def replicas(request, tmp_path_factory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("keys")
    (root / "aigc.toml").write_text(CONFIG)
    env = {
        "AIGC_DATA_DIR": str(root / "data"),
        "AIGC_CONFIG": str(root / "aigc.toml"),
        "AIGC_ADMIN_KEYS": f"ops:{digest_of(ADMIN_KEY).hex()}",
        "AIGC_KEYS_REFRESH_SECONDS": "0.2",
        "AIGC_RECORD_FLUSH_SECONDS": "0.05",
    }
    if request.param == "postgresql":
        env["AIGC_DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    servers = [ServerProcess(env), ServerProcess(env)]
    try:
        for server in servers:
            server.wait_serving()
        r = Replicas(servers)
        yield r
        for channel in r.channels:
            channel.close()
    finally:
        for server in servers:
            server.stop()


def bearer(secret: str):
    return (("authorization", f"Bearer {secret}"),)


def eventually(check, what: str) -> None:
    """Replicas reload keys every 0.2 s here: wait (bounded) until `check` holds."""
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def accepted(stub, secret: str) -> bool:
    try:
        stub.ListModels(pb.ListModelsRequest(), metadata=bearer(secret), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        return False
    return True


def test_a_key_created_on_one_replica_works_on_the_other_until_revoked(replicas):
    a, b = replicas.admin[0], replicas.aigc[1]
    created = a.CreateKey(admin_pb.CreateKeyRequest(key_id="team-b", key=admin_pb.Key()), metadata=ADMIN)
    secret = created.secret
    assert secret.startswith("aigc-") and created.name == "keys/team-b"
    assert created.source == admin_pb.KEY_SOURCE_RUNTIME and created.HasField("create_time")
    assert not a.GetKey(admin_pb.GetKeyRequest(name="keys/team-b"), metadata=ADMIN).secret  # shown once
    eventually(lambda: accepted(b, secret), "the created key never worked on the other replica")
    answer = b.Chat(REQUEST, metadata=(*bearer(secret), ("x-request-id", "key-b-call")), timeout=60)
    assert answer.usage.total_tokens > 0

    def recorded() -> bool:
        calls = a.ListCalls(admin_pb.ListCallsRequest(key_name="team-b"), metadata=ADMIN).calls
        return any(c.request_id == "key-b-call" for c in calls)

    eventually(recorded, "the call was not recorded under the key's name")

    disable = admin_pb.UpdateKeyRequest(
        key=admin_pb.Key(name="keys/team-b", disabled=True),
        update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
    )
    assert a.UpdateKey(disable, metadata=ADMIN).disabled
    eventually(lambda: not accepted(b, secret), "the disabled key still worked")
    enable = admin_pb.UpdateKeyRequest(
        key=admin_pb.Key(name="keys/team-b"), update_mask=field_mask_pb2.FieldMask(paths=["disabled"])
    )
    a.UpdateKey(enable, metadata=ADMIN)
    eventually(lambda: accepted(b, secret), "the enabled key did not work again")

    expired = admin_pb.UpdateKeyRequest(
        key=admin_pb.Key(
            name="keys/team-b", expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 1)
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
    )
    a.UpdateKey(expired, metadata=ADMIN)
    eventually(lambda: not accepted(b, secret), "the expired key still worked")

    a.DeleteKey(admin_pb.DeleteKeyRequest(name="keys/team-b"), metadata=ADMIN)
    code, reason, _ = fails(a.GetKey, admin_pb.GetKeyRequest(name="keys/team-b"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")
    for server in replicas.servers:
        assert secret not in server.output()  # the secret is in no log line


def test_a_key_limited_to_models(replicas):
    a = replicas.admin[0]
    created = a.CreateKey(
        admin_pb.CreateKeyRequest(key_id="only-smollm2", key=admin_pb.Key(models=["smollm2"])), metadata=ADMIN
    )
    assert list(created.models) == ["smollm2"]
    eventually(lambda: accepted(replicas.aigc[1], created.secret), "the key never worked")
    with pytest.raises(grpc.RpcError) as caught:
        replicas.aigc[1].Chat(
            pb.ChatRequest(model="nope", messages=REQUEST.messages), metadata=bearer(created.secret)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    a.DeleteKey(admin_pb.DeleteKeyRequest(name="keys/only-smollm2"), metadata=ADMIN)


def test_config_keys_are_listed_read_only(replicas):
    a = replicas.admin[0]
    keys = {k.name: k for k in a.ListKeys(admin_pb.ListKeysRequest(), metadata=ADMIN).keys}
    assert keys["keys/team-a"].source == admin_pb.KEY_SOURCE_CONFIG
    update = admin_pb.UpdateKeyRequest(
        key=admin_pb.Key(name="keys/team-a", disabled=True),
        update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
    )
    assert fails(a.UpdateKey, update)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_READ_ONLY")
    delete = admin_pb.DeleteKeyRequest(name="keys/team-a")
    assert fails(a.DeleteKey, delete)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_READ_ONLY")
    again = admin_pb.CreateKeyRequest(key_id="team-a", key=admin_pb.Key())
    assert fails(a.CreateKey, again)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "KEY_EXISTS")


def test_list_keys_pages(replicas):
    a = replicas.admin[0]
    for n in range(3):
        a.CreateKey(admin_pb.CreateKeyRequest(key_id=f"page-{n}", key=admin_pb.Key()), metadata=ADMIN)
    duplicate = admin_pb.CreateKeyRequest(key_id="page-0", key=admin_pb.Key())
    assert fails(a.CreateKey, duplicate)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "KEY_EXISTS")
    every = [k.name for k in a.ListKeys(admin_pb.ListKeysRequest(), metadata=ADMIN).keys]
    seen, token = [], ""
    while True:
        page = a.ListKeys(admin_pb.ListKeysRequest(page_size=1, page_token=token), metadata=ADMIN)
        seen.extend(k.name for k in page.keys)
        token = page.next_page_token
        if not token:
            break
    assert seen == every == sorted(every)
    assert not any(k.secret for k in a.ListKeys(admin_pb.ListKeysRequest(), metadata=ADMIN).keys)
    for n in range(3):
        a.DeleteKey(admin_pb.DeleteKeyRequest(name=f"keys/page-{n}"), metadata=ADMIN)


KEY_RPCS = [
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="x", key=admin_pb.Key())),
    ("GetKey", admin_pb.GetKeyRequest(name="keys/team-a")),
    ("ListKeys", admin_pb.ListKeysRequest()),
    ("UpdateKey", admin_pb.UpdateKeyRequest(key=admin_pb.Key(name="keys/x"))),
    ("DeleteKey", admin_pb.DeleteKeyRequest(name="keys/x")),
]


@pytest.mark.parametrize(("method", "request_"), KEY_RPCS)
def test_caller_keys_are_refused_on_key_rpcs(replicas, method, request_):
    call = getattr(replicas.admin[0], method)
    assert fails(call, request_, CALLER)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_KEY_REQUIRED")
    assert fails(call, request_, ())[:2] == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")


MASK = field_mask_pb2.FieldMask
BAD_KEY_INPUT = [
    ("CreateKey", admin_pb.CreateKeyRequest(key=admin_pb.Key()), "key_id"),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="a b", key=admin_pb.Key()), "key_id"),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id=NASTY, key=admin_pb.Key()), "key_id"),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="k" * 65, key=admin_pb.Key()), "key_id"),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="ok"), "key"),
    (
        "CreateKey",
        admin_pb.CreateKeyRequest(key_id="ok", key=admin_pb.Key(models=["no-such-model"])),
        "key.models[0]",
    ),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="ok", key=admin_pb.Key(models=[NASTY])), "key.models[0]"),
    ("CreateKey", admin_pb.CreateKeyRequest(key_id="ok", key=admin_pb.Key(models=[""])), "key.models[0]"),
    (
        "CreateKey",
        admin_pb.CreateKeyRequest(
            key_id="ok", key=admin_pb.Key(expire_time=timestamp_pb2.Timestamp(seconds=10**12))
        ),
        "key.expire_time",
    ),
    ("GetKey", admin_pb.GetKeyRequest(name=""), "name"),
    ("GetKey", admin_pb.GetKeyRequest(name="team-a"), "name"),
    ("GetKey", admin_pb.GetKeyRequest(name="users/team-a"), "name"),
    ("GetKey", admin_pb.GetKeyRequest(name="keys/../team-a"), "name"),
    ("GetKey", admin_pb.GetKeyRequest(name=f"keys/{NASTY}"), "name"),
    ("DeleteKey", admin_pb.DeleteKeyRequest(name=f"keys/{NASTY}"), "name"),
    ("ListKeys", admin_pb.ListKeysRequest(page_size=-1), "page_size"),
    ("ListKeys", admin_pb.ListKeysRequest(page_size=1001), "page_size"),
    ("ListKeys", admin_pb.ListKeysRequest(page_token=NASTY), "page_token"),
    ("ListKeys", admin_pb.ListKeysRequest(page_token="eyJhZnRlciI6IDF9"), "page_token"),  # {"after": 1}
    ("UpdateKey", admin_pb.UpdateKeyRequest(key=admin_pb.Key(name="keys/x")), "update_mask"),
    (
        "UpdateKey",
        admin_pb.UpdateKeyRequest(key=admin_pb.Key(name="keys/x"), update_mask=MASK(paths=["secret"])),
        "update_mask",
    ),
    (
        "UpdateKey",
        admin_pb.UpdateKeyRequest(key=admin_pb.Key(name="keys/x"), update_mask=MASK(paths=["name"])),
        "update_mask",
    ),
    (
        "UpdateKey",
        admin_pb.UpdateKeyRequest(key=admin_pb.Key(name="keys/x"), update_mask=MASK(paths=[NASTY])),
        "update_mask",
    ),
    (
        "UpdateKey",
        admin_pb.UpdateKeyRequest(key=admin_pb.Key(name=NASTY), update_mask=MASK(paths=["disabled"])),
        "key.name",
    ),
    (
        "UpdateKey",
        admin_pb.UpdateKeyRequest(
            key=admin_pb.Key(name="keys/x", models=["nope"]), update_mask=MASK(paths=["models"])
        ),
        "key.models[0]",
    ),
]


@pytest.mark.parametrize(("method", "request_", "field"), BAD_KEY_INPUT)
def test_key_rpcs_bad_input_names_the_field(replicas, method, request_, field):
    code, reason, violations = fails(getattr(replicas.admin[0], method), request_)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert field in violations, violations


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("GetKey", admin_pb.GetKeyRequest(name="keys/nobody")),
        ("DeleteKey", admin_pb.DeleteKeyRequest(name="keys/nobody")),
        (
            "UpdateKey",
            admin_pb.UpdateKeyRequest(
                key=admin_pb.Key(name="keys/nobody"), update_mask=MASK(paths=["disabled"])
            ),
        ),
    ],
)
def test_an_unknown_key_is_not_found(replicas, method, request_):
    assert fails(getattr(replicas.admin[0], method), request_)[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "KEY_NOT_FOUND",
    )


def test_with_authentication_off_no_key_is_created(tmp_path):
    """AIGC_AUTH=off: nobody is asked for a key, so creating one would mislead. (With no keys
    configured and AIGC_AUTH=auto, callers on other machines need a key: created ones serve.)"""
    env = {
        "AIGC_DATA_DIR": str(tmp_path),
        "AIGC_AUTH": "off",
        "AIGC_ADMIN_KEYS": f"ops:{digest_of(ADMIN_KEY).hex()}",
    }
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        create = admin_service_pb2_grpc.AdminServiceStub(channel).CreateKey
        code, reason, _ = fails(create, admin_pb.CreateKeyRequest(key_id="x", key=admin_pb.Key()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AUTHENTICATION_OFF")


def test_grpcurl_with_an_admin_key_can_use_reflection(replicas):
    """With caller keys on, reflection needs a key: an admin key must do, or
    grpcurl could not call the admin API at all."""
    address = replicas.servers[0].address
    admin = f"authorization: Bearer {ADMIN_KEY}"
    done = grpcurl("-H", admin, address, "aigc.v1.AdminService/ListKeys", data={})
    assert done.returncode == 0, done.stderr
    assert any(key["name"] == "keys/team-a" for key in json.loads(done.stdout)["keys"])
