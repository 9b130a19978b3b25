"""Client: the generated AigcService stub on a channel, with the service's
errors raised as AigcError and streams that cancel when they are left."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from aigc.v1 import (
    aigc_service_pb2,
    aigc_service_pb2_grpc,
    content_pb2,
    embedding_pb2,
    generation_pb2,
    model_pb2,
)
from aigc_client._errors import AigcError
from aigc_client._fold import ChatFolder

DEFAULT_ADDRESS = "localhost:9000"

Metadata = Sequence[tuple[str, str]]
_T = TypeVar("_T")


def user(text: str) -> content_pb2.Message:
    """A user message of one text part."""
    return content_pb2.Message(role=content_pb2.ROLE_USER, content=text)


def system(text: str) -> content_pb2.Message:
    """A system message (instructions)."""
    return content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=text)


def chat_request(
    messages: str | Iterable[content_pb2.Message | dict[str, Any]],
    *,
    model: str = "",
    system_prompt: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    **fields: Any,
) -> aigc_service_pb2.ChatRequest:
    """A ChatRequest from messages (or one user prompt) and the common options.

    `fields` are any other ChatRequest fields, as messages or as JSON-shaped
    dicts (`response_format={"type": "TYPE_JSON_SCHEMA", "schema": {...}}`).
    """
    turns = [user(messages)] if isinstance(messages, str) else [_message(m) for m in messages]
    if system_prompt:
        turns.insert(0, system(system_prompt))
    request = aigc_service_pb2.ChatRequest(model=model, messages=turns)
    if max_output_tokens is not None:
        request.generation_config.max_output_tokens = max_output_tokens
    if temperature is not None:
        request.generation_config.temperature = temperature
    for name, value in fields.items():
        _set_field(request, name, value)
    return request


def _set_field(request: aigc_service_pb2.ChatRequest, name: str, value: Any) -> None:
    """Sets a message, a list of messages, JSON-shaped data or a scalar on `request`."""
    if name not in aigc_service_pb2.ChatRequest.DESCRIPTOR.fields_by_name:
        raise TypeError(f"ChatRequest has no field {name!r}")
    if isinstance(value, ProtoMessage):
        getattr(request, name).CopyFrom(value)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, ProtoMessage) for v in value):
        getattr(request, name).extend(value)
    elif isinstance(value, dict | list | tuple):
        json_format.ParseDict({name: value}, request)
    else:
        setattr(request, name, value)


def _message(message: content_pb2.Message | dict[str, Any]) -> content_pb2.Message:
    if isinstance(message, content_pb2.Message):
        return message
    return json_format.ParseDict(message, content_pb2.Message())


class Stream(Generic[_T]):
    """The messages of a server stream, as they arrive.

    Iterate it once. Leaving the loop early (break, an exception, Ctrl-C) or
    leaving a `with` block cancels the call, so the server stops generating.
    A failure raises AigcError from the loop.
    """

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[_T]:
        try:
            yield from self._call
        except grpc.RpcError as error:
            raise AigcError.from_rpc_error(error) from None
        finally:
            self._call.cancel()  # a no-op once the call has ended

    def cancel(self) -> None:
        """Cancels the call: the server sees CANCELLED and stops generating."""
        self._call.cancel()

    def __enter__(self) -> Stream[_T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class Client:
    """A client of aigc-service on one gRPC channel.

    `timeout` is the deadline in seconds of every call that sets none;
    `metadata` is sent with every call (e.g. `[("x-request-id", "...")]`);
    `api_key` (default: the AIGC_API_KEY environment variable) is sent as
    `authorization: Bearer <key>` when the deployment has keys on.
    Every failure is raised as AigcError.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
        api_key: str | None = None,
    ) -> None:
        self.address = address
        key = os.environ.get("AIGC_API_KEY", "") if api_key is None else api_key
        self._own_channel = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(address, credentials)
                if credentials is not None
                else grpc.insecure_channel(address)
            )
        self.channel = channel
        #: The generated stub, for anything this class does not wrap.
        self.stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        self.timeout = timeout
        auth = (("authorization", f"Bearer {key}"),) if key else ()
        self.metadata = (*auth, *metadata)

    def chat(
        self,
        request: aigc_service_pb2.ChatRequest | str | Iterable[content_pb2.Message | dict[str, Any]],
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        **options: Any,
    ) -> aigc_service_pb2.ChatResponse:
        """Chat: the next assistant message. `options` go to `chat_request`."""
        return self._unary(self.stub.Chat, _chat(request, options), timeout, metadata)

    def stream_chat(
        self,
        request: aigc_service_pb2.ChatRequest | str | Iterable[content_pb2.Message | dict[str, Any]],
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        **options: Any,
    ) -> Stream[aigc_service_pb2.ChatResponse]:
        """StreamChat: the answer's deltas as they are generated (fold them with ChatFolder)."""
        return self._stream(self.stub.StreamChat, _chat(request, options), timeout, metadata)

    def stream_chat_folded(
        self,
        request: aigc_service_pb2.ChatRequest | str | Iterable[content_pb2.Message | dict[str, Any]],
        **kwargs: Any,
    ) -> aigc_service_pb2.ChatResponse:
        """StreamChat folded into the answer Chat would give."""
        folder = ChatFolder()
        for response in self.stream_chat(request, **kwargs):
            folder.add(response)
        return folder.response()

    def complete(
        self,
        prompt: str | aigc_service_pb2.CompleteRequest,
        *,
        model: str = "",
        max_output_tokens: int | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> aigc_service_pb2.CompleteResponse:
        """Complete: the continuation of one prompt."""
        return self._unary(self.stub.Complete, _complete(prompt, model, max_output_tokens), timeout, metadata)

    def stream_complete(
        self,
        prompt: str | aigc_service_pb2.CompleteRequest,
        *,
        model: str = "",
        max_output_tokens: int | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Stream[aigc_service_pb2.CompleteResponse]:
        """StreamComplete: the continuation as it is generated."""
        return self._stream(
            self.stub.StreamComplete, _complete(prompt, model, max_output_tokens), timeout, metadata
        )

    def embed(
        self,
        inputs: str | Sequence[str] | embedding_pb2.EmbedRequest,
        *,
        model: str = "",
        output_dimensions: int | None = None,
        task: int = embedding_pb2.EMBEDDING_TASK_UNSPECIFIED,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> embedding_pb2.EmbedResponse:
        """Embed: one vector per input text, in order (`response.embeddings[i].values`).
        `task` is an EmbeddingTask value; `model` empty means the default embedding model."""
        if isinstance(inputs, embedding_pb2.EmbedRequest):
            request = inputs
        else:
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            request = embedding_pb2.EmbedRequest(model=model, inputs=texts, task=task)
            if output_dimensions is not None:
                request.output_dimensions = output_dimensions
        return self._unary(self.stub.Embed, request, timeout, metadata)

    def list_models(self, *, timeout: float | None = None, metadata: Metadata = ()) -> list[model_pb2.Model]:
        """Every model the deployment serves, across pages; the default model first."""
        models: list[model_pb2.Model] = []
        token = ""
        while True:
            page = self._unary(
                self.stub.ListModels,
                aigc_service_pb2.ListModelsRequest(page_size=1000, page_token=token),
                timeout,
                metadata,
            )
            models.extend(page.models)
            token = page.next_page_token
            if not token:
                return models

    def close(self) -> None:
        """Closes the channel, if this client made it."""
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None, metadata: Metadata) -> Any:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata(metadata))
        except grpc.RpcError as error:
            raise AigcError.from_rpc_error(error) from None

    def _stream(self, method: Any, request: Any, timeout: float | None, metadata: Metadata) -> Stream[Any]:
        return Stream(method(request, timeout=self._timeout(timeout), metadata=self._metadata(metadata)))

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    def _metadata(self, metadata: Metadata) -> tuple[tuple[str, str], ...]:
        return (*self.metadata, *metadata)


def _chat(request: Any, options: dict[str, Any]) -> aigc_service_pb2.ChatRequest:
    if isinstance(request, aigc_service_pb2.ChatRequest):
        if options:
            raise TypeError(f"options {sorted(options)} given with a ChatRequest: set them on the request")
        return request
    return chat_request(request, **options)


def _complete(
    prompt: str | aigc_service_pb2.CompleteRequest, model: str, max_output_tokens: int | None
) -> aigc_service_pb2.CompleteRequest:
    if isinstance(prompt, aigc_service_pb2.CompleteRequest):
        return prompt
    request = aigc_service_pb2.CompleteRequest(model=model, prompt=prompt)
    if max_output_tokens is not None:
        request.generation_config.CopyFrom(
            generation_pb2.GenerationConfig(max_output_tokens=max_output_tokens)
        )
    return request
