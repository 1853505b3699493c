"""A small typed wrapper over the generated crm.v1 stubs.

    client = connect("localhost:50051", token)
    client.customer.accounts.list()                     # one page
    for acc in client.customer.accounts.list_all(filter="tags:vip"):
        ...
    acc = client.customer.accounts.create({"name": "Globex"})
    acc = client.customer.accounts.update(acc.id, {"legal_name": "Globex Corp"}, version=acc.version)
    client.customer.accounts.delete(acc.id, version=acc.version)

Every method raises CrmError on a non-OK status.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any, Generic, TypeVar, Union

import grpc
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message

from crm_client.errors import CrmError
from crm_client.v1 import (
    account_pb2,
    account_pb2_grpc,
    activity_pb2,
    activity_pb2_grpc,
    contact_pb2,
    contact_pb2_grpc,
    deal_pb2,
    deal_pb2_grpc,
    line_item_pb2,
    line_item_pb2_grpc,
    quote_pb2,
    quote_pb2_grpc,
)

M = TypeVar("M", bound=Message)  # the resource message, e.g. Account
L = TypeVar("L", bound=Message)  # its list response, e.g. ListAccountsResponse

#: A resource given either as its message or as a dict (proto or JSON names).
Data = Union[M, Mapping[str, Any]]

_NOT_MASKED = frozenset({"id", "version"})


#: A JWT, or a function returning one (called before every request, for refresh).
Token = Union[str, Callable[[], str], None]


class _Caller:
    """Calls one stub method with the bearer token and default timeout."""

    def __init__(self, token: Token, timeout: float | None) -> None:
        self._token = token
        self._timeout = timeout

    def __call__(self, method: Callable[..., Any], request: Message) -> Any:
        token = self._token() if callable(self._token) else self._token
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return method(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise CrmError.from_rpc_error(err) from None


class ListResource(Generic[M, L]):
    """list / list_all / get / create of one crm.v1 resource (all Activities offer)."""

    def __init__(
        self,
        call: _Caller,
        stub: Any,
        module: ModuleType,
        message: type[M],
        list_response: type[L],
    ) -> None:
        self._call = call
        self._stub = stub
        self._module = module
        self.message = message
        self.list_response = list_response
        # The names the methods and fields are built from, read from the
        # descriptors (one mechanism for all six resources).
        record = message.DESCRIPTOR
        self._singular = record.name  # "LineItem"
        self._plural = list_response.DESCRIPTOR.name.removeprefix("List").removesuffix("Response")
        create = module.DESCRIPTOR.message_types_by_name[f"Create{self._singular}Request"]
        # The request field of the record's type ("line_item") and the
        # response's one repeated field ("line_items").
        self._field = next(
            f.name for f in create.fields if f.message_type and f.message_type.full_name == record.full_name
        )
        self._list_field = next(f.name for f in list_response.DESCRIPTOR.fields if f.is_repeated)

    def _rpc(self, verb: str, plural: bool = False) -> tuple[Callable[..., Any], type[Message]]:
        name = verb + (self._plural if plural else self._singular)
        return getattr(self._stub, name), getattr(self._module, name + "Request")

    def _to_message(self, data: Data[M]) -> M:
        if isinstance(data, Message):
            if not isinstance(data, self.message):
                raise TypeError(f"expected {self.message.__name__} or a dict, got {type(data).__name__}")
            msg = self.message()
            msg.CopyFrom(data)
            return msg
        return json_format.ParseDict(dict(data), self.message())

    def list(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
        search: str = "",
        show_deleted: bool = False,
    ) -> L:
        """One page. The records are in the response's plural field (e.g.
        ``.accounts``); ``.next_page_token`` is empty on the last page."""
        method, req = self._rpc("List", plural=True)
        request = req(
            filter=filter,
            order_by=order_by,
            page_size=page_size,
            page_token=page_token,
            search=search,
            show_deleted=show_deleted,
        )
        result: L = self._call(method, request)
        return result

    def list_all(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        search: str = "",
        show_deleted: bool = False,
    ) -> Iterator[M]:
        """Every record, following next_page_token page by page (lazily)."""
        token = ""
        while True:
            page = self.list(
                filter=filter,
                order_by=order_by,
                page_size=page_size,
                page_token=token,
                search=search,
                show_deleted=show_deleted,
            )
            yield from getattr(page, self._list_field)
            token = getattr(page, "next_page_token")
            if not token:
                return

    def records(self, page: L) -> builtins.list[M]:
        """The records of a list() response, whatever the plural field is called."""
        return list(getattr(page, self._list_field))

    def get(self, id: str) -> M:
        method, req = self._rpc("Get")
        result: M = self._call(method, req(id=id))
        return result

    def create(self, data: Data[M], *, request_id: str | None = None) -> M:
        """Creates the record. ``request_id`` (a UUID) makes retries idempotent."""
        method, req = self._rpc("Create")
        request = req(request_id=request_id or "")
        getattr(request, self._field).CopyFrom(self._to_message(data))
        result: M = self._call(method, request)
        return result


class Resource(ListResource[M, L]):
    """A resource with the full set: also update / delete / undelete."""

    def update(
        self,
        id: str,
        data: Data[M],
        *,
        version: int | None = None,
        update_mask: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> M:
        """Updates record ``id`` with ``data``.

        ``version`` (non-zero) must equal the stored version, else CrmError
        ABORTED (VERSION_MISMATCH). ``update_mask`` lists the proto field names
        to write; when omitted and ``data`` is a dict, the mask is the dict's
        keys (as over REST: exactly the keys given are written, so
        ``{"notes": ""}`` clears notes); when omitted and ``data`` is a message,
        no mask is sent and the server writes the populated fields.
        """
        method, req = self._rpc("Update")
        msg = self._to_message(data)
        msg.id = id  # type: ignore[attr-defined]
        if version is not None:
            msg.version = version  # type: ignore[attr-defined]
        paths: list[str] | None = list(update_mask) if update_mask is not None else None
        if paths is None and not isinstance(data, Message):
            paths = [self._proto_name(k) for k in data if self._proto_name(k) not in _NOT_MASKED]
        request: Any = req(request_id=request_id or "")
        getattr(request, self._field).CopyFrom(msg)
        if paths is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        result: M = self._call(method, request)
        return result

    def delete(self, id: str, *, version: int = 0, request_id: str | None = None) -> M:
        """Soft-deletes; returns the record with is_deleted set."""
        method, req = self._rpc("Delete")
        result: M = self._call(method, req(id=id, version=version, request_id=request_id or ""))
        return result

    def undelete(self, id: str, *, version: int = 0) -> M:
        method, req = self._rpc("Undelete")
        result: M = self._call(method, req(id=id, version=version))
        return result

    def _proto_name(self, key: str) -> str:
        desc = self.message.DESCRIPTOR
        if key in desc.fields_by_name:
            return key
        field = desc.fields_by_camelcase_name.get(key)
        return field.name if field is not None else key


class Customer:
    """The customer-data resources: accounts, contacts, deals, activities,
    quotes and their line items."""

    accounts: Resource[account_pb2.Account, account_pb2.ListAccountsResponse]
    contacts: Resource[contact_pb2.Contact, contact_pb2.ListContactsResponse]
    deals: Resource[deal_pb2.Deal, deal_pb2.ListDealsResponse]
    activities: ListResource[activity_pb2.Activity, activity_pb2.ListActivitiesResponse]
    quotes: Resource[quote_pb2.Quote, quote_pb2.ListQuotesResponse]
    line_items: Resource[line_item_pb2.LineItem, line_item_pb2.ListLineItemsResponse]

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self.accounts = Resource(
            call, account_pb2_grpc.AccountServiceStub(channel), account_pb2,
            account_pb2.Account, account_pb2.ListAccountsResponse,
        )  # fmt: skip
        self.contacts = Resource(
            call, contact_pb2_grpc.ContactServiceStub(channel), contact_pb2,
            contact_pb2.Contact, contact_pb2.ListContactsResponse,
        )  # fmt: skip
        self.deals = Resource(
            call, deal_pb2_grpc.DealServiceStub(channel), deal_pb2,
            deal_pb2.Deal, deal_pb2.ListDealsResponse,
        )  # fmt: skip
        self.activities = ListResource(
            call, activity_pb2_grpc.ActivityServiceStub(channel), activity_pb2,
            activity_pb2.Activity, activity_pb2.ListActivitiesResponse,
        )  # fmt: skip
        self.quotes = Resource(
            call, quote_pb2_grpc.QuoteServiceStub(channel), quote_pb2,
            quote_pb2.Quote, quote_pb2.ListQuotesResponse,
        )  # fmt: skip
        self.line_items = Resource(
            call, line_item_pb2_grpc.LineItemServiceStub(channel), line_item_pb2,
            line_item_pb2.LineItem, line_item_pb2.ListLineItemsResponse,
        )  # fmt: skip


class Client:
    """A connection to crm. Use as a context manager, or call close()."""

    def __init__(
        self,
        target: str,
        token: Token = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        opts = list(options or [])
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel: grpc.Channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(target, options=opts)
        self.customer = Customer(self.channel, _Caller(token, timeout))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    target: str,
    token: Token = None,
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
    timeout: float | None = 30.0,
    options: Sequence[tuple[str, Any]] | None = None,
) -> Client:
    """Opens a client. ``target`` is ``host:port`` of the gRPC port; ``token``
    a JWT (or a function returning one per call) sent as ``authorization:
    Bearer <token>``; ``tls``
    selects a TLS channel (plaintext otherwise); ``timeout`` is the per-call
    deadline in seconds (None: no deadline)."""
    return Client(
        target, token, tls=tls, root_certificates=root_certificates, timeout=timeout, options=options
    )
