"""What a user of the installed package does, run by the fresh venv's python.

    python package_usage.py HOST:PORT   ->   one JSON report on stdout

It imports only the installed distribution (aigc_client and the generated
aigc.v1 stubs), never the repository: test_python_package.py checks the
report. The README example (clients/README.md) is the same code, shorter.
"""

from __future__ import annotations

import json
import sys
import time

import grpc
from aigc_client import AigcError, ChatFolder, Client, error_info, text_of
from google.rpc import error_details_pb2

import aigc.v1.aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2


def main(address: str) -> dict:
    report: dict = {"stubs_file": pb.__file__}
    with Client(address, timeout=60) as client:
        report["models"] = [model.id for model in client.list_models()]

        # Streaming chat: deltas as they come, folded into the whole answer.
        folder = ChatFolder()
        deltas = []
        for response in client.stream_chat("Tell me about the sea.", max_output_tokens=24, temperature=0):
            deltas.append(text_of(folder.add(response)))
        answer = folder.response()
        report["stream"] = {
            "deltas": deltas,
            "text": folder.text,
            "finish_reason": generation_pb2.FinishReason.Name(answer.finish_reason),
            "completion_tokens": answer.usage.completion_tokens,
        }
        unary = client.chat("Tell me about the sea.", max_output_tokens=24, temperature=0)
        report["unary_text"] = text_of(unary)

        # A deadline: the call ends with DEADLINE_EXCEEDED, not after the whole answer.
        started = time.monotonic()
        try:
            client.chat(
                "Count from 1 to 1000, one number per line.",
                max_output_tokens=1000,
                temperature=0,  # greedy: the count goes on, never a short answer in time
                timeout=0.5,
            )
            report["deadline"] = "no error"
        except AigcError as error:
            report["deadline"] = {
                "code": error.code.name,
                "reason": error.reason,
                "seconds": time.monotonic() - started,
            }

        # Embeddings from the built-in embedding model: one vector per text, in order.
        embedded = client.embed(["The sea is calm.", "The ocean is quiet.", "Taxes are due in April."])
        vectors = [list(e.values) for e in embedded.embeddings]
        report["embed"] = {
            "model": embedded.model,
            "dimensions": [len(v) for v in vectors],
            "similarities": [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]],
            "prompt_tokens": embedded.usage.prompt_tokens,
        }

        # ErrorInfo, through the convenience client ...
        try:
            client.chat("hi", model="no-such-model")
        except AigcError as error:
            report["error"] = {
                "code": error.code.name,
                "reason": error.reason,
                "domain": error.domain,
                "request_id": error.request_id,
                "text": str(error),
            }

    # ... and from a plain grpc.RpcError of the generated stub.
    with grpc.insecure_channel(address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        image = content_pb2.Part()
        image.image.mime_type = "image/png"
        image.image.uri = "https://example.com/cat.png"
        request = pb.ChatRequest(messages=[content_pb2.Message(role=content_pb2.ROLE_USER, parts=[image])])
        try:
            stub.Chat(request, timeout=30)
        except grpc.RpcError as error:
            info = error_info(error)
            assert isinstance(info, error_details_pb2.ErrorInfo)
            report["raw_error"] = {"code": error.code().name, "reason": info.reason, **dict(info.metadata)}
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
