import datetime

from crm_client.v1 import validate_pb2 as _validate_pb2
from crm_client.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeEvent(_message.Message):
    __slots__ = ("id", "sequence", "resource_type", "record_id", "record_version", "operation", "changed_fields", "record", "committed_at", "actor", "app_id", "request_id", "transaction_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    sequence: int
    resource_type: str
    record_id: str
    record_version: int
    operation: str
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    record: _struct_pb2.Struct
    committed_at: _timestamp_pb2.Timestamp
    actor: str
    app_id: str
    request_id: str
    transaction_id: str
    def __init__(self, id: _Optional[str] = ..., sequence: _Optional[int] = ..., resource_type: _Optional[str] = ..., record_id: _Optional[str] = ..., record_version: _Optional[int] = ..., operation: _Optional[str] = ..., changed_fields: _Optional[_Iterable[str]] = ..., record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., committed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., app_id: _Optional[str] = ..., request_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class ListChangesRequest(_message.Message):
    __slots__ = ("after_sequence", "page_size", "resource_types", "operations")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    page_size: int
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    operations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ..., resource_types: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[str]] = ...) -> None: ...

class ListChangesResponse(_message.Message):
    __slots__ = ("changes", "last_sequence")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ChangeEvent]
    last_sequence: int
    def __init__(self, changes: _Optional[_Iterable[_Union[ChangeEvent, _Mapping]]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class WatchChangesRequest(_message.Message):
    __slots__ = ("after_sequence", "resource_types", "operations")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    operations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, after_sequence: _Optional[int] = ..., resource_types: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("change", "heartbeat")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    change: ChangeEvent
    heartbeat: Heartbeat
    def __init__(self, change: _Optional[_Union[ChangeEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sequence", "time")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
