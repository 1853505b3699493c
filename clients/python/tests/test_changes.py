"""client.changes (the change feed) against a real crm server (see conftest.py).

Each test mints a tenant of its own, whose feed starts at sequence 1.
scripts/py-client.sh starts the server with CRM_CHANGES_HEARTBEAT_SECS=1
(heartbeats after 1 s idle instead of 15 s); without it the heartbeat test
just takes longer. The shutdown test starts servers of its own (``$CRM_BIN
serve --dev`` on a scratch database in CRM_TEST_PG's cluster, dropped
afterwards, as with-server.sh does) so that it can stop one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import grpc
import pytest

import crm_client
from conftest import OwnServer, Proxy, drop_database
from crm_client import CrmError, ReconnectInfo, is_transient
from crm_client.v1 import change_pb2

T = TypeVar("T")

# The channel's own reconnection backoff starts at 1 s (grpc's default); the
# tests reset connections and want the channel back sooner.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

Mint = Callable[[str, str], str]


@pytest.fixture
def feed(target: str, mint_token: Mint, tag: str) -> Iterator[Callable[..., crm_client.Client]]:
    """Opens clients of one fresh tenant: ``feed()`` directly, ``feed(proxy.target)`` through a proxy."""
    token = mint_token(f"py-feed-{tag}", "feed-tester")
    opened: list[crm_client.Client] = []

    def open_client(via: str = target) -> crm_client.Client:
        c = crm_client.connect(via, token, options=FAST_RECONNECT)
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


def wait_for_head(client: crm_client.Client, n: int) -> None:
    """Waits until the feed has sequenced n events (it follows the commit by milliseconds)."""
    deadline = time.monotonic() + 10
    while True:
        last = client.changes.list(page_size=1).last_sequence
        if last >= n:
            assert last == n, "no more events than the writes made"
            return
        assert time.monotonic() < deadline, f"head stayed at {last}, expected {n}"
        time.sleep(0.02)


def create_accounts(client: crm_client.Client, prefix: str, n: int) -> list[str]:
    return [client.customer.accounts.create({"name": f"{prefix} {i}"}).id for i in range(n)]


class Tail(Generic[T]):
    """Iterates a watch on a thread, collecting what it yields."""

    def __init__(self, events: Iterable[T], on_item: Callable[[T, int], None] | None = None) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(events, on_item), daemon=True)
        self._thread.start()

    def _run(self, events: Iterable[T], on_item: Callable[[T, int], None] | None) -> None:
        try:
            for item in events:
                with self._cond:
                    self.items.append(item)
                    count = len(self.items)
                    self._cond.notify_all()
                if on_item is not None:
                    on_item(item, count)
        except BaseException as err:  # noqa: BLE001 - reported by until()/join()
            self.error = err
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def until(self, n: int, timeout: float = 10.0) -> list[T]:
        """The first n items, once they have arrived; fails if the watch ends or errs first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n:
                if self.error is not None:
                    raise self.error
                if self.ended:
                    pytest.fail(f"the watch ended after {len(self.items)} of {n} items")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"only {len(self.items)} of {n} items within {timeout} s")
                self._cond.wait(left)
            return self.items[:n]

    def join(self, timeout: float = 5.0) -> None:
        """Waits for the iteration to end; it must end without an error."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watch did not stop"
        assert self.error is None, repr(self.error)


def close_after(watch: crm_client.ChangeWatch[Any], seconds: float) -> threading.Timer:
    """Closes the watch after a while: a test that loops over it can fail, not hang."""
    timer = threading.Timer(seconds, watch.close)
    timer.daemon = True
    timer.start()
    return timer


def seqs(items: Iterable[Any]) -> list[int]:
    return [e.sequence for e in items]


def spy_on_watch_requests(client: crm_client.Client, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the after_sequence of every WatchChanges request the client makes."""
    sent: list[int] = []
    stub: Any = client.changes._stub
    real = stub.WatchChanges

    def watch_changes(request: change_pb2.WatchChangesRequest, **kwargs: Any) -> Any:
        sent.append(request.after_sequence)
        return real(request, **kwargs)

    monkeypatch.setattr(stub, "WatchChanges", watch_changes)
    return sent


# --- list ----------------------------------------------------------------


