import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ALLOWED_VALUES_FIELD_NUMBER: _ClassVar[int]
allowed_values: _descriptor.FieldDescriptor
DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
default_value: _descriptor.FieldDescriptor
VALUE_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
value_description: _descriptor.FieldDescriptor
REQUIRED_SUBFIELDS_FIELD_NUMBER: _ClassVar[int]
required_subfields: _descriptor.FieldDescriptor
EMPTY_SUBFIELDS_FIELD_NUMBER: _ClassVar[int]
empty_subfields: _descriptor.FieldDescriptor
REQUIRES_WHEN_TRUE_FIELD_NUMBER: _ClassVar[int]
requires_when_true: _descriptor.FieldDescriptor
KEEP_SET_FIELD_NUMBER: _ClassVar[int]
keep_set: _descriptor.FieldDescriptor
AT_LEAST_ONE_OF_FIELD_NUMBER: _ClassVar[int]
at_least_one_of: _descriptor.FieldDescriptor
REQUIRED_SCOPE_FIELD_NUMBER: _ClassVar[int]
required_scope: _descriptor.FieldDescriptor

class StageChange(_message.Message):
    __slots__ = ("from_stage", "to_stage", "changed_at", "changed_by")
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    from_stage: str
    to_stage: str
    changed_at: _timestamp_pb2.Timestamp
    changed_by: str
    def __init__(self, from_stage: _Optional[str] = ..., to_stage: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., changed_by: _Optional[str] = ...) -> None: ...

class LineItemSummary(_message.Message):
    __slots__ = ("id", "description", "quantity", "unit_price", "discount", "discount_type", "total", "currency")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    quantity: float
    unit_price: float
    discount: float
    discount_type: str
    total: float
    currency: str
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., quantity: _Optional[float] = ..., unit_price: _Optional[float] = ..., discount: _Optional[float] = ..., discount_type: _Optional[str] = ..., total: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...
