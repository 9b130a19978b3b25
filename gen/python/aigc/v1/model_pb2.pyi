from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Model(_message.Message):
    __slots__ = ("id", "provider", "upstream_model", "aliases", "is_default", "ready", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    upstream_model: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    ready: bool
    description: str
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., ready: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...
