"""A small typed wrapper over the generated crm.v1 stubs.

    client = connect("localhost:50051", os.environ["CRM_TOKEN"])   # token: a JWT
    client.customer.accounts.list()                     # one page
    for acc in client.customer.accounts.list_all(filter="tags:vip"):
        ...
    acc = client.customer.accounts.create({"name": "Globex"})
    acc = client.customer.accounts.update(acc.id, {"legal_name": "Globex Corp"}, version=acc.version)
    client.customer.accounts.delete(acc.id, version=acc.version)

    a, b = client.customer.accounts.batch_create([{"name": "A"}, {"name": "B"}])   # all or none
    res = client.customer.accounts.upsert({"external_id": "erp-1", "name": "A"})   # res.record, res.created

    page = client.changes.list(after_sequence=0)        # page.changes, page.last_sequence
    with client.changes.watch(after_sequence=page.last_sequence) as events:
        for event in events:                            # resumes by itself after a drop
            ...

    hook = client.webhooks.create({"url": "https://example.com/hook"})   # hook.secret: only here
    log = client.webhooks.list_deliveries(hook.id)      # log.deliveries (newest first), log.next_page_token
    client.webhooks.redeliver(hook.id, 0)               # deliver the events after sequence 0 again

    seats = client.field_definitions.create({"resource_type": "account", "key": "seats", "type": "integer"})
    client.field_definitions.check({"id": seats.id, "maximum": 10}, ["maximum"])   # .violating_records

    page = client.history.list("accounts", acc.id, fields=["name"])   # page.entries, newest first
    then = client.history.at("accounts", acc.id, datetime(2026, 3, 1, tzinfo=timezone.utc))   # a dict
    client.erasure.purge("accounts", acc.id, cascade=True)   # {"records": 1, ...}; needs scope crm:purge

Every method raises CrmError on a non-OK status.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any, Generic, Literal, TypeVar, Union, cast, overload

import grpc
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from crm_client.errors import CrmError
from crm_client.v1 import (
    account_pb2,
    account_pb2_grpc,
    activity_pb2,
    activity_pb2_grpc,
    change_pb2,
    change_pb2_grpc,
    contact_pb2,
    contact_pb2_grpc,
    deal_pb2,
    deal_pb2_grpc,
    field_definition_pb2,
    field_definition_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    line_item_pb2,
    line_item_pb2_grpc,
    quote_pb2,
    quote_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)

M = TypeVar("M", bound=Message)  # the resource message, e.g. Account
L = TypeVar("L", bound=Message)  # its list response, e.g. ListAccountsResponse

#: A resource given either as its message or as a dict (proto or JSON names).
Data = Union[M, Mapping[str, Any]]

_NOT_MASKED = frozenset({"id", "version"})


#: A JWT, or a function returning one (called before every request, for refresh).
Token = Union[str, Callable[[], str], None]


@dataclasses.dataclass(frozen=True)
class UpdateItem(Generic[M]):
    """One item of ``batch_update``: the arguments of ``update(id, data,
    version=..., update_mask=...)``, with the same meaning."""

    id: str
    data: Data[M]
    version: int | None = None
    update_mask: Sequence[str] | None = None


@dataclasses.dataclass(frozen=True)
class UpsertItem(Generic[M]):
    """One item of ``batch_upsert`` with an explicit ``update_mask`` (a bare
    message or dict is an item without one)."""

    data: Data[M]
    update_mask: Sequence[str] | None = None


@dataclasses.dataclass(frozen=True)
class UpsertResult(Generic[M]):
    """What ``upsert`` returns."""

    #: The record as stored.
    record: M
    #: True when the call created it, False when it updated (or left unchanged) an existing one.
    created: bool


@dataclasses.dataclass(frozen=True)
class BatchUpsertResult(Generic[M]):
    """What ``batch_upsert`` returns."""

    #: The records as stored, in the order of the items.
    records: list[M]
    #: Parallel to ``records``: True where the item created its record.
    created: list[bool]


class _Caller:
    """Calls one stub method with the bearer token and default timeout."""

    def __init__(self, token: Token, timeout: float | None) -> None:
        self._token = token
        self._timeout = timeout

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._token() if callable(self._token) else self._token
        return (("authorization", f"Bearer {token}"),) if token else ()

    def __call__(self, method: Callable[..., Any], request: Message) -> Any:
        metadata = self._metadata()
        try:
            return method(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise CrmError.from_rpc_error(err) from None

    def stream(self, method: Callable[..., Any], request: Message) -> Any:
        """Starts a server-streaming call, with no deadline. The result is an
        iterator of responses that is also a grpc.Call (``.cancel()``); its
        errors are raised as grpc.RpcError while iterating."""
        return method(request, metadata=self._metadata())


class ListResource(Generic[M, L]):
    """list / list_all / get / create / batch_get / batch_create of one crm.v1
    resource (all Activities offer)."""

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

    def batch_get(self, ids: Sequence[str]) -> builtins.list[M]:
        """Up to 1000 records by id, in the order asked (an id asked twice is
        returned twice; soft-deleted records too). Any id that names no record
        of the caller is CrmError NOT_FOUND."""
        method, req = self._rpc("BatchGet", plural=True)
        return self._records(self._call(method, req(ids=list(ids))))

    def batch_create(self, items: Sequence[Data[M]], *, request_id: str | None = None) -> builtins.list[M]:
        """Creates up to 1000 records in one transaction (all or none) and
        returns them in order. A rejected batch is CrmError INVALID_ARGUMENT
        listing every violation of every item, each field prefixed with its
        item (``"requests[1].account.website"``). ``request_id`` makes the
        whole batch idempotent."""
        method, req = self._rpc("BatchCreate", plural=True)
        _, item_req = self._rpc("Create")
        requests = []
        for data in items:
            item = item_req()
            getattr(item, self._field).CopyFrom(self._to_message(data))
            requests.append(item)
        return self._records(self._call(method, req(requests=requests, request_id=request_id or "")))

    def _records(self, response: Any) -> builtins.list[M]:
        """The records of a batch response (its field named as the list's)."""
        return list(getattr(response, self._list_field))


class Resource(ListResource[M, L]):
    """A resource with the full set: also update / delete / undelete and
    batch_update / batch_delete / upsert / batch_upsert."""

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
        request = self._masked(req, data, update_mask, id=id, version=version)
        request.request_id = request_id or ""
        result: M = self._call(method, request)
        return result

    def _masked(
        self,
        req: type[Message],
        data: Data[M],
        update_mask: Sequence[str] | None,
        *,
        id: str | None = None,
        version: int | None = None,
    ) -> Any:
        """An Update/Upsert request: the record (with ``id`` / ``version`` if
        given) and the mask: ``update_mask``, else a dict's keys, else none."""
        msg = self._to_message(data)
        if id is not None:
            msg.id = id  # type: ignore[attr-defined]
        if version is not None:
            msg.version = version  # type: ignore[attr-defined]
        paths: list[str] | None = list(update_mask) if update_mask is not None else None
        if paths is None and not isinstance(data, Message):
            paths = [self._proto_name(k) for k in data if self._proto_name(k) not in _NOT_MASKED]
        request: Any = req()
        getattr(request, self._field).CopyFrom(msg)
        if paths is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return request

    def delete(self, id: str, *, version: int = 0, request_id: str | None = None) -> M:
        """Soft-deletes; returns the record with is_deleted set."""
        method, req = self._rpc("Delete")
        result: M = self._call(method, req(id=id, version=version, request_id=request_id or ""))
        return result

    def undelete(self, id: str, *, version: int = 0) -> M:
        method, req = self._rpc("Undelete")
        result: M = self._call(method, req(id=id, version=version))
        return result

    def batch_update(
        self, items: Sequence[UpdateItem[M]], *, request_id: str | None = None
    ) -> builtins.list[M]:
        """Updates up to 1000 records (each a different id) in one
        transaction, each as ``update`` does (its own ``version`` check and
        ``update_mask``, or a dict's keys): all or none. A stale version is
        CrmError ABORTED and changes nothing. Returns the records as stored,
        in order. ``request_id`` makes the whole batch idempotent.

            accounts.batch_update([UpdateItem(a.id, {"industry": "saas"}, version=a.version),
                                   UpdateItem(b.id, b_patch, update_mask=["phone"])])
        """
        method, req = self._rpc("BatchUpdate", plural=True)
        _, item_req = self._rpc("Update")
        requests = [
            self._masked(item_req, u.data, u.update_mask, id=u.id, version=u.version) for u in items
        ]
        return self._records(self._call(method, req(requests=requests, request_id=request_id or "")))

    def batch_delete(self, ids: Sequence[str], *, request_id: str | None = None) -> builtins.list[M]:
        """Soft-deletes up to 1000 records in one transaction and returns them
        in order: all or none (an id that is missing or already deleted fails
        the batch)."""
        method, req = self._rpc("BatchDelete", plural=True)
        return self._records(self._call(method, req(ids=list(ids), request_id=request_id or "")))

    def upsert(
        self,
        data: Data[M],
        *,
        update_mask: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> UpsertResult[M]:
        """Creates the record with ``data``'s external_id (required), or
        updates the live one that has it: the ``update_mask`` fields, else (as
        in ``update``) a dict's keys, else a message's populated fields. A
        create uses the whole record. A non-zero ``version`` in ``data`` is
        checked on update (CrmError ABORTED if stale). Returns
        ``UpsertResult(record, created)``."""
        method, req = self._rpc("Upsert")
        request = self._masked(req, data, update_mask)
        request.request_id = request_id or ""
        response: Any = self._call(method, request)
        return UpsertResult(getattr(response, self._field), bool(response.created))

    def batch_upsert(
        self,
        items: Sequence[Data[M] | UpsertItem[M]],
        *,
        request_id: str | None = None,
    ) -> BatchUpsertResult[M]:
        """Upserts up to 1000 records (each a different external_id) in one
        transaction, each as ``upsert``: all or none. An item is a record
        (message or dict) or an ``UpsertItem(data, update_mask=...)``.
        Returns ``BatchUpsertResult(records, created)``, ``created`` parallel
        to ``records``."""
        method, req = self._rpc("BatchUpsert", plural=True)
        _, item_req = self._rpc("Upsert")
        requests = [
            self._masked(item_req, u.data, u.update_mask)
            if isinstance(u, UpsertItem)
            else self._masked(item_req, u, None)
            for u in items
        ]
        response: Any = self._call(method, req(requests=requests, request_id=request_id or ""))
        return BatchUpsertResult(self._records(response), list(response.created))

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


@dataclasses.dataclass(frozen=True)
class ReconnectInfo:
    """Passed to a watch's ``on_reconnect`` before each reconnection."""

    #: 1 for the first reconnection after a stream that delivered messages, then 2, 3, ...
    attempt: int
    #: The position the watch resumes from (the last sequence seen, heartbeats included).
    after_sequence: int
    #: Seconds the watch waits before reconnecting.
    delay: float
    #: Why the stream ended (None: it ended cleanly, as when the server shuts down).
    error: CrmError | None


def is_transient(err: CrmError) -> bool:
    """Whether a watch resumes after this error rather than raising it.

    Statuses crm itself sends always carry an ErrorInfo (``reason`` set);
    those grpc makes on the client for a broken connection have none.
    """
    code = err.code
    if code in (
        grpc.StatusCode.UNAVAILABLE,  # connection refused/lost, server draining, database unreachable
        grpc.StatusCode.CANCELLED,  # not by the caller: a reset stream or connection
        grpc.StatusCode.DEADLINE_EXCEEDED,  # a watch has no deadline: the server's, while starting it
    ):
        return True
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return err.reason == "SERVER_BUSY"  # "retry with backoff"
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED):
        return err.reason is None  # made by the transport (e.g. RST_STREAM), not by crm
    return False


#: What a watch yields: ChangeEvent, or ChangeEvent | Heartbeat with heartbeats=True.
E = TypeVar("E", bound=Message)


class ChangeWatch(Generic[E]):
    """A running ``changes.watch``: an iterator over the events, in sequence
    order, that never ends by itself.

    When the stream drops (UNAVAILABLE, a reset connection, the server
    shutting down) it reconnects after a bounded backoff and resumes after the
    last sequence it has seen, so no event is yielded twice and none is
    skipped. Other errors (CHANGES_EXPIRED, INVALID_ARGUMENT, ...) are raised
    as CrmError from ``next()``. ``close()`` — also by leaving a ``with``
    block, or from another thread — cancels the stream; the iteration then
    stops (StopIteration, not an error).
    """

    def __init__(
        self,
        call: _Caller,
        stub: Any,
        *,
        after_sequence: int,
        resource_types: Sequence[str],
        operations: Sequence[str],
        heartbeats: bool,
        initial_backoff: float,
        max_backoff: float,
        on_reconnect: Callable[[ReconnectInfo], None] | None,
    ) -> None:
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._stream: Any = None  # the current call, None between streams
        self._call = call
        self._stub = stub
        self._position = after_sequence
        self._resource_types = list(resource_types)
        self._operations = list(operations)
        self._heartbeats = heartbeats
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._on_reconnect = on_reconnect
        self._attempt = 0  # reconnections since the last message

    @property
    def position(self) -> int:
        """The last sequence yielded or passed by a heartbeat: where this watch
        (or a new one, after a restart) resumes."""
        return self._position

    def __iter__(self) -> ChangeWatch[E]:
        return self

    def __next__(self) -> E:
        while True:
            with self._lock:
                if self._closed.is_set():
                    raise StopIteration
                if self._stream is None:
                    request = change_pb2.WatchChangesRequest(
                        after_sequence=self._position,
                        resource_types=self._resource_types,
                        operations=self._operations,
                    )
                    self._stream = self._call.stream(self._stub.WatchChanges, request)
                stream = self._stream
            error: CrmError | None = None
            try:
                response: change_pb2.WatchChangesResponse = next(stream)
            except StopIteration:
                pass  # ended without an error: the server is shutting down
            except grpc.RpcError as err:
                if self._closed.is_set():
                    raise StopIteration from None
                error = CrmError.from_rpc_error(err)
                if not is_transient(error):
                    self.close()
                    raise error from None
            else:
                self._attempt = 0
                kind = response.WhichOneof("kind")
                if kind == "change":
                    if response.change.sequence > self._position:  # never twice
                        self._position = response.change.sequence
                        return cast(E, response.change)
                elif kind == "heartbeat":
                    self._position = max(self._position, response.heartbeat.sequence)
                    if self._heartbeats:
                        return cast(E, response.heartbeat)
                continue
            with self._lock:
                self._stream = None
            self._attempt += 1
            full = min(self._max_backoff, self._initial_backoff * 2 ** min(self._attempt - 1, 30))
            delay = full * random.uniform(0.5, 1.0)
            if self._on_reconnect is not None:
                self._on_reconnect(ReconnectInfo(self._attempt, self._position, delay, error))
            if self._closed.wait(delay):
                raise StopIteration

    def close(self) -> None:
        """Cancels the stream and ends the iteration. Safe from any thread, and
        more than once."""
        with self._lock:
            self._closed.set()
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def __enter__(self) -> ChangeWatch[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit grpc may be gone already
            pass


class Changes:
    """The tenant's change feed (crm.v1.ChangeService): every committed change
    to every record, in one gapless sequence per tenant, from 1."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._call = call
        self._stub = change_pb2_grpc.ChangeServiceStub(channel)

    def list(
        self,
        *,
        after_sequence: int = 0,
        page_size: int = 0,
        resource_types: Sequence[str] = (),
        operations: Sequence[str] = (),
    ) -> change_pb2.ListChangesResponse:
        """One page of events after ``after_sequence`` (0: from the oldest
        retained), oldest first: ``.changes`` and ``.last_sequence`` (the
        tenant's latest sequence). ``page_size`` 0 is 100, at most 1000.
        ``resource_types`` (account, contact, deal, activity, quote,
        line_item) and ``operations`` (created, updated, deleted, undeleted,
        purged) filter; empty: all. A position older than the retention is
        CrmError FAILED_PRECONDITION, reason CHANGES_EXPIRED, with
        ``metadata["oldest_sequence"]``."""
        request = change_pb2.ListChangesRequest(
            after_sequence=after_sequence,
            page_size=page_size,
            resource_types=list(resource_types),
            operations=list(operations),
        )
        result: change_pb2.ListChangesResponse = self._call(self._stub.ListChanges, request)
        return result

    @overload
    def watch(
        self,
        *,
        after_sequence: int = 0,
        resource_types: Sequence[str] = (),
        operations: Sequence[str] = (),
        heartbeats: Literal[False] = False,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        on_reconnect: Callable[[ReconnectInfo], None] | None = None,
    ) -> ChangeWatch[change_pb2.ChangeEvent]: ...

    @overload
    def watch(
        self,
        *,
        after_sequence: int = 0,
        resource_types: Sequence[str] = (),
        operations: Sequence[str] = (),
        heartbeats: Literal[True],
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        on_reconnect: Callable[[ReconnectInfo], None] | None = None,
    ) -> ChangeWatch[change_pb2.ChangeEvent | change_pb2.Heartbeat]: ...

    def watch(
        self,
        *,
        after_sequence: int = 0,
        resource_types: Sequence[str] = (),
        operations: Sequence[str] = (),
        heartbeats: bool = False,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        on_reconnect: Callable[[ReconnectInfo], None] | None = None,
    ) -> ChangeWatch[Any]:
        """Every event after ``after_sequence``, then each new one as it
        commits: a ChangeWatch (an iterator; use it in a ``with`` block, or
        close() it, to cancel). The stream is opened by the first ``next()``
        and has no deadline. Filters as in list().

        ``heartbeats=True`` also yields the Heartbeats (sent after 15 s
        without an event; they always advance the resume position). After a
        drop the watch reconnects after ``initial_backoff`` seconds, doubled
        per failed attempt up to ``max_backoff``, each randomized to 50-100 %;
        ``on_reconnect`` is called before each wait (for logging). The
        channel's own reconnection backoff (grpc.initial_reconnect_backoff_ms,
        grpc.max_reconnect_backoff_ms in ``options``) also applies.
        """
        return ChangeWatch(
            self._call,
            self._stub,
            after_sequence=after_sequence,
            resource_types=resource_types,
            operations=operations,
            heartbeats=heartbeats,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            on_reconnect=on_reconnect,
        )


class Webhooks:
    """The tenant's webhooks (crm.v1.WebhookService): HTTP callbacks for its
    change events, signed with the Standard Webhooks scheme. The definitions
    (create / get / list / update / delete), each one's delivery log
    (list_deliveries) and redelivery (redeliver)."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._call = call
        self._stub = webhook_pb2_grpc.WebhookServiceStub(channel)

    @staticmethod
    def _message(data: webhook_pb2.Webhook | Mapping[str, Any]) -> webhook_pb2.Webhook:
        if isinstance(data, webhook_pb2.Webhook):
            return data
        return json_format.ParseDict(dict(data), webhook_pb2.Webhook())

    def create(self, webhook: webhook_pb2.Webhook | Mapping[str, Any]) -> webhook_pb2.Webhook:
        """Creates a webhook. The result is the only one that carries
        ``secret`` (``whsec_...``): keep it to verify signatures. A URL that
        is not http(s) or resolves to a private address is CrmError
        INVALID_ARGUMENT on ``webhook.url``."""
        request = webhook_pb2.CreateWebhookRequest(webhook=self._message(webhook))
        result: webhook_pb2.Webhook = self._call(self._stub.CreateWebhook, request)
        return result

    def get(self, id: str) -> webhook_pb2.Webhook:
        """The webhook ``id`` (without its secret)."""
        result: webhook_pb2.Webhook = self._call(
            self._stub.GetWebhook, webhook_pb2.GetWebhookRequest(id=id)
        )
        return result

    def list(self, *, page_size: int = 0, page_token: str = "") -> webhook_pb2.ListWebhooksResponse:
        """One page of webhooks, newest first: ``.webhooks`` and
        ``.next_page_token`` (empty on the last page)."""
        request = webhook_pb2.ListWebhooksRequest(page_size=page_size, page_token=page_token)
        result: webhook_pb2.ListWebhooksResponse = self._call(self._stub.ListWebhooks, request)
        return result

    def update(
        self,
        webhook: webhook_pb2.Webhook | Mapping[str, Any],
        update_mask: Sequence[str] | None = None,
    ) -> webhook_pb2.Webhook:
        """Updates the fields of ``update_mask`` (url, resource_types,
        operations, description, enabled), or those ``webhook`` sets; a
        non-zero ``version`` that differs is CrmError ABORTED."""
        request = webhook_pb2.UpdateWebhookRequest(webhook=self._message(webhook))
        if update_mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
        result: webhook_pb2.Webhook = self._call(self._stub.UpdateWebhook, request)
        return result

    def delete(self, id: str) -> None:
        """Deletes the webhook for good."""
        self._call(self._stub.DeleteWebhook, webhook_pb2.DeleteWebhookRequest(id=id))

    def list_deliveries(
        self, id: str, page_size: int = 0, page_token: str = ""
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        """One page of the webhook's delivery log, newest first:
        ``.deliveries`` (one per attempt: ``sequence``, ``attempt``,
        ``status_code`` (0: no response), ``error``, ``attempted_at``,
        ``duration_ms``, ``next_attempt_at``; kept for 30 days) and
        ``.next_page_token`` (empty on the last page). ``page_size`` 0 is 50,
        at most 500. An unknown webhook (or another tenant's) is CrmError
        NOT_FOUND; a bad ``page_token``, INVALID_ARGUMENT."""
        request = webhook_pb2.ListWebhookDeliveriesRequest(
            id=id, page_size=page_size, page_token=page_token
        )
        result: webhook_pb2.ListWebhookDeliveriesResponse = self._call(
            self._stub.ListWebhookDeliveries, request
        )
        return result

    def redeliver(self, id: str, after_sequence: int) -> webhook_pb2.RedeliverWebhookResponse:
        """Delivers the webhook's matching events after ``after_sequence``
        (again), in order: its position moves there and a pending retry is
        dropped (a position ahead of the current one skips the events
        between). Returns ``.after_sequence`` (the new position) and
        ``.latest_sequence`` (the tenant's latest: the events up to it will
        be delivered). From 0 (all still kept) up to the latest sequence:
        above it is CrmError INVALID_ARGUMENT on ``after_sequence``, below
        the oldest kept event FAILED_PRECONDITION (CHANGES_EXPIRED). A
        disabled webhook stays disabled."""
        request = webhook_pb2.RedeliverWebhookRequest(id=id, after_sequence=after_sequence)
        result: webhook_pb2.RedeliverWebhookResponse = self._call(self._stub.RedeliverWebhook, request)
        return result


class FieldDefinitions:
    """The tenant's custom-field definitions (crm.v1.FieldDefinitionService):
    the typed schema of the ``custom_fields`` of a resource type (account,
    contact, deal, activity, quote). Once a key is defined, every write of
    that type checks ``custom_fields.<key>`` against it. A definition that
    live records would violate (a create, or an update that admits less) is
    refused with CrmError FAILED_PRECONDITION, reason
    FIELD_DEFINITION_CONFLICT, ``metadata["violating_records"]`` their
    count: ``check`` first to see them. Create / get / list / update /
    delete, and check (a dry run)."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._call = call
        self._stub = field_definition_pb2_grpc.FieldDefinitionServiceStub(channel)

    @staticmethod
    def _message(
        data: field_definition_pb2.FieldDefinition | Mapping[str, Any],
    ) -> field_definition_pb2.FieldDefinition:
        if isinstance(data, field_definition_pb2.FieldDefinition):
            return data
        return json_format.ParseDict(dict(data), field_definition_pb2.FieldDefinition())

    def create(
        self, definition: field_definition_pb2.FieldDefinition | Mapping[str, Any]
    ) -> field_definition_pb2.FieldDefinition:
        """Defines a custom field: ``resource_type``, ``key`` and ``type``
        (string, number, integer, boolean, date, datetime, enum, multi_enum)
        are required and never change. A key already defined for the type is
        CrmError ALREADY_EXISTS; invalid fields, INVALID_ARGUMENT naming
        ``field_definition.<field>``."""
        request = field_definition_pb2.CreateFieldDefinitionRequest(
            field_definition=self._message(definition)
        )
        result: field_definition_pb2.FieldDefinition = self._call(
            self._stub.CreateFieldDefinition, request
        )
        return result

    def get(self, id: str) -> field_definition_pb2.FieldDefinition:
        """The definition ``id`` (``fld_...``)."""
        result: field_definition_pb2.FieldDefinition = self._call(
            self._stub.GetFieldDefinition, field_definition_pb2.GetFieldDefinitionRequest(id=id)
        )
        return result

    def list(
        self, *, page_size: int = 0, page_token: str = "", resource_type: str = ""
    ) -> field_definition_pb2.ListFieldDefinitionsResponse:
        """One page of definitions, by resource type then key:
        ``.field_definitions`` and ``.next_page_token`` (empty on the last
        page). ``resource_type`` empty: all types. ``page_size`` 0 is 100,
        at most 1000."""
        request = field_definition_pb2.ListFieldDefinitionsRequest(
            page_size=page_size, page_token=page_token, resource_type=resource_type
        )
        result: field_definition_pb2.ListFieldDefinitionsResponse = self._call(
            self._stub.ListFieldDefinitions, request
        )
        return result

    def update(
        self,
        definition: field_definition_pb2.FieldDefinition | Mapping[str, Any],
        update_mask: Sequence[str] | None = None,
    ) -> field_definition_pb2.FieldDefinition:
        """Updates the fields of ``update_mask`` (label, description, options,
        required, unique, max_length, minimum, maximum), or those
        ``definition`` sets; a non-zero ``version`` that differs is CrmError
        ABORTED. A mask path naming a field absent from ``definition`` clears
        it (``["maximum"]`` removes the bound)."""
        request = field_definition_pb2.UpdateFieldDefinitionRequest(
            field_definition=self._message(definition)
        )
        if update_mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
        result: field_definition_pb2.FieldDefinition = self._call(
            self._stub.UpdateFieldDefinition, request
        )
        return result

    def delete(self, id: str) -> None:
        """Deletes the definition; the records keep their values (free-form again)."""
        self._call(
            self._stub.DeleteFieldDefinition, field_definition_pb2.DeleteFieldDefinitionRequest(id=id)
        )

    def check(
        self,
        definition: field_definition_pb2.FieldDefinition | Mapping[str, Any],
        update_mask: Sequence[str] | None = None,
    ) -> field_definition_pb2.CheckFieldDefinitionResponse:
        """A dry run of ``create`` (no ``id`` in ``definition``) or of
        ``update`` (``id`` set, with ``update_mask`` as there): how many live
        records would violate the definition, ``.violating_records``, and up
        to 20 of their ids, ``.sample_record_ids``. Nothing changes."""
        request = field_definition_pb2.CheckFieldDefinitionRequest(
            field_definition=self._message(definition)
        )
        if update_mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
        result: field_definition_pb2.CheckFieldDefinitionResponse = self._call(
            self._stub.CheckFieldDefinition, request
        )
        return result


class History:
    """Field history (crm.v1.HistoryService): every change to every field of
    every record, one entry per field a write changed (the client's fields,
    the ones the server maintains such as ``version``, ``updated_at`` and
    rollups, and each ``custom_fields.<key>``). ``collection`` is the REST
    collection: accounts, contacts, deals, activities, quotes or line-items
    (anything else is CrmError INVALID_ARGUMENT on ``collection``). A
    record's history is visible exactly as the record is to ``get``: another
    tenant's record, or an unknown id, is CrmError NOT_FOUND; soft-deleted
    records keep and show theirs."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._call = call
        self._stub = history_pb2_grpc.HistoryServiceStub(channel)

    def list(
        self,
        collection: str,
        id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        fields: Sequence[str] = (),
    ) -> history_pb2.ListRecordHistoryResponse:
        """One page of the record's history, newest first (by record version
        descending, then by field name): ``.entries`` and
        ``.next_page_token`` (empty on the last page). Each entry has
        ``field``, ``old_value`` / ``new_value`` (``google.protobuf.Value``s
        holding the field's JSON as ``get`` has it, null when unset and on
        create; ``json_format.MessageToDict(entry.new_value)`` gives the
        Python value), ``record_version``, ``changed_at``, ``changed_by``,
        ``app_id`` and ``request_id``. ``fields`` (proto names, or
        ``custom_fields.<key>``; at most 100) keeps only their entries; a
        name that is not a field of the type is CrmError INVALID_ARGUMENT
        (``fields[i]``). ``page_size`` 0 is 100, at most 1000."""
        request = history_pb2.ListRecordHistoryRequest(
            collection=collection,
            id=id,
            page_size=page_size,
            page_token=page_token,
            fields=list(fields),
        )
        result: history_pb2.ListRecordHistoryResponse = self._call(
            self._stub.ListRecordHistory, request
        )
        return result

    def list_all(
        self, collection: str, id: str, *, page_size: int = 0, fields: Sequence[str] = ()
    ) -> Iterator[history_pb2.HistoryEntry]:
        """Every entry of the record's history, newest first, following
        next_page_token page by page (lazily)."""
        token = ""
        while True:
            page = self.list(collection, id, page_size=page_size, page_token=token, fields=fields)
            yield from page.entries
            token = page.next_page_token
            if not token:
                return

    def at(
        self, collection: str, id: str, time: datetime.datetime | timestamp_pb2.Timestamp
    ) -> dict[str, Any]:
        """The record as it was at ``time`` (an aware datetime, a naive one
        taken as UTC, or a Timestamp such as an entry's exact
        ``changed_at``): a dict shaped exactly like ``get``'s JSON over REST
        (proto field names, every field; numbers as floats). Before the
        record was created: CrmError NOT_FOUND. Changes made before history
        was kept are not undone."""
        request = history_pb2.GetRecordAtRequest(collection=collection, id=id, time=time)
        result = self._call(self._stub.GetRecordAt, request)
        record: dict[str, Any] = json_format.MessageToDict(result)
        return record


class Erasure:
    """Erasure of records for good (crm.v1.ErasureService): a data subject's
    request (GDPR art. 17, CCPA). Needs a token whose ``scope`` claim
    contains ``crm:purge`` (``crm token --scope crm:purge``), never implied by
    other scopes or by a token without the claim: otherwise CrmError
    PERMISSION_DENIED, reason MISSING_SCOPE, ``metadata["required_scope"]``."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._call = call
        self._stub = history_pb2_grpc.ErasureServiceStub(channel)

    def purge(self, collection: str, id: str, *, cascade: bool = False) -> dict[str, int]:
        """Erases the record (``collection`` as in History) and every copy of
        its values in one transaction: the row, its history, the stored
        responses of idempotent writes that returned it, its change events'
        record (a ``purged`` event is added), and its copies in other
        records (reference lists and optional references cleared, a quote's
        line-item summary recomputed). Live children (an account's
        contacts, deals, quotes and activities; a deal's quotes and
        activities; a contact's activities; a quote's line items) make it
        CrmError FAILED_PRECONDITION, reason HAS_CHILDREN, unless
        ``cascade`` is true, which erases them (and theirs) too. Returns the
        rows erased or rewritten per kind: ``records``, ``history``,
        ``history_rewritten``, ``change_events``, ``idempotent_responses``,
        ``references``, ``relayed_messages``."""
        request = history_pb2.PurgeRecordRequest(collection=collection, id=id, cascade=cascade)
        result: history_pb2.PurgeRecordResponse = self._call(self._stub.PurgeRecord, request)
        return dict(result.erased)


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
        call = _Caller(token, timeout)
        self.customer = Customer(self.channel, call)
        #: The change feed: ``changes.list(...)``, ``changes.watch(...)``.
        self.changes = Changes(self.channel, call)
        #: Webhooks: ``webhooks.create(...)``, ``get``, ``list``, ``update``, ``delete``,
        #: ``list_deliveries`` (the delivery log), ``redeliver``.
        self.webhooks = Webhooks(self.channel, call)
        #: Custom-field definitions: ``field_definitions.create(...)``, ``get``, ``list``,
        #: ``update``, ``delete``, ``check`` (a dry run of a create or an update).
        self.field_definitions = FieldDefinitions(self.channel, call)
        #: Field history: ``history.list(collection, id, ...)``, ``list_all``, ``at`` (the
        #: record as it was at an instant).
        self.history = History(self.channel, call)
        #: Erasure for good: ``erasure.purge(collection, id, cascade=...)`` (needs the
        #: ``crm:purge`` scope).
        self.erasure = Erasure(self.channel, call)

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
