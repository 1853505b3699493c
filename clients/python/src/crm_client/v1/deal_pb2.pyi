import datetime

from crm_client.v1 import validate_pb2 as _validate_pb2
from crm_client.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import field_info_pb2 as _field_info_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Deal(_message.Message):
    __slots__ = ("id", "tenant_id", "app_id", "created_at", "updated_at", "created_by", "updated_by", "source", "source_type", "is_deleted", "deleted_at", "deleted_by", "schema_version", "version", "external_id", "account_id", "owner_id", "name", "deal_number", "pipeline_id", "stage", "value", "currency", "probability", "forecast_category", "expected_close_date", "actual_close_date", "next_followup_date", "deal_type", "deal_source", "competitors", "loss_reason", "loss_category", "closure_notes", "primary_contact_id", "contact_ids", "rfp_record_id", "quote_ids", "proposal_ids", "attachment_refs", "linked_task_ids", "audit_log", "custom_fields", "tags")
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
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FORECAST_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLOSE_DATE_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_CLOSE_DATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FOLLOWUP_DATE_FIELD_NUMBER: _ClassVar[int]
    DEAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEAL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    COMPETITORS_FIELD_NUMBER: _ClassVar[int]
    LOSS_REASON_FIELD_NUMBER: _ClassVar[int]
    LOSS_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CLOSURE_NOTES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_IDS_FIELD_NUMBER: _ClassVar[int]
    RFP_RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_REFS_FIELD_NUMBER: _ClassVar[int]
    LINKED_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LOG_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
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
    account_id: str
    owner_id: str
    name: str
    deal_number: str
    pipeline_id: str
    stage: str
    value: float
    currency: str
    probability: float
    forecast_category: str
    expected_close_date: _timestamp_pb2.Timestamp
    actual_close_date: _timestamp_pb2.Timestamp
    next_followup_date: _timestamp_pb2.Timestamp
    deal_type: str
    deal_source: str
    competitors: _containers.RepeatedScalarFieldContainer[str]
    loss_reason: str
    loss_category: str
    closure_notes: str
    primary_contact_id: str
    contact_ids: _containers.RepeatedScalarFieldContainer[str]
    rfp_record_id: str
    quote_ids: _containers.RepeatedScalarFieldContainer[str]
    proposal_ids: _containers.RepeatedScalarFieldContainer[str]
    attachment_refs: _containers.RepeatedScalarFieldContainer[str]
    linked_task_ids: _containers.RepeatedScalarFieldContainer[str]
    audit_log: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageChange]
    custom_fields: _struct_pb2.Struct
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., app_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_by: _Optional[str] = ..., source: _Optional[str] = ..., source_type: _Optional[str] = ..., is_deleted: _Optional[bool] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_by: _Optional[str] = ..., schema_version: _Optional[int] = ..., version: _Optional[int] = ..., external_id: _Optional[str] = ..., account_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., deal_number: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., stage: _Optional[str] = ..., value: _Optional[float] = ..., currency: _Optional[str] = ..., probability: _Optional[float] = ..., forecast_category: _Optional[str] = ..., expected_close_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actual_close_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_followup_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deal_type: _Optional[str] = ..., deal_source: _Optional[str] = ..., competitors: _Optional[_Iterable[str]] = ..., loss_reason: _Optional[str] = ..., loss_category: _Optional[str] = ..., closure_notes: _Optional[str] = ..., primary_contact_id: _Optional[str] = ..., contact_ids: _Optional[_Iterable[str]] = ..., rfp_record_id: _Optional[str] = ..., quote_ids: _Optional[_Iterable[str]] = ..., proposal_ids: _Optional[_Iterable[str]] = ..., attachment_refs: _Optional[_Iterable[str]] = ..., linked_task_ids: _Optional[_Iterable[str]] = ..., audit_log: _Optional[_Iterable[_Union[_common_pb2.StageChange, _Mapping]]] = ..., custom_fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDealsRequest(_message.Message):
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

class ListDealsResponse(_message.Message):
    __slots__ = ("deals", "next_page_token")
    DEALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    next_page_token: str
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDealRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreateDealRequest(_message.Message):
    __slots__ = ("deal", "request_id")
    DEAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deal: Deal
    request_id: str
    def __init__(self, deal: _Optional[_Union[Deal, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateDealRequest(_message.Message):
    __slots__ = ("deal", "update_mask", "request_id")
    DEAL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deal: Deal
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, deal: _Optional[_Union[Deal, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteDealRequest(_message.Message):
    __slots__ = ("id", "version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UndeleteDealRequest(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class BatchGetDealsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetDealsResponse(_message.Message):
    __slots__ = ("deals",)
    DEALS_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ...) -> None: ...

class BatchCreateDealsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateDealRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateDealRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchCreateDealsResponse(_message.Message):
    __slots__ = ("deals",)
    DEALS_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ...) -> None: ...

class BatchUpdateDealsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[UpdateDealRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[UpdateDealRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchUpdateDealsResponse(_message.Message):
    __slots__ = ("deals",)
    DEALS_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ...) -> None: ...

class BatchDeleteDealsRequest(_message.Message):
    __slots__ = ("ids", "request_id")
    IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchDeleteDealsResponse(_message.Message):
    __slots__ = ("deals",)
    DEALS_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ...) -> None: ...

class UpsertDealRequest(_message.Message):
    __slots__ = ("deal", "update_mask", "request_id")
    DEAL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deal: Deal
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, deal: _Optional[_Union[Deal, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpsertDealResponse(_message.Message):
    __slots__ = ("deal", "created")
    DEAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    deal: Deal
    created: bool
    def __init__(self, deal: _Optional[_Union[Deal, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class BatchUpsertDealsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[UpsertDealRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[UpsertDealRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchUpsertDealsResponse(_message.Message):
    __slots__ = ("deals", "created")
    DEALS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    deals: _containers.RepeatedCompositeFieldContainer[Deal]
    created: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, deals: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ..., created: _Optional[_Iterable[bool]] = ...) -> None: ...