def test_list_returns_events_in_sequence_with_filters(feed: Callable[..., crm_client.Client]) -> None:
    client = feed()
    accounts, deals = client.customer.accounts, client.customer.deals
    a = accounts.create({"name": "A"})  # 1 account created
    accounts.update(a.id, {"legal_name": "A Ltd"}, version=a.version)  # 2 account updated
    d = deals.create({"account_id": a.id, "name": "Deal"})  # 3 deal created
    b = accounts.create({"name": "B"})  # 4 account created
    accounts.delete(b.id, version=b.version)  # 5 account deleted
    wait_for_head(client, 5)

    page = client.changes.list(after_sequence=0)
    assert isinstance(page, change_pb2.ListChangesResponse)
    assert seqs(page.changes) == [1, 2, 3, 4, 5]
    assert [(e.resource_type, e.operation, e.record_id) for e in page.changes] == [
        ("account", "created", a.id),
        ("account", "updated", a.id),
        ("deal", "created", d.id),
        ("account", "created", b.id),
        ("account", "deleted", b.id),
    ]
    assert page.last_sequence == 5
    first = page.changes[0]
    assert first.id.startswith("evt_") and len(first.id) == 30
    assert first.record_version == 1 and first.actor == "feed-tester"
    assert first.record["name"] == "A"  # the record as Get returns it
    assert first.committed_at.seconds > 0
    assert "legal_name" in page.changes[1].changed_fields
    assert len({e.id for e in page.changes}) == 5

    only_deals = client.changes.list(resource_types=["deal"])
    assert seqs(only_deals.changes) == [3] and only_deals.changes[0].record_id == d.id
    assert only_deals.last_sequence == 5
    assert seqs(client.changes.list(operations=["created"]).changes) == [1, 3, 4]
    assert seqs(client.changes.list(resource_types=["account"], operations=["deleted"]).changes) == [5]

    p1 = client.changes.list(page_size=2)
    assert seqs(p1.changes) == [1, 2]
    assert seqs(client.changes.list(after_sequence=p1.changes[-1].sequence, page_size=2).changes) == [3, 4]
    assert seqs(client.changes.list(after_sequence=4, page_size=2).changes) == [5]
    empty = client.changes.list(after_sequence=5)
    assert list(empty.changes) == [] and empty.last_sequence == 5


def test_list_invalid_position_or_filter(feed: Callable[..., crm_client.Client]) -> None:
    client = feed()
    with pytest.raises(CrmError) as err:
        client.changes.list(after_sequence=-1)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.reason == "VALIDATION_FAILED"
    assert [f for f, _ in err.value.field_violations] == ["after_sequence"]
    with pytest.raises(CrmError) as err:
        client.changes.list(resource_types=["accounts"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.value.field_violations] == ["resource_types[0]"]


# --- watch ---------------------------------------------------------------


def test_watch_invalid_position_is_raised_not_retried(feed: Callable[..., crm_client.Client]) -> None:
    client = feed()
    reconnects: list[ReconnectInfo] = []
    started = time.monotonic()
    watch = client.changes.watch(after_sequence=-1, on_reconnect=reconnects.append)
    close_after(watch, 5)
    with pytest.raises(CrmError) as err:
        for _ in watch:
            pytest.fail("no event expected")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.value.field_violations] == ["after_sequence"]
    assert reconnects == [] and time.monotonic() - started < 2
    watch = client.changes.watch(operations=["made"])
    close_after(watch, 5)
    with pytest.raises(CrmError) as err:
        next(watch)
    assert [f for f, _ in err.value.field_violations] == ["operations[0]"]


def test_watch_live_concurrent_writes_once_in_order(feed: Callable[..., crm_client.Client]) -> None:
    client = feed()
    watch = client.changes.watch(after_sequence=0)
    tail = Tail(watch)
    time.sleep(0.2)
    assert tail.items == []
    n = 12
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda i: client.customer.accounts.create({"name": f"Live {i}"}).id, range(n)))
    events = tail.until(n)
    assert seqs(events) == list(range(1, n + 1)), "gapless, ascending, no repeats"
    assert {e.record_id for e in events} == set(ids)
    assert all(isinstance(e, change_pb2.ChangeEvent) and e.operation == "created" for e in events)

    later = client.customer.accounts.create({"name": "Later"})
    last = tail.until(n + 1)[n]
    assert (last.sequence, last.record_id) == (n + 1, later.id)
    assert watch.position == n + 1

    watch.close()  # from this thread, while the tail's thread waits in next()
    tail.join()
    assert len(tail.items) == n + 1


def test_watch_resume_from_last_seen(feed: Callable[..., crm_client.Client]) -> None:
    client = feed()
    n, k = 10, 4
    create_accounts(client, "R", n)
    wait_for_head(client, n)

    first: list[change_pb2.ChangeEvent] = []
    with client.changes.watch(after_sequence=0) as watch:
        close_after(watch, 10)
        for event in watch:
            first.append(event)
            if len(first) == k:
                break
    assert seqs(first) == list(range(1, k + 1))
    with pytest.raises(StopIteration):
        next(watch)  # closed by the with block
    last_seen = first[-1].sequence

    create_accounts(client, "R late", 3)  # written while nobody watches
    with client.changes.watch(after_sequence=last_seen) as rest_watch:
        tail = Tail(rest_watch)
        rest = tail.until(n + 3 - k)
        assert seqs(rest) == list(range(k + 1, n + 4))
        time.sleep(0.3)
        assert len(tail.items) == n + 3 - k, "nothing more"
    tail.join()


