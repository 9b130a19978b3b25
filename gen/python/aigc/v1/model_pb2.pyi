from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Capability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPABILITY_UNSPECIFIED: _ClassVar[Capability]
    CAPABILITY_TOOLS: _ClassVar[Capability]
    CAPABILITY_VISION: _ClassVar[Capability]
    CAPABILITY_JSON_OUTPUT: _ClassVar[Capability]
    CAPABILITY_JSON_SCHEMA: _ClassVar[Capability]
    CAPABILITY_REASONING: _ClassVar[Capability]
    CAPABILITY_RAW_COMPLETION: _ClassVar[Capability]
    CAPABILITY_EMBEDDINGS: _ClassVar[Capability]
CAPABILITY_UNSPECIFIED: Capability
CAPABILITY_TOOLS: Capability
CAPABILITY_VISION: Capability
CAPABILITY_JSON_OUTPUT: Capability
CAPABILITY_JSON_SCHEMA: Capability
CAPABILITY_REASONING: Capability
CAPABILITY_RAW_COMPLETION: Capability
CAPABILITY_EMBEDDINGS: Capability

class Model(_message.Message):
    __slots__ = ("id", "provider", "upstream_model", "aliases", "is_default", "ready", "description", "capabilities")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    upstream_model: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    ready: bool
    description: str
    capabilities: _containers.RepeatedScalarFieldContainer[Capability]
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., ready: _Optional[bool] = ..., description: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, str]]] = ...) -> None: ...
