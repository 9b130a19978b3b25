"""protoc plugin: the OpenAPI 3.1 spec of the HTTP API that Envoy serves.

Envoy's grpc_json_transcoder turns the `google.api.http` annotations of our
protos into REST routes. No PyPI or npm plugin reads those annotations (the
only generator that does is an old Swagger 2.0 one that knows nothing of
Server-Sent Events), so this one does, and describes exactly what our Envoy
configuration serves:

- `print_options.preserve_proto_field_names: true`: JSON uses the proto
  (snake_case) field names, so the schemas do too.
- `always_print_primitive_fields: false`: fields holding their default value
  are left out of responses, so no response field is `required`.
- `stream_sse_style_delimited: true`: a server-streaming method answers with
  `text/event-stream`, one `data: {json}` event per message.
- `convert_grpc_status: true`: errors are `google.rpc.Status` JSON bodies.

buf runs it with `strategy: all`, so one CodeGeneratorRequest carries every
file, and it writes one `openapi.json`. Output is deterministic: everything
is emitted in proto declaration order or sorted by name.
"""

import json
import re
import sys

# Imported for their side effect too: registering the google.api.http and
# google.api.field_behavior extensions before the request is parsed makes
# them readable from the method and field options.
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

FDP = descriptor_pb2.FieldDescriptorProto

# Proto3 JSON mapping of scalars. 64-bit integers are strings because JSON
# numbers lose precision past 2**53 (Envoy also accepts numbers on input).
SCALARS = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}

# Well-known types have their own JSON forms, so they are inlined rather
# than described as the messages they are on the wire.
WELL_KNOWN = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "A duration in seconds with up to 9 fractional digits, "
        "suffixed with `s`, e.g. `1.5s`.",
    },
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.NullValue": {"type": "null"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {
            "@type": {
                "type": "string",
                "description": "The type of the embedded message, e.g. "
                "`type.googleapis.com/google.rpc.ErrorInfo`; the other "
                "properties are that message's fields.",
            }
        },
        "required": ["@type"],
        "additionalProperties": True,
    },
    ".google.protobuf.DoubleValue": SCALARS[FDP.TYPE_DOUBLE],
    ".google.protobuf.FloatValue": SCALARS[FDP.TYPE_FLOAT],
    ".google.protobuf.Int64Value": SCALARS[FDP.TYPE_INT64],
    ".google.protobuf.UInt64Value": SCALARS[FDP.TYPE_UINT64],
    ".google.protobuf.Int32Value": SCALARS[FDP.TYPE_INT32],
    ".google.protobuf.UInt32Value": SCALARS[FDP.TYPE_UINT32],
    ".google.protobuf.BoolValue": SCALARS[FDP.TYPE_BOOL],
    ".google.protobuf.StringValue": SCALARS[FDP.TYPE_STRING],
    ".google.protobuf.BytesValue": SCALARS[FDP.TYPE_BYTES],
}

STATUS = ".google.rpc.Status"
# Error details travel inside `Status.details` as `Any`, so nothing in the
# contract references them; listing them makes their schemas visible.
ERROR_DETAILS = [
    ".google.rpc.ErrorInfo",
    ".google.rpc.BadRequest",
    ".google.rpc.RetryInfo",
]