def test_watch_reconnects_after_connection_resets(
    feed: Callable[..., crm_client.Client], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = feed()
    n = 250  # three server batches of 100: the reset lands while events are in flight
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: direct.customer.accounts.create({"name": f"Re {i}"}), range(n)))
    wait_for_head(direct, n)

    via_proxy = feed(proxy.target)
    sent = spy_on_watch_requests(via_proxy, monkeypatch)
    reconnects: list[tuple[ReconnectInfo, int]] = []
    last_yielded = 0

    def on_item(event: change_pb2.ChangeEvent, count: int) -> None:
        nonlocal last_yielded
        last_yielded = event.sequence
        if count == 30:
            # Reset, and keep the "server" unreachable for a moment: the
            # reconnection attempts fail and back off, then succeed.
            proxy.drop()
            proxy.refuse = True
            threading.Timer(0.4, lambda: setattr(proxy, "refuse", False)).start()

    watch = via_proxy.changes.watch(on_reconnect=lambda info: reconnects.append((info, last_yielded)))
    tail = Tail(watch, on_item)
    assert seqs(tail.until(n, timeout=30)) == list(range(1, n + 1)), "every event once, in order"
    assert len(reconnects) >= 2, reconnects
    for info, yielded in reconnects:
        assert info.after_sequence == yielded, "resumes right after the last event yielded"
        assert info.error is not None and is_transient(info.error), info.error
        assert 0 <= info.delay <= 5
    assert any(info.attempt >= 2 for info, _ in reconnects), "consecutive failures count up"

    # Live: a reset while following, with writes while the connection is down.
    before = len(reconnects)
    proxy.drop()
    proxy.refuse = True
    create_accounts(direct, "Re live", 3)
    proxy.refuse = False
    assert seqs(tail.until(n + 3, timeout=30)[n:]) == [n + 1, n + 2, n + 3]
    assert len(reconnects) > before
    assert all(info.after_sequence == n for info, _ in reconnects[before:])
    # What was asked of the server: from 0, then each reconnection from the
    # position it reported, never a replay from 0 hidden by de-duplication.
    assert sent == [0] + [info.after_sequence for info, _ in reconnects]

    watch.close()
    tail.join()
    assert len(tail.items) == n + 3


