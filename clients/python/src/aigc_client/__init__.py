"""aigc_client - a Python client of aigc-service over gRPC.

    from aigc_client import Client, text_of

    with Client("localhost:9000") as client:
        for delta in client.stream_chat("Tell me about the sea.", max_output_tokens=64):
            print(text_of(delta), end="", flush=True)

The generated stubs ship in the same distribution as the `aigc.v1` package
(`from aigc.v1 import aigc_service_pb2`), built by buf from proto/aigc/v1.
"""

from aigc_client._client import DEFAULT_ADDRESS, Client, Stream, chat_request, system, user
from aigc_client._errors import DOMAIN, AigcError, error_info, find_detail
from aigc_client._fold import ChatFolder, fold_chat, text_of

__all__ = [
    "DEFAULT_ADDRESS",
    "DOMAIN",
    "AigcError",
    "ChatFolder",
    "Client",
    "Stream",
    "chat_request",
    "error_info",
    "find_detail",
    "fold_chat",
    "system",
    "text_of",
    "user",
]