# HTTP statuses our errors come with (google/rpc/code.proto's mapping, as
# Envoy applies it), and when each happens.
ERROR_RESPONSES = [
    (
        "400",
        "InvalidArgument",
        "INVALID_ARGUMENT: the request is invalid; a `google.rpc.BadRequest` detail names the fields. "
        "Also FAILED_PRECONDITION: the model's provider is not configured (its API key is unset).",
    ),
    (
        "401",
        "Unauthenticated",
        "UNAUTHENTICATED: this deployment requires an API key (`authorization: Bearer <key>`) and the "
        "request had none (API_KEY_MISSING) or an unknown one (API_KEY_INVALID).",
    ),
    ("403", "PermissionDenied", "PERMISSION_DENIED: the key may not use this model (MODEL_NOT_ALLOWED)."),
    ("404", "NotFound", "NOT_FOUND: something the request names (e.g. the model) does not exist."),
    (
        "413",
        "RequestTooLarge",
        "INVALID_ARGUMENT (REQUEST_TOO_LARGE): the body is over 16 MiB; retrying cannot help.",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "UNSUPPORTED_MEDIA_TYPE: a POST body must be `application/json`.",
    ),
    (
        "431",
        "HeadersTooLarge",
        "The request headers are over 60 KiB or 100 headers.",
    ),
    (
        "429",
        "ResourceExhausted",
        "RESOURCE_EXHAUSTED: a rate limit or quota was hit (RATE_LIMITED: the key's quota; "
        "UPSTREAM_RATE_LIMITED: the vendor's; OVERLOADED: this server's); "
        "a `google.rpc.RetryInfo` detail says when to retry.",
    ),
    ("499", "Cancelled", "CANCELLED: the client cancelled the request."),
    (
        "500",
        "Internal",
        "INTERNAL: a bug, a provider answer we cannot parse, or the provider rejected our own API key.",
    ),
    (
        "503",
        "Unavailable",
        "UNAVAILABLE: the provider (or the service) cannot be reached right now; retrying later may succeed.",
    ),
    ("504", "DeadlineExceeded", "DEADLINE_EXCEEDED: the request took longer than its deadline."),
]

JSON_NOTES = """\
## JSON mapping
This HTTP API is the gRPC API transcoded by Envoy, following the proto3 JSON mapping:
- Fields are named as in the protos (snake_case) in requests and responses; requests also \
accept the lowerCamelCase JSON names. Unknown request fields are ignored.
- Fields holding their default value (0, `""`, `false`, an `*_UNSPECIFIED` enum, an empty list) \
are left out of responses.
- 64-bit integers are JSON strings (requests may also send numbers); enums are value names \
(requests may also send numbers); timestamps are RFC 3339 strings.

## Errors
Errors are `google.rpc.Status` JSON bodies whose `details` carry a `google.rpc.ErrorInfo` \
(and `google.rpc.BadRequest` or `google.rpc.RetryInfo` where they apply). The HTTP status \
follows the gRPC code (`google/rpc/code.proto`). Errors Envoy itself raises before the \
request reaches the service (malformed JSON, a value of the wrong type, a body too large or \
not JSON) are `google.rpc.Status` JSON bodies too, with their own ErrorInfo reasons.

## Authentication
When the deployment has caller keys configured, every call needs `authorization: Bearer <key>` \
(401 without a valid one, 403 for a model the key may not use); quotas per key answer 429 with \
`RetryInfo`. A caller's timeout may be sent as `grpc-timeout` or `x-aigc-timeout` (seconds)."""


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        spec = Generator(request).spec()
    except ValueError as e:
        response.error = str(e)
    else:
        response.file.add(
            name="openapi.json",
            content=json.dumps(spec, indent=2, ensure_ascii=False) + "\n",
        )
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


def clean_comment(text: str) -> str:
    # protoc keeps the space after `//`; googleapis hides internal notes in
    # `(-- ... --)`, which are not for API users.
    text = re.sub(r"\(--.*?--\)", "", text, flags=re.S)
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(line.rstrip() for line in lines).strip()


