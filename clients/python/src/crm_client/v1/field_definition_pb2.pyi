import datetime

from crm_client.v1 import validate_pb2 as _validate_pb2
from crm_client.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FieldDefinition(_message.Message):
    __slots__ = ("id", "resource_type", "key", "label", "description", "type", "options", "required", "unique", "max_length", "minimum", "maximum", "index_state", "index_error", "created_at", "updated_at", "created_by", "updated_by", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    INDEX_STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    resource_type: str
    key: str
    label: str
    description: str
    type: str
    options: _containers.RepeatedScalarFieldContainer[str]
    required: bool
    unique: bool
    max_length: int
    minimum: float
    maximum: float
    index_state: str
    index_error: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    created_by: str
    updated_by: str
    version: int
    def __init__(self, id: _Optional[str] = ..., resource_type: _Optional[str] = ..., key: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., required: _Optional[bool] = ..., unique: _Optional[bool] = ..., max_length: _Optional[int] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., index_state: _Optional[str] = ..., index_error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_by: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateFieldDefinitionRequest(_message.Message):
    __slots__ = ("field_definition",)
    FIELD_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    field_definition: FieldDefinition
    def __init__(self, field_definition: _Optional[_Union[FieldDefinition, _Mapping]] = ...) -> None: ...

class GetFieldDefinitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListFieldDefinitionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "resource_type")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    resource_type: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., resource_type: _Optional[str] = ...) -> None: ...

class ListFieldDefinitionsResponse(_message.Message):
    __slots__ = ("field_definitions", "next_page_token")
    FIELD_DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    field_definitions: _containers.RepeatedCompositeFieldContainer[FieldDefinition]
    next_page_token: str
    def __init__(self, field_definitions: _Optional[_Iterable[_Union[FieldDefinition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFieldDefinitionRequest(_message.Message):
    __slots__ = ("field_definition", "update_mask")
    FIELD_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    field_definition: FieldDefinition
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, field_definition: _Optional[_Union[FieldDefinition, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteFieldDefinitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteFieldDefinitionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckFieldDefinitionRequest(_message.Message):
    __slots__ = ("field_definition", "update_mask")
    FIELD_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    field_definition: FieldDefinition
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, field_definition: _Optional[_Union[FieldDefinition, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class CheckFieldDefinitionResponse(_message.Message):
    __slots__ = ("violating_records", "sample_record_ids")
    VIOLATING_RECORDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    violating_records: int
    sample_record_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, violating_records: _Optional[int] = ..., sample_record_ids: _Optional[_Iterable[str]] = ...) -> None: ...
