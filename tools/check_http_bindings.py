"""Fail when a release's HTTP bindings (google.api.http) changed: the REST half of `make check-breaking`.

`buf breaking` guards the protobuf contract (messages, fields, RPCs, their
JSON names), but not the HTTP rules on the RPCs: a `post:` path changed from
"/v1/chat:generate" to anything else passes it, and every REST client of that
release breaks. This compares the rules of two buf images (or descriptor sets),
the release frozen in proto/releases/ and the current build: every binding the
release had - verb, path template, body and response_body, additional bindings
too - must still be there, unchanged. New bindings and new RPCs may be added.

    python tools/check_http_bindings.py build/current.binpb --against proto/releases/v1.0.0.binpb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2


class Binding(NamedTuple):
    verb: str  # GET, POST, ... or the custom verb's kind
    path: str
    body: str
    response_body: str

    def __str__(self) -> str:
        extra = "".join(
            f" {name}={value!r}"
            for name, value in self._asdict().items()
            if name in ("body", "response_body") and value
        )
        return f"{self.verb} {self.path}{extra}"


def bindings(image: Path) -> dict[str, set[Binding]]:
    """RPC full name -> its HTTP bindings, for every RPC of every file in the image that has any."""
    # A buf image is wire-compatible with a FileDescriptorSet; importing
    # annotations_pb2 registers the google.api.http option so it is parsed.
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    found: dict[str, set[Binding]] = {}
    for file in files:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                name = f"{file.package}.{service.name}.{method.name}"
                found[name] = {_binding(rule), *(_binding(extra) for extra in rule.additional_bindings)}
    return found


def _binding(rule: http_pb2.HttpRule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = (kind or "").upper(), getattr(rule, kind) if kind else ""
    return Binding(verb, path, rule.body, rule.response_body)


def breaking_changes(current: dict[str, set[Binding]], release: dict[str, set[Binding]]) -> list[str]:
    problems = []
    for rpc, released in sorted(release.items()):
        now = current.get(rpc, set())
        for binding in sorted(released - now):
            now_text = ", ".join(str(b) for b in sorted(now)) or "no HTTP binding"
            problems.append(f"{rpc}: the release's HTTP binding {binding} is gone (now: {now_text})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("current", type=Path, help="the current build's buf image")
    parser.add_argument("--against", type=Path, required=True, help="the release's buf image")
    args = parser.parse_args(argv)
    release = bindings(args.against)
    if not release:
        print(f"HTTP bindings: none in {args.against}; is it the right image?", file=sys.stderr)
        return 2
    problems = breaking_changes(bindings(args.current), release)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    count = sum(len(b) for b in release.values())
    print(f"HTTP bindings: all {count} of {args.against.name} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