class Generator:
    def __init__(self, request: plugin_pb2.CodeGeneratorRequest):
        self.request = request
        self.files = list(request.proto_file)
        self._add_error_details_fallback()
        # Full name (leading dot, as in type_name) -> descriptor, and
        # (file name, source path) -> comment.
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.paths: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for f in self.files:
            for loc in f.source_code_info.location:
                if loc.leading_comments:
                    self.comments[(f.name, tuple(loc.path))] = clean_comment(loc.leading_comments)
            prefix = f".{f.package}" if f.package else ""
            for i, m in enumerate(f.message_type):
                self._index_message(f.name, prefix, m, (4, i))
            for i, e in enumerate(f.enum_type):
                self._index_enum(f.name, prefix, e, (5, i))
        self.schemas: dict[str, dict] = {}

    def _add_error_details_fallback(self) -> None:
        # buf passes only the files our protos import, and nothing imports
        # google/rpc/error_details.proto (its types travel in Any). Take the
        # descriptor compiled into googleapis-common-protos instead: same
        # types, but without comments.
        names = {f.name for f in self.files}
        if "google/rpc/error_details.proto" in names:
            return
        try:
            from google.rpc import error_details_pb2
        except ImportError:
            return
        fdp = descriptor_pb2.FileDescriptorProto()
        error_details_pb2.DESCRIPTOR.CopyToProto(fdp)
        self.files.append(fdp)

    def _index_message(self, file, prefix, m, path):
        name = f"{prefix}.{m.name}"
        self.messages[name] = m
        self.paths[name] = (file, path)
        for i, nested in enumerate(m.nested_type):
            self._index_message(file, name, nested, (*path, 3, i))
        for i, e in enumerate(m.enum_type):
            self._index_enum(file, name, e, (*path, 4, i))

    def _index_enum(self, file, prefix, e, path):
        name = f"{prefix}.{e.name}"
        self.enums[name] = e
        self.paths[name] = (file, path)

    def comment(self, name: str, *sub: int) -> str:
        file, path = self.paths[name]
        return self.comments.get((file, (*path, *sub)), "")

    # --- schemas -------------------------------------------------------------

    def ref(self, type_name: str) -> dict:
        """A schema for a message or enum type, adding it to components."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name not in self.schemas:
            self.schemas[type_name] = {}  # placeholder: types may be recursive
            if type_name in self.enums:
                self.schemas[type_name] = self.enum_schema(type_name)
            else:
                self.schemas[type_name] = self.message_schema(type_name)
        return {"$ref": f"#/components/schemas/{type_name[1:]}"}

    def enum_schema(self, name: str) -> dict:
        e = self.enums[name]
        values = []
        for i, v in enumerate(e.value):
            doc = self.comment(name, 2, i).replace("\n", " ")
            values.append(f"- `{v.name}`: {doc}" if doc else f"- `{v.name}`")
        return {
            "type": "string",
            "enum": [v.name for v in e.value],
            "description": (self.comment(name) + "\n\n" + "\n".join(values)).strip(),
        }

    def message_schema(self, name: str) -> dict:
        m = self.messages[name]
        schema = {"type": "object"}
        file = self.paths[name][0]
        if doc := self.comment(name):
            schema["description"] = doc
        elif not any(f.source_code_info.location for f in self.files if f.name == file):
            # Without source info (the error-details fallback) at least say
            # where the documentation is.
            schema["description"] = f"`{name[1:]}`, documented in `{file}`."
        properties, required = {}, []
        for i, field in enumerate(m.field):
            prop = self.field_schema(field)
            if doc := self.comment(name, 2, i):
                prop["description"] = doc
            behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                prop["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.name)
            # A real oneof (not proto3 `optional`'s synthetic one) allows one
            # member at a time; JSON Schema cannot say that of optional
            # properties without noise, so the description does.
            if field.HasField("oneof_index") and not field.proto3_optional:
                others = [
                    f.name
                    for f in m.field
                    if f.HasField("oneof_index") and f.oneof_index == field.oneof_index
                ]
                note = f"Only one of {', '.join(f'`{o}`' for o in others)} may be set."
                prop["description"] = f"{prop.get('description', '')}\n\n{note}".strip()
            properties[field.name] = prop
        if properties:
            schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def field_schema(self, field: FDP) -> dict:
        if field.type == FDP.TYPE_MESSAGE:
            entry = self.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                # Map keys are always JSON strings; the value is field 2.
                return {
                    "type": "object",
                    "additionalProperties": self.field_schema(entry.field[1]),
                }
            single = self.ref(field.type_name)
        elif field.type == FDP.TYPE_ENUM:
            single = self.ref(field.type_name)
        else:
            single = dict(SCALARS[field.type])
        if field.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    # --- operations ----------------------------------------------------------

    def spec(self) -> dict:
        generate = set(self.request.file_to_generate)
        services = [
            (f, i, s) for f in self.request.proto_file if f.name in generate for i, s in enumerate(f.service)
        ]
        if not services:
            raise ValueError("protoc_gen_openapi: no service in the files to generate")
        versions = {f.package.rsplit(".", 1)[-1] for f, _, _ in services}
        if len(versions) != 1:
            raise ValueError(f"protoc_gen_openapi: services span versions {sorted(versions)}")
        # The package's own service (aigc.v1 -> AigcService) leads the spec's
        # description and tags; the others (AdminService) follow in file order.
        services.sort(key=lambda fs: fs[2].name != f"{fs[0].package.split('.')[0].capitalize()}Service")

        paths: dict[str, dict] = {}
        tags, service_docs = [], []
        for f, si, service in services:
            doc = self.comments.get((f.name, (6, si)), "")
            tag = {"name": service.name}
            if doc:
                tag["description"] = doc.split("\n\n")[0]
            tags.append(tag)
            if doc:
                service_docs.append(doc)
            for mi, method in enumerate(service.method):
                rule = method.options.Extensions[annotations_pb2.http]
                method_doc = self.comments.get((f.name, (6, si, 2, mi)), "")
                for n, binding in enumerate([rule, *rule.additional_bindings]):
                    verb, template = self.route(binding)
                    if verb is None:
                        continue
                    path, operation = self.operation(service, method, method_doc, binding, template)
                    if verb in paths.setdefault(path, {}):
                        raise ValueError(f"protoc_gen_openapi: two methods bind {verb.upper()} {path}")
                    if n:  # operationIds must be unique
                        operation["operationId"] += f"_{n + 1}"
                    paths[path][verb] = operation

        # The contract's own types, used or not, then the error types.
        for f in self.request.proto_file:
            if f.name in generate:
                prefix = f".{f.package}"
                for t in [*f.message_type, *f.enum_type]:
                    self.ref(f"{prefix}.{t.name}")
        for name in [STATUS, *ERROR_DETAILS]:
            if name in self.messages:
                self.ref(name)

        return {
            "openapi": "3.1.0",
            "info": {
                "title": "aigc-service",
                "version": versions.pop(),
                "description": "\n\n".join([*service_docs, JSON_NOTES]),
            },
            "servers": [{"url": "/"}],
            "tags": tags,
            "paths": {p: paths[p] for p in sorted(paths)},
            "components": {
                "schemas": {k[1:]: self.schemas[k] for k in sorted(self.schemas)},
                "responses": self.error_responses(),
                "securitySchemes": {
                    "callerKey": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A caller key (`aigc-...`), when the deployment has keys on; "
                        "otherwise no authentication.",
                    }
                },
            },
            # Optional: `{}` means a call without a key is valid too (keys off).
            "security": [{"callerKey": []}, {}],
        }

    @staticmethod
    def route(binding):
        kind = binding.WhichOneof("pattern")
        if kind is None:
            return None, None
        if kind == "custom":
            return binding.custom.kind.lower(), binding.custom.path
        return kind, getattr(binding, kind)

    def operation(self, service, method, doc, binding, template):
        # `{name=shelves/*}` matches a pattern, but OpenAPI paths only know
        # `{name}`; the pattern goes into the parameter's description.
        variables = re.findall(r"\{([^}=]+)(?:=([^}]*))?\}", template)
        path = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", r"{\1}", template)
        request = self.messages[method.input_type]
        op = {
            "operationId": f"{service.name}_{method.name}",
            "tags": [service.name],
        }
        if doc:
            op["summary"] = doc.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")
            op["description"] = doc

        parameters = []
        for var, pattern in variables:
            schema, desc = self.field_path_schema(method.input_type, var)
            if pattern:
                desc = f"{desc}\n\nMatches `{pattern}`.".strip()
            param = {"name": var, "in": "path", "required": True, "schema": schema}
            if desc:
                param["description"] = desc
            parameters.append(param)

        bound = {v.split(".")[0] for v, _ in variables}
        if binding.body == "*":
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.ref(method.input_type)}},
            }
        elif binding.body:
            bound.add(binding.body)
            schema, desc = self.field_path_schema(method.input_type, binding.body)
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
            if desc:
                op["requestBody"]["description"] = desc
        if binding.body != "*":
            # Every field the path and body leave free is read from the query
            # string. Envoy also takes nested fields (`a.b=1`), but only the
            # top-level scalars are meant to be set that way here.
            for i, field in enumerate(request.field):
                if field.name in bound or field.type == FDP.TYPE_MESSAGE:
                    continue
                param = {
                    "name": field.name,
                    "in": "query",
                    "schema": self.field_schema(field),
                }
                if desc := self.comment(method.input_type, 2, i):
                    param["description"] = desc
                behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
                if field_behavior_pb2.REQUIRED in behaviors:
                    param["required"] = True
                parameters.append(param)
        if parameters:
            op["parameters"] = parameters

        if binding.response_body:
            payload, _ = self.field_path_schema(method.output_type, binding.response_body)
        else:
            payload = self.ref(method.output_type)
        if method.server_streaming:
            success = {
                "description": self.stream_description(method.output_type),
                "content": {"text/event-stream": {"schema": payload}},
            }
        else:
            success = {
                "description": "OK",
                "content": {"application/json": {"schema": payload}},
            }
        op["responses"] = {"200": success}
        for code, name, _ in ERROR_RESPONSES:
            op["responses"][code] = {"$ref": f"#/components/responses/{name}"}
        op["responses"]["default"] = {"$ref": "#/components/responses/Error"}
        return path, op

    def field_path_schema(self, type_name: str, field_path: str) -> tuple[dict, str]:
        """The schema and comment of a (dotted) field of a message."""
        for part in field_path.split("."):
            fields = [f.name for f in self.messages[type_name].field]
            if part not in fields:
                raise ValueError(f"protoc_gen_openapi: {type_name[1:]} has no field {part!r}")
            i = fields.index(part)
            field = self.messages[type_name].field[i]
            doc = self.comment(type_name, 2, i)
            type_name = field.type_name
        return self.field_schema(field), doc

    def stream_description(self, type_name: str) -> str:
        name = type_name[1:]
        fields = {f.name for f in self.messages[type_name].field}
        text = (
            f"A stream of `{name}` messages as Server-Sent Events: each message is one "
            "event `data: {json}` followed by a blank line, with no `event:` or `id:` "
            "lines and no `[DONE]` sentinel; the stream ends when the response ends. "
            "The schema below is that of one event's JSON payload."
        )
        # Our responses close a stream in-band because HTTP clients cannot
        # read trailers; say so only where the message has those fields.
        if {"finish_reason", "usage"} <= fields:
            text += (
                "\n\nThe last event carries `finish_reason` (other than "
                "FINISH_REASON_UNSPECIFIED) and `usage`."
            )
        if "error" in fields:
            text += (
                "\n\nAn error before the first event gets the HTTP error status and a "
                "`google.rpc.Status` body, like a unary call. Once the stream has "
                "started the status stays 200: a failure arrives as a last event "
                "whose `error` holds the `google.rpc.Status`."
            )
        return text

    def error_responses(self) -> dict:
        status = {"application/json": {"schema": self.ref(STATUS)}} if STATUS in self.messages else {}
        responses = {}
        for _status, name, doc in ERROR_RESPONSES:
            responses[name] = {"description": doc, "content": dict(status)}
        # Envoy answers a body it cannot parse itself, before the service sees it.
        responses["InvalidArgument"]["description"] += (
            " A body that is not valid JSON, or a value of the wrong type, is "
            "refused by Envoy (reason MALFORMED_REQUEST_BODY)."
        )
        responses["Error"] = {
            "description": "Any other error, as a `google.rpc.Status`.",
            "content": dict(status),
        }
        return responses


if __name__ == "__main__":
    sys.exit(main())
