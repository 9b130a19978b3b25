"""Tests of tools/protoc_gen_openapi.py, run the way the build runs it: by
the real `buf generate`, on the real contract and on a small fixture proto
that uses what the contract does not (yet): path variables, GET query
parameters, a `body` field, maps, oneofs, well-known types.

Expectations about the contract are read from the protos (through
`buf build`), not copied here, so the tests follow the contract as it grows.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules/.bin/buf"
PLUGIN = ROOT / "tools/protoc_gen_openapi.py"
GOOGLEAPIS = ROOT / "build/googleapis"
ERROR_CODES = ["400", "401", "403", "404", "413", "415", "429", "431", "499", "500", "503", "504", "default"]


def buf_generate(workdir: pathlib.Path, out: pathlib.Path) -> str:
    """Runs only our plugin through buf on workdir/proto; returns the text."""
    template = {
        "version": "v2",
        "inputs": [{"directory": "proto"}],
        "plugins": [{"local": [sys.executable, str(PLUGIN)], "out": str(out), "strategy": "all"}],
    }
    subprocess.run(
        [BUF, "generate", "--template", json.dumps(template)],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    return (out / "openapi.json").read_text()


@pytest.fixture(scope="module")
def googleapis() -> pathlib.Path:
    if not (GOOGLEAPIS / ".copied").exists():
        subprocess.run(["make", "protos-deps"], cwd=ROOT, check=True)
    return GOOGLEAPIS


@pytest.fixture(scope="module")
def spec_text(googleapis, tmp_path_factory) -> str:
    return buf_generate(ROOT, tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def spec(spec_text) -> dict:
    return json.loads(spec_text)


@pytest.fixture(scope="module")
def contract(googleapis, tmp_path_factory) -> dict:
    """The contract's descriptors, by full name (messages and services)."""
    image = tmp_path_factory.mktemp("image") / "image.binpb"
    subprocess.run([BUF, "build", "-o", image], cwd=ROOT, check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    types = {}
    for f in files:
        if f.name.startswith("aigc/"):
            for t in [*f.message_type, *f.service]:
                types[f"{f.package}.{t.name}"] = t
    return types


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = spec["components"][kind][name]
    return node


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for verb, op in item.items():
            yield path, verb, op


# --- the real contract --------------------------------------------------------


def test_spec_is_valid_openapi_3_1(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "aigc-service"
    assert spec["info"]["version"] == "v1"
    assert spec["servers"] == [{"url": "/"}]


def test_output_is_formatted_and_deterministic(spec_text, spec, tmp_path):
    assert spec_text == json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
    assert buf_generate(ROOT, tmp_path) == spec_text


def test_routes_match_http_annotations(spec, contract):
    expected = {}
    for service in contract.values():
        if not isinstance(service, descriptor_pb2.ServiceDescriptorProto):
            continue
        for method in service.method:
            rule = method.options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            # OpenAPI names a path variable without its pattern: {name=keys/*} -> {name}.
            path = re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", getattr(rule, verb))
            expected[(path, verb)] = (
                f"{service.name}_{method.name}",
                method.server_streaming,
                method.output_type.lstrip("."),
                rule.body,
            )
    assert expected, "the contract has no annotated methods"
    actual = {(path, verb): op for path, verb, op in operations(spec)}
    assert set(actual) == set(expected)
    for key, (operation_id, streaming, output, body) in expected.items():
        op = actual[key]
        assert op["operationId"] == operation_id
        assert op["tags"] == [operation_id.split("_")[0]]
        (media_type, content), *others = op["responses"]["200"]["content"].items()
        assert not others
        assert media_type == ("text/event-stream" if streaming else "application/json")
        if output == "google.protobuf.Empty":  # a well-known type, inlined (DeleteKey)
            assert content["schema"] == {"type": "object"}
        else:
            assert content["schema"] == {"$ref": f"#/components/schemas/{output}"}
        assert ("requestBody" in op) == bool(body)
    assert actual[("/v1/chat:generate", "post")]["operationId"] == "AigcService_Chat"


def test_streaming_response_explains_sse_framing(spec):
    op = spec["paths"]["/v1/chat:streamGenerate"]["post"]
    text = op["responses"]["200"]["description"]
    for needle in [
        "data: {json}",
        "finish_reason",
        "usage",
        "`error`",
        "google.rpc.Status",
    ]:
        assert needle in text


def test_get_without_body_takes_query_parameters(spec):
    op = spec["paths"]["/v1/models"]["get"]
    assert "requestBody" not in op
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"page_size", "page_token"}
    assert all(p["in"] == "query" for p in params.values())
    assert params["page_size"]["schema"] == {"type": "integer", "format": "int32"}
    assert params["page_token"]["description"].startswith("A `next_page_token`")


def test_every_error_response_is_a_google_rpc_status(spec):
    status_ref = {"$ref": "#/components/schemas/google.rpc.Status"}
    for path, verb, op in operations(spec):
        for code in ERROR_CODES:
            response = resolve(spec, op["responses"][code])
            assert response["description"], (path, verb, code)
            assert response["content"]["application/json"]["schema"] == status_ref
    # Envoy's own parse errors are Status JSON too (gateway/envoy.yaml's mappers), never text.
    for response in spec["components"]["responses"].values():
        assert set(response["content"]) == {"application/json"}
    schemas = spec["components"]["schemas"]
    assert set(schemas["google.rpc.Status"]["properties"]) == {
        "code",
        "message",
        "details",
    }
    assert schemas["google.rpc.Status"]["properties"]["details"]["items"]["properties"]["@type"]
    assert "metadata" in schemas["google.rpc.ErrorInfo"]["properties"]
    assert "field_violations" in schemas["google.rpc.BadRequest"]["properties"]
    assert schemas["google.rpc.RetryInfo"]["properties"]["retry_delay"]["type"] == "string"


def test_schemas_use_proto_field_names_and_required(spec, contract):
    schemas = spec["components"]["schemas"]
    messages = {name: m for name, m in contract.items() if isinstance(m, descriptor_pb2.DescriptorProto)}
    assert messages
    for name, message in messages.items():
        schema = schemas[name]
        assert list(schema.get("properties", {})) == [f.name for f in message.field], name
        required = [
            f.name
            for f in message.field
            if field_behavior_pb2.REQUIRED in f.options.Extensions[field_behavior_pb2.field_behavior]
        ]
        assert schema.get("required", []) == required, name
    assert "generation_config" in schemas["aigc.v1.ChatRequest"]["properties"]
    assert schemas["aigc.v1.ChatRequest"]["required"] == ["messages"]
    assert schemas["aigc.v1.CompleteRequest"]["required"] == ["prompt"]


def test_descriptions_come_from_proto_comments(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["aigc.v1.ChatRequest"]["description"] == (
        "A chat request: the conversation so far, and what the answer may use."
    )
    model = schemas["aigc.v1.ChatRequest"]["properties"]["model"]["description"]
    assert model.startswith("The model to use: an `id` or alias from ListModels.")
    assert spec["info"]["description"].startswith("One API in front of many large-language-model vendors.")
    assert "lowerCamel" in spec["info"]["description"]
    finish = schemas["aigc.v1.FinishReason"]
    assert finish["enum"][0] == "FINISH_REASON_UNSPECIFIED"
    assert "`FINISH_REASON_STOP`: The model finished naturally" in finish["description"]
    # Everything of our own is documented: a missing comment is a failure.
    for name, schema in schemas.items():
        if name.startswith("aigc."):
            assert schema["description"], name
            for prop, sub in schema.get("properties", {}).items():
                assert sub["description"], f"{name}.{prop}"
    for path, verb, op in operations(spec):
        assert op["description"], (path, verb)
        for param in op.get("parameters", []):
            assert param["description"], (path, verb, param["name"])


def test_json_mapping_of_contract_types(spec):
    schemas = spec["components"]["schemas"]
    config = schemas["aigc.v1.GenerationConfig"]["properties"]
    assert config["seed"]["type"] == "string" and config["seed"]["format"] == "int64"
    assert config["temperature"]["type"] == "number"
    assert config["stop_sequences"]["items"] == {"type": "string"}
    response = schemas["aigc.v1.ChatResponse"]["properties"]
    assert response["create_time"]["format"] == "date-time"
    assert response["finish_reason"]["$ref"] == "#/components/schemas/aigc.v1.FinishReason"
    assert response["error"]["$ref"] == "#/components/schemas/google.rpc.Status"
    assert schemas["aigc.v1.ChatRequest"]["properties"]["vendor_params"]["type"] == "object"


# --- a fixture proto: what the contract does not use yet ----------------------

FIXTURE_PROTO = """
syntax = "proto3";

package demo.v2;

import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

// Keeps shelves.
service Library {
  // Gets a shelf.
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = {
      get: "/v2/{name=shelves/*}"
      additional_bindings {get: "/v2/shelves:byName"}
    };
  }
  // Replaces a shelf.
  rpc UpdateShelf(UpdateShelfRequest) returns (Shelf) {
    option (google.api.http) = {
      patch: "/v2/shelves/{id}"
      body: "shelf"
    };
  }
  // Watches a shelf.
  rpc WatchShelf(GetShelfRequest) returns (stream Shelf) {
    option (google.api.http) = {get: "/v2/{name}:watch"};
  }
}

// Asks for a shelf.
message GetShelfRequest {
  // The shelf's name.
  string name = 1 [(google.api.field_behavior) = REQUIRED];
  // How much to show.
  Shelf.View view = 2;
  // Fields to return.
  repeated string fields = 3;
  // Only if newer than this.
  uint64 version = 4;
  // Not a query parameter: a message.
  Shelf filter = 5;
}

// Replaces a shelf.
message UpdateShelfRequest {
  // The shelf's id.
  int64 id = 1 [(google.api.field_behavior) = REQUIRED];
  // The new shelf.
  Shelf shelf = 2 [(google.api.field_behavior) = REQUIRED];
  // Only check the request.
  bool validate_only = 3;
}

// A shelf.
message Shelf {
  // How much of a shelf to show.
  enum View {
    // Default.
    VIEW_UNSPECIFIED = 0;
    // Everything.
    VIEW_FULL = 1;
  }
  // Set by the server.
  string name = 1 [(google.api.field_behavior) = OUTPUT_ONLY];
  // Books per genre.
  map<string, int32> counts = 2;
  // Created at.
  google.protobuf.Timestamp create_time = 3;
  // Kept for.
  google.protobuf.Duration ttl = 4;
  // At most this many books.
  google.protobuf.Int64Value max_books = 5;
  // Anything.
  google.protobuf.Value extra = 6;
  // Some message.
  google.protobuf.Any payload = 7;
  // Owners.
  oneof owner {
    // A person.
    string person = 8;
    // A team.
    string team = 9;
  }
  // Public or not.
  optional bool public = 10;
  // The cover image.
  bytes cover = 11;
  // Shelves inside.
  repeated Shelf children = 12;
  // Labels.
  google.protobuf.Struct labels = 13;
  // Sizes.
  google.protobuf.ListValue sizes = 14;
}
"""


@pytest.fixture(scope="module")
def fixture_spec(googleapis, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("fixture")
    (work / "proto/demo/v2").mkdir(parents=True)
    (work / "proto/demo/v2/library.proto").write_text(textwrap.dedent(FIXTURE_PROTO))
    shutil.copytree(googleapis, work / "googleapis")
    (work / "buf.yaml").write_text("version: v2\nmodules:\n  - path: proto\n  - path: googleapis\n")
    spec = json.loads(buf_generate(work, work / "out"))
    validate(spec)
    return spec


def test_fixture_path_and_query_parameters(fixture_spec):
    assert fixture_spec["info"]["version"] == "v2"
    get = fixture_spec["paths"]["/v2/{name}"]["get"]
    assert get["operationId"] == "Library_GetShelf"
    params = {p["name"]: p for p in get["parameters"]}
    assert params["name"]["in"] == "path" and params["name"]["required"] is True
    assert "shelves/*" in params["name"]["description"]
    assert {n for n, p in params.items() if p["in"] == "query"} == {
        "view",
        "fields",
        "version",
    }
    assert params["view"]["schema"] == {"$ref": "#/components/schemas/demo.v2.Shelf.View"}
    assert params["fields"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["version"]["schema"] == {"type": "string", "format": "uint64"}
    # The additional binding has no path variable: `name` is a query parameter.
    by_name = fixture_spec["paths"]["/v2/shelves:byName"]["get"]
    assert {p["name"]: p["in"] for p in by_name["parameters"]}["name"] == "query"
    assert by_name["operationId"] != get["operationId"]

    watch = fixture_spec["paths"]["/v2/{name}:watch"]["get"]
    assert list(watch["responses"]["200"]["content"]) == ["text/event-stream"]
    # Shelf has no finish_reason/usage/error: no claims about them.
    assert "finish_reason" not in watch["responses"]["200"]["description"]


def test_fixture_body_field(fixture_spec):
    op = fixture_spec["paths"]["/v2/shelves/{id}"]["patch"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/demo.v2.Shelf"
    }
    params = {p["name"]: p for p in op["parameters"]}
    assert params["id"]["in"] == "path"
    assert params["id"]["schema"] == {"type": "string", "format": "int64"}
    assert params["validate_only"]["in"] == "query"
    assert set(params) == {"id", "validate_only"}


def test_fixture_json_mapping(fixture_spec):
    schemas = fixture_spec["components"]["schemas"]
    shelf = schemas["demo.v2.Shelf"]["properties"]
    assert shelf["name"]["readOnly"] is True
    assert shelf["counts"]["type"] == "object"
    assert shelf["counts"]["additionalProperties"] == {
        "type": "integer",
        "format": "int32",
    }
    assert shelf["create_time"]["format"] == "date-time"
    assert shelf["ttl"]["type"] == "string"
    assert shelf["max_books"]["type"] == "string" and shelf["max_books"]["format"] == "int64"
    assert "type" not in shelf["extra"]
    assert shelf["payload"]["properties"]["@type"]["type"] == "string"
    assert shelf["payload"]["additionalProperties"] is True
    assert "Only one of `person`, `team`" in shelf["person"]["description"]
    assert "Only one of" not in shelf["public"]["description"]
    assert shelf["public"] == {"type": "boolean", "description": "Public or not."}
    assert shelf["cover"]["format"] == "byte"
    assert shelf["children"]["items"] == {"$ref": "#/components/schemas/demo.v2.Shelf"}
    assert shelf["labels"]["type"] == "object"
    assert shelf["sizes"]["type"] == "array"
    view = schemas["demo.v2.Shelf.View"]
    assert view["enum"] == ["VIEW_UNSPECIFIED", "VIEW_FULL"]
    assert view["description"].startswith("How much of a shelf to show.")
    assert "demo.v2.Shelf.CountsEntry" not in schemas
    assert schemas["demo.v2.UpdateShelfRequest"]["required"] == ["id", "shelf"]
