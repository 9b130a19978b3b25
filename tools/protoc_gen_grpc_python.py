"""protoc plugin: gRPC Python stubs (`*_pb2_grpc.py`) for buf.

grpc_python is not a protoc builtin and buf only runs builtins through
`protoc_path`, so this plugin receives buf's CodeGeneratorRequest, writes the
files it carries as a descriptor set, runs the protoc bundled in grpcio-tools
on it with `--grpc_python_out`, and returns what that wrote. Using the
grpcio-tools generator keeps the stubs in step with the pinned grpcio.
"""

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptor_path = pathlib.Path(tmp, "request.binpb")
        out = pathlib.Path(tmp, "out")
        out.mkdir()
        descriptor_path.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
        )
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptor_path}",
            f"--grpc_python_out={out}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc failed: " + " ".join(args[1:])
        else:
            for path in sorted(out.rglob("*.py")):
                response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
