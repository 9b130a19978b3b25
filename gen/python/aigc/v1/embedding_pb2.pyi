import datetime

from aigc.v1 import generation_pb2 as _generation_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbeddingTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_TASK_UNSPECIFIED: _ClassVar[EmbeddingTask]
    EMBEDDING_TASK_QUERY: _ClassVar[EmbeddingTask]
    EMBEDDING_TASK_DOCUMENT: _ClassVar[EmbeddingTask]
    EMBEDDING_TASK_SIMILARITY: _ClassVar[EmbeddingTask]
EMBEDDING_TASK_UNSPECIFIED: EmbeddingTask
EMBEDDING_TASK_QUERY: EmbeddingTask
EMBEDDING_TASK_DOCUMENT: EmbeddingTask
EMBEDDING_TASK_SIMILARITY: EmbeddingTask

class EmbedRequest(_message.Message):
    __slots__ = ("model", "inputs", "output_dimensions", "task", "user_id", "vendor_params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    output_dimensions: int
    task: EmbeddingTask
    user_id: str
    vendor_params: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., output_dimensions: _Optional[int] = ..., task: _Optional[_Union[EmbeddingTask, str]] = ..., user_id: _Optional[str] = ..., vendor_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("id", "model", "provider", "create_time", "embeddings", "usage")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    provider: str
    create_time: _timestamp_pb2.Timestamp
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    usage: _generation_pb2.Usage
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., usage: _Optional[_Union[_generation_pb2.Usage, _Mapping]] = ...) -> None: ...