def test_heartbeats_advance_the_resume_position(
    feed: Callable[..., crm_client.Client], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = feed()
    acc_id = create_accounts(direct, "H", 3)[0]
    wait_for_head(direct, 3)

    via_proxy = feed(proxy.target)
    sent = spy_on_watch_requests(via_proxy, monkeypatch)
    reconnects: list[ReconnectInfo] = []
    # Only deals: the three account events are passed over, and only a
    # heartbeat tells the watch (and the caller) that it is at 3.
    watch = via_proxy.changes.watch(resource_types=["deal"], heartbeats=True, on_reconnect=reconnects.append)
    tail = Tail(watch)
    hb = tail.until(1, timeout=20)[0]
    assert isinstance(hb, change_pb2.Heartbeat) and hb.sequence == 3
    assert watch.position == 3

    proxy.drop()
    deal = direct.customer.deals.create({"account_id": acc_id, "name": "HB deal"})  # 4
    deadline = time.monotonic() + 20
    while not any(isinstance(x, change_pb2.ChangeEvent) for x in tail.items):
        assert time.monotonic() < deadline, "the deal event arrives"
        time.sleep(0.05)
    change = next(x for x in tail.items if isinstance(x, change_pb2.ChangeEvent))
    assert (change.sequence, change.record_id) == (4, deal.id)
    assert reconnects and reconnects[0].after_sequence == 3, "resumed from the heartbeat, not from 0"
    assert sent[:2] == [0, 3]
    watch.close()
    tail.join()

    # Without heartbeats=True none is yielded: an idle watch yields nothing.
    with direct.changes.watch(after_sequence=4) as quiet:
        quiet_tail = Tail(quiet)
        time.sleep(2.5)
        assert quiet_tail.items == []
        assert quiet.position == 4, "advanced by the heartbeats it consumed"
    quiet_tail.join()


def test_leaving_the_loop_cancels_the_stream(feed: Callable[..., crm_client.Client], proxy: Proxy) -> None:
    direct = feed()
    create_accounts(direct, "C", 3)
    wait_for_head(direct, 3)
    via_proxy = feed(proxy.target)

    def quiet_after(action: Callable[[], object]) -> int:
        """Bytes the server sends while `action` writes 5 records, and for 1.5 s after."""
        time.sleep(0.3)
        before = proxy.received
        action()
        time.sleep(1.5)  # beyond a heartbeat (1 s idle), had the stream stayed open
        return proxy.received - before

    # Leaving a `with` block (by break) cancels the stream at once.
    with via_proxy.changes.watch() as watch:
        close_after(watch, 10)
        for event in watch:
            if event.sequence == 2:
                break
    assert quiet_after(lambda: create_accounts(direct, "C more", 5)) < 100, "nothing streamed after the break"

    # close() from another thread, while the iterating one waits for an event.
    watch = via_proxy.changes.watch(after_sequence=8)
    tail = Tail(watch)
    time.sleep(0.3)
    watch.close()
    tail.join(timeout=0.5)
    assert quiet_after(lambda: create_accounts(direct, "C last", 5)) < 100, "nothing streamed after close()"


def test_server_shutdown_ends_the_stream_and_the_watch_resumes_on_restart(
    mint_token: Mint, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"crm_scratch_py_feed_{tag}"
    servers: list[OwnServer] = []
    proxy: Proxy | None = None
    try:
        first = OwnServer(db)
        servers.append(first)
        token = mint_token(f"py-shutdown-{tag}", "feed-tester")
        with crm_client.connect(first.target, token) as direct:
            create_accounts(direct, "S", 5)
            wait_for_head(direct, 5)

        proxy = Proxy(first.target)
        via_proxy = crm_client.connect(proxy.target, token, options=FAST_RECONNECT)
        sent = spy_on_watch_requests(via_proxy, monkeypatch)
        reconnects: list[tuple[ReconnectInfo, int]] = []
        last_yielded = 0
        stopping: list[threading.Thread] = []

        def on_item(event: change_pb2.ChangeEvent, count: int) -> None:
            nonlocal last_yielded
            last_yielded = event.sequence
            if count == 2:  # SIGTERM: the server ends its watches, then exits
                stopper = threading.Thread(target=first.stop)
                stopper.start()
                stopping.append(stopper)

        watch = via_proxy.changes.watch(on_reconnect=lambda info: reconnects.append((info, last_yielded)))
        tail = Tail(watch, on_item)
        tail.until(2)
        deadline = time.monotonic() + 10
        while not stopping:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stopping[0].join(60)
        assert reconnects, "the stream ended with the server"
        assert reconnects[0][0].error is None, "ended cleanly (OK status), not with an error"

        # The same database, a new process, a new port: the proxy points there.
        second = OwnServer(db)
        servers.append(second)
        proxy.upstream = second.target
        with crm_client.connect(second.target, token) as direct:
            create_accounts(direct, "S later", 3)
        assert seqs(tail.until(8, timeout=30)) == list(range(1, 9)), "no gap, no repeat across the restart"
        for info, yielded in reconnects:
            assert info.after_sequence == yielded
        assert sent == [0] + [info.after_sequence for info, _ in reconnects]
        watch.close()
        tail.join()
        via_proxy.close()
    finally:
        if proxy is not None:
            proxy.close()
        for s in servers:
            s.stop()
        drop_database(db)


def test_close_while_backing_off_stops_at_once(feed: Callable[..., crm_client.Client], proxy: Proxy) -> None:
    proxy.refuse = True
    via_proxy = feed(proxy.target)
    reconnects: list[ReconnectInfo] = []
    watch = via_proxy.changes.watch(initial_backoff=60, max_backoff=60, on_reconnect=reconnects.append)
    tail = Tail(watch)
    deadline = time.monotonic() + 10
    while not reconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(reconnects) == 1 and reconnects[0].delay >= 30, "the first attempt failed; a 30-60 s wait began"
    started = time.monotonic()
    watch.close()
    tail.join(timeout=2)
    assert time.monotonic() - started < 1, "not waiting out the backoff"


def test_is_transient() -> None:
    def e(code: grpc.StatusCode, reason: str | None = None) -> CrmError:
        return CrmError(code, "x", reason=reason, domain="crm.v1" if reason else None)

    assert is_transient(e(grpc.StatusCode.UNAVAILABLE))
    assert is_transient(e(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"))
    assert is_transient(e(grpc.StatusCode.CANCELLED))  # not by the caller
    assert is_transient(e(grpc.StatusCode.INTERNAL))  # by the transport (RST_STREAM)
    assert is_transient(e(grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY"))
    assert not is_transient(e(grpc.StatusCode.FAILED_PRECONDITION, "CHANGES_EXPIRED"))
    assert not is_transient(e(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"))
    assert not is_transient(e(grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS"))
    assert not is_transient(e(grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"))
    assert not is_transient(e(grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE"))
