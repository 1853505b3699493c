import datetime

from crm_client.v1 import validate_pb2 as _validate_pb2
from crm_client.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import field_info_pb2 as _field_info_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LineItem(_message.Message):
    __slots__ = ("id", "tenant_id", "app_id", "created_at", "updated_at", "created_by", "updated_by", "source", "source_type", "is_deleted", "deleted_at", "deleted_by", "schema_version", "version", "external_id", "quote_id", "description", "quantity", "unit_price", "discount", "total", "currency", "discount_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    IS_DELETED_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    app_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    created_by: str
    updated_by: str
    source: str
    source_type: str
    is_deleted: bool
    deleted_at: _timestamp_pb2.Timestamp
    deleted_by: str
    schema_version: int
    version: int
    external_id: str
    quote_id: str
    description: str
    quantity: float
    unit_price: float
    discount: float
    total: float
    currency: str
    discount_type: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., app_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_by: _Optional[str] = ..., source: _Optional[str] = ..., source_type: _Optional[str] = ..., is_deleted: _Optional[bool] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_by: _Optional[str] = ..., schema_version: _Optional[int] = ..., version: _Optional[int] = ..., external_id: _Optional[str] = ..., quote_id: _Optional[str] = ..., description: _Optional[str] = ..., quantity: _Optional[float] = ..., unit_price: _Optional[float] = ..., discount: _Optional[float] = ..., total: _Optional[float] = ..., currency: _Optional[str] = ..., discount_type: _Optional[str] = ...) -> None: ...

class ListLineItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "order_by", "search", "show_deleted")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    order_by: str
    search: str
    show_deleted: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., search: _Optional[str] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class ListLineItemsResponse(_message.Message):
    __slots__ = ("line_items", "next_page_token")
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    next_page_token: str
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetLineItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreateLineItemRequest(_message.Message):
    __slots__ = ("line_item", "request_id")
    LINE_ITEM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    line_item: LineItem
    request_id: str
    def __init__(self, line_item: _Optional[_Union[LineItem, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateLineItemRequest(_message.Message):
    __slots__ = ("line_item", "update_mask", "request_id")
    LINE_ITEM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    line_item: LineItem
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, line_item: _Optional[_Union[LineItem, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteLineItemRequest(_message.Message):
    __slots__ = ("id", "version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UndeleteLineItemRequest(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class BatchGetLineItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetLineItemsResponse(_message.Message):
    __slots__ = ("line_items",)
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class BatchCreateLineItemsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateLineItemRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateLineItemRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchCreateLineItemsResponse(_message.Message):
    __slots__ = ("line_items",)
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class BatchUpdateLineItemsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[UpdateLineItemRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[UpdateLineItemRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchUpdateLineItemsResponse(_message.Message):
    __slots__ = ("line_items",)
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class BatchDeleteLineItemsRequest(_message.Message):
    __slots__ = ("ids", "request_id")
    IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchDeleteLineItemsResponse(_message.Message):
    __slots__ = ("line_items",)
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class UpsertLineItemRequest(_message.Message):
    __slots__ = ("line_item", "update_mask", "request_id")
    LINE_ITEM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    line_item: LineItem
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, line_item: _Optional[_Union[LineItem, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpsertLineItemResponse(_message.Message):
    __slots__ = ("line_item", "created")
    LINE_ITEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    line_item: LineItem
    created: bool
    def __init__(self, line_item: _Optional[_Union[LineItem, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class BatchUpsertLineItemsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[UpsertLineItemRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[UpsertLineItemRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchUpsertLineItemsResponse(_message.Message):
    __slots__ = ("line_items", "created")
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    line_items: _containers.RepeatedCompositeFieldContainer[LineItem]
    created: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, line_items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ..., created: _Optional[_Iterable[bool]] = ...) -> None: ...
