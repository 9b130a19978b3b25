"""Render gateway/envoy.yaml (a string.Template) into the config Envoy loads.

gateway/envoy.yaml is the single source of the gateway's config; this script
only fills in the values that differ between `make run`, docker-compose and
the tests (ports, the upstream addresses - gRPC and the OpenAI-compatible
door - file paths, the connection cap), and the request size limit, which
lives here as MAX_REQUEST_BYTES so the tests can hold the server to the same
number. Stdlib only.

    python gateway/render.py                          # defaults, -> build/envoy.yaml
    python gateway/render.py --grpc-upstream server:9000 --listen-port 8000 -o -

Every path defaults to its place in the repository; all are made absolute,
so Envoy does not depend on its working directory. Missing input files are an
error here (clearer than Envoy's), unless --no-check-files is given, for
rendering a config whose paths exist only elsewhere (e.g. inside a container).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "gateway" / "envoy.yaml"

#: The largest request body the gateway accepts (HTTP 413 above it). The
#: server's own limit (server/core/limits.py MAX_REQUEST_BYTES) must be the same
#: number: a body Envoy lets through is a message the server reads, and a gRPC
#: caller, whose messages Envoy passes on unread, meets the same limit there
#: (INVALID_ARGUMENT REQUEST_TOO_LARGE). tests/gateway/test_edge_limits.py holds
#: the two equal.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: The largest unary answer the server delivers (server/core/limits.py MAX_ANSWER_BYTES,
#: held equal by a test); the transcoder buffers a unary answer whole, so its limit is
#: that plus room for the response's other fields.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
MAX_RESPONSE_BODY_BYTES = MAX_ANSWER_BYTES + 1024 * 1024
#: Request headers: KiB in all and how many (server/core/limits.py has the same
#: numbers for the OpenAI door's own listener; a test holds them equal).
MAX_REQUEST_HEADER_KB = 60
MAX_REQUEST_HEADERS = 100
#: Default cap on open downstream connections (Envoy's overload manager); each
#: is a file descriptor, so `ulimit -n` must stay above it.
MAX_CONNECTIONS = 10_000

#: The Swagger UI assets served under /docs/, by placeholder.
SWAGGER_UI_FILES = {
    "SWAGGER_UI_CSS": "swagger-ui.css",
    "SWAGGER_UI_BUNDLE_JS": "swagger-ui-bundle.js",
    "SWAGGER_UI_PRESET_JS": "swagger-ui-standalone-preset.js",
}


#: The playground served under /playground (gateway/playground/), by placeholder.
PLAYGROUND = REPO / "gateway" / "playground"
PLAYGROUND_FILES = {
    "PLAYGROUND_HTML": "index.html",
    "PLAYGROUND_JS": "playground.js",
    "PLAYGROUND_CSS": "playground.css",
}


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), _port(port)


def _host_ports(value: str) -> list[tuple[str, int]]:
    return [_host_port(part.strip()) for part in value.split(",") if part.strip()]


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {number}")
    return number


def _path(value: str) -> Path:
    # Given paths are relative to the working directory, as with any CLI;
    # the defaults are anchored to the repository root.
    return Path(value).resolve()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--grpc-upstream",
        type=_host_ports,
        default="127.0.0.1:9000",
        help="the gRPC server, HOST:PORT[,HOST:PORT...]: one per server worker or replica, "
        "balanced per request (default 127.0.0.1:9000)",
    )
    p.add_argument(
        "--openai-upstream",
        type=_host_ports,
        default="",
        help="the server's OpenAI-compatible door, HOST:PORT[,HOST:PORT...] (one per replica), "
        "served under /openai/v1/ (default: none, and /openai/v1/ answers 503)",
    )
    p.add_argument(
        "--listen-address",
        default="0.0.0.0",
        help="HTTP listener address (default 0.0.0.0; use 127.0.0.1 to stay local)",
    )
    p.add_argument("--listen-port", type=_port, default=8000, help="HTTP/gRPC port (default 8000)")
    p.add_argument(
        "--admin-port", type=_port, default=9901, help="admin port, always on 127.0.0.1 (default 9901)"
    )
    p.add_argument(
        "--max-connections",
        type=_positive,
        default=MAX_CONNECTIONS,
        help="downstream connections Envoy keeps open at once; more are closed on accept "
        f"(default {MAX_CONNECTIONS}; the admin port is not counted)",
    )
    p.add_argument(
        "--descriptor",
        type=_path,
        default=REPO / "gen/descriptor/aigc.binpb",
        help="descriptor set for the transcoder (default gen/descriptor/aigc.binpb)",
    )
    p.add_argument(
        "--openapi",
        type=_path,
        default=REPO / "gen/openapi/openapi.json",
        help="spec served at /openapi.json (default gen/openapi/openapi.json)",
    )
    p.add_argument(
        "--swagger-ui",
        type=_path,
        default=REPO / "node_modules/swagger-ui-dist",
        help="swagger-ui-dist folder (default node_modules/swagger-ui-dist)",
    )
    p.add_argument(
        "--docs-html",
        type=_path,
        default=REPO / "gateway/docs.html",
        help="page served at /docs (default gateway/docs.html)",
    )
    p.add_argument("--no-check-files", action="store_true", help="do not require the input files to exist")
    p.add_argument(
        "-o",
        "--output",
        default=str(REPO / "build" / "envoy.yaml"),
        help="where to write the config; '-' for stdout (default build/envoy.yaml)",
    )
    return p.parse_args(argv)


def _endpoints(upstreams: list[tuple[str, int]]) -> list[dict]:
    return [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in upstreams
    ]


def render(args: argparse.Namespace) -> str:
    """Return the config text for the parsed arguments."""
    files = {
        "DESCRIPTOR": args.descriptor,
        "OPENAPI": args.openapi,
        "DOCS_HTML": args.docs_html,
        # Swagger UI's start-up script, beside the page (the CSP allows no inline script).
        "DOCS_JS": args.docs_html.with_name("docs.js"),
        **{name: args.swagger_ui / fname for name, fname in SWAGGER_UI_FILES.items()},
        **{name: PLAYGROUND / fname for name, fname in PLAYGROUND_FILES.items()},
    }
    missing = [f"{name}: {path}" for name, path in files.items() if not path.is_file()]
    if missing and not args.no_check_files:
        hint = "run `make gen` (descriptor, OpenAPI) and `make deps` (swagger-ui-dist)"
        raise SystemExit("render.py: missing input files (" + hint + "):\n  " + "\n  ".join(missing))
    # json.dumps gives a double-quoted string that YAML reads back verbatim.
    values = {name: json.dumps(str(path)) for name, path in files.items()}
    values |= {
        # A JSON list is a YAML flow sequence.
        "GRPC_ENDPOINTS": json.dumps(_endpoints(args.grpc_upstream)),
        "OPENAI_ENDPOINTS": json.dumps(_endpoints(args.openai_upstream)),
        "LISTEN_ADDRESS": json.dumps(args.listen_address),
        "LISTEN_PORT": str(args.listen_port),
        "ADMIN_PORT": str(args.admin_port),
        "MAX_CONNECTIONS": str(args.max_connections),
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "MAX_REQUEST_BYTES_PLUS_ONE": str(MAX_REQUEST_BYTES + 1),
        "MAX_RESPONSE_BODY_BYTES": str(MAX_RESPONSE_BODY_BYTES),
        "MAX_REQUEST_HEADER_KB": str(MAX_REQUEST_HEADER_KB),
        "MAX_REQUEST_HEADERS": str(MAX_REQUEST_HEADERS),
    }
    # substitute (not safe_substitute): a placeholder left unfilled is a bug.
    return string.Template(TEMPLATE.read_text()).substitute(values)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    text = render(args)
    if args.output == "-":
        sys.stdout.write(text)
        return
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
