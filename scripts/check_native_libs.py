"""Fail when an installed wheel's native code cannot load (run in the image build).

    python scripts/check_native_libs.py

Two checks, both needed: `ldd` on every shared object under site-packages
finds a system library the image lacks (llama.cpp's libgomp.so.1 in the slim
Python image, issue 14) even in modules nothing imports at build time; then
the native modules the server loads are imported for real, which also catches
a symbol or ABI mismatch ldd cannot see. Exit 1 with every problem listed.
"""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import sysconfig

# The native modules of requirements.txt: gRPC, protobuf's upb, llama.cpp,
# aiohttp's parser, orjson, uvloop, and rpds (jsonschema's referencing).
NATIVE_MODULES = (
    "grpc._cython.cygrpc",
    "google._upb._message",
    "xllamacpp",
    "aiohttp._http_parser",
    "orjson",
    "uvloop",
    "rpds",
)


def missing_libraries(root: pathlib.Path) -> list[str]:
    problems = []
    for lib in sorted(root.rglob("*.so*")):
        if not lib.is_file() or lib.suffix in (".py", ".pyc"):
            continue
        out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=False).stdout
        problems += [f"{lib}: {line.strip()}" for line in out.splitlines() if "not found" in line]
    return problems


def failed_imports() -> list[str]:
    problems = []
    for name in NATIVE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"import {name}: {exc}")
    return problems


def main() -> int:
    site = pathlib.Path(sysconfig.get_paths()["platlib"])
    problems = missing_libraries(site) + failed_imports()
    for problem in problems:
        print(f"check_native_libs: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"check_native_libs: every shared object under {site} resolves; imported {', '.join(NATIVE_MODULES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
