"""Webhooks through crm_client, against a real crm server (see conftest.py).
The shared server refuses private targets, so the webhooks there name a
public address literal (unreachable here: attempts to it fail and are
logged); the tests of the delivery log and redelivery use a tenant of their
own, whose feed nothing else writes to. The delivery test starts a server of
its own (conftest.OwnServer) with CRM_WEBHOOKS_ALLOW_PRIVATE=true and fast
retries, and a receiver on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
import pytest

import crm_client
from conftest import OwnServer, drop_database
from crm_client import CrmError

Mint = Callable[[str, str], str]
T = TypeVar("T")
UNKNOWN = "whk_01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_create_shows_the_secret_once_then_get_list_update_delete(client: crm_client.Client) -> None:
    made = client.webhooks.create(
        {"url": "https://93.184.216.34/hook", "resource_types": ["deal"], "description": "py client"}
    )
    assert made.id.startswith("whk_")
    assert made.secret.startswith("whsec_")
    assert len(base64.b64decode(made.secret.removeprefix("whsec_"))) == 32
    got = client.webhooks.get(made.id)
    assert got.secret == ""
    assert list(got.resource_types) == ["deal"]
    assert any(w.id == made.id for w in client.webhooks.list(page_size=100).webhooks)
    updated = client.webhooks.update({"id": made.id, "enabled": False, "version": got.version}, ["enabled"])
    assert updated.enabled is False
    assert updated.version == got.version + 1
    client.webhooks.delete(made.id)
    with pytest.raises(CrmError) as gone:
        client.webhooks.get(made.id)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND


def test_a_loopback_url_is_refused_naming_the_field(client: crm_client.Client) -> None:
    with pytest.raises(CrmError) as refused:
        client.webhooks.create({"url": "http://127.0.0.1:8080/hook"})
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in refused.value.field_violations] == ["webhook.url"]


@pytest.fixture
def own_tenant(target: str, mint_token: Mint, tag: str) -> Iterator[Callable[[str], crm_client.Client]]:
    """Clients for tenants of their own (nothing else writes to their feeds)."""
    clients: list[crm_client.Client] = []

    def make(name: str) -> crm_client.Client:
        c = crm_client.connect(target, mint_token(f"py-{name}-{tag}", "webhook-tester"))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def fields(err: CrmError) -> list[str]:
    return [field for field, _ in err.field_violations]


def test_a_fresh_webhook_has_an_empty_log_and_bad_paging_is_invalid(
    own_tenant: Callable[[str], crm_client.Client],
) -> None:
    c = own_tenant("log")
    hook = c.webhooks.create({"url": "https://93.184.216.34/log"})
    page = c.webhooks.list_deliveries(hook.id)
    assert list(page.deliveries) == []
    assert page.next_page_token == ""
    assert list(c.webhooks.list_deliveries(hook.id, page_size=10).deliveries) == []

    with pytest.raises(CrmError) as bad_token:
        c.webhooks.list_deliveries(hook.id, page_token="not-a-token")
    assert bad_token.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(bad_token.value) == ["page_token"]
    with pytest.raises(CrmError) as bad_size:
        c.webhooks.list_deliveries(hook.id, page_size=-1)
    assert bad_size.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(bad_size.value) == ["page_size"]


def test_redeliver_from_zero_and_past_the_latest_is_invalid(
    own_tenant: Callable[[str], crm_client.Client],
) -> None:
    c = own_tenant("redeliver")
    hook = c.webhooks.create({"url": "https://93.184.216.34/redeliver"})
    res = c.webhooks.redeliver(hook.id, 0)
    assert res.after_sequence == 0
    assert res.latest_sequence >= 0

    with pytest.raises(CrmError) as ahead:
        c.webhooks.redeliver(hook.id, res.latest_sequence + 1_000_000)
    assert ahead.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(ahead.value) == ["after_sequence"]
    with pytest.raises(CrmError) as negative:
        c.webhooks.redeliver(hook.id, -1)
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(negative.value) == ["after_sequence"]


def test_another_tenants_or_an_unknown_webhook_is_not_found(
    own_tenant: Callable[[str], crm_client.Client],
) -> None:
    owner, other = own_tenant("owner"), own_tenant("other")
    hook = owner.webhooks.create({"url": "https://93.184.216.34/mine"})
    calls: list[tuple[str, Callable[[], object]]] = [
        ("another tenant's list_deliveries", lambda: other.webhooks.list_deliveries(hook.id)),
        ("another tenant's redeliver", lambda: other.webhooks.redeliver(hook.id, 0)),
        ("list_deliveries of an unknown id", lambda: owner.webhooks.list_deliveries(UNKNOWN)),
        ("redeliver of an unknown id", lambda: owner.webhooks.redeliver(UNKNOWN, 0)),
    ]
    for what, call in calls:
        with pytest.raises(CrmError) as err:
            call()
        assert err.value.code == grpc.StatusCode.NOT_FOUND, what
    assert owner.webhooks.list_deliveries(hook.id).next_page_token == ""  # the owner still sees it


class Receiver:
    """An HTTP receiver on 127.0.0.1, in a thread: answers each POST with the
    next of ``statuses`` (the last one repeating) and records it as
    ``(headers, body)``."""

    def __init__(self, statuses: list[int]) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        lock = threading.Lock()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    status = statuses[min(len(got), len(statuses) - 1)]
                    got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def eventually(what: str, check: Callable[[], T | None], timeout: float = 20) -> T:
    """Polls ``check`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def verified(request: tuple[dict[str, str], bytes], secret: str) -> dict[str, Any]:
    """Checks a request's Standard Webhooks headers and signature; returns its JSON body."""
    headers, body = request
    assert headers["content-type"] == "application/json"
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert timestamp.isdigit() and abs(int(timestamp) - time.time()) < 300, "webhook-timestamp is now"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    assert headers["webhook-signature"].split(" ") == ["v1," + base64.b64encode(mac).decode()]
    event: dict[str, Any] = json.loads(body)
    assert event["id"] == msg_id, "webhook-id is the event id"
    return event


def test_delivery_to_a_receiver_retries_logs_and_redelivers(mint_token: Mint, tag: str) -> None:
    """A server of its own lets webhooks point at 127.0.0.1 and retries after
    200 ms: the receiver answers the first attempt 500, the retry 200."""
    db = f"crm_scratch_py_hook_{tag}"
    rx = Receiver([500, 200])
    server: OwnServer | None = None
    try:
        server = OwnServer(
            db, {"CRM_WEBHOOKS_ALLOW_PRIVATE": "true", "CRM_WEBHOOKS_RETRY_SCHEDULE": "200ms"}
        )
        with crm_client.connect(server.target, mint_token(f"py-deliver-{tag}", "webhook-tester")) as c:
            hook = c.webhooks.create({"url": rx.url, "resource_types": ["account"]})
            account = c.customer.accounts.create({"name": f"Hooked {tag}"})

            eventually("two attempts", lambda: True if len(rx.got) >= 2 else None)
            first, second = (verified(r, hook.secret) for r in rx.got[:2])
            assert second == first, "the same event, the same body"
            event_id = rx.got[0][0]["webhook-id"]
            assert rx.got[1][0]["webhook-id"] == event_id
            assert (first["resource_type"], first["operation"], first["record_id"]) == (
                "account", "created", account.id
            )  # fmt: skip
            assert first["sequence"] == "1", "int64 as a JSON string"
            assert first["record"]["name"] == f"Hooked {tag}"

            # The log, newest first: the success, then the failure (with its retry time).
            log = eventually(
                "two log entries",
                lambda: d if len(d := list(c.webhooks.list_deliveries(hook.id).deliveries)) >= 2 else None,
            )
            assert [(d.event_id, d.sequence, d.attempt, d.status_code) for d in log] == [
                (event_id, 1, 2, 200),
                (event_id, 1, 1, 500),
            ]
            ok, failed = log
            assert ok.error == "" and not ok.HasField("next_attempt_at"), "delivered: not tried again"
            assert failed.error != "" and failed.HasField("next_attempt_at")
            assert failed.attempted_at.ToDatetime() <= ok.attempted_at.ToDatetime()

            # Paging through the log one entry at a time.
            p1 = c.webhooks.list_deliveries(hook.id, page_size=1)
            assert len(p1.deliveries) == 1 and p1.next_page_token != ""
            p2 = c.webhooks.list_deliveries(hook.id, page_size=1, page_token=p1.next_page_token)
            assert [d.attempt for d in [*p1.deliveries, *p2.deliveries]] == [2, 1]
            assert p2.next_page_token == ""

            # Redelivery from 0: the same event again, signed afresh.
            again = c.webhooks.redeliver(hook.id, 0)
            assert (again.after_sequence, again.latest_sequence) == (0, 1)
            eventually("the redelivery", lambda: True if len(rx.got) >= 3 else None)
            assert verified(rx.got[2], hook.secret) == first
            assert rx.got[2][0]["webhook-id"] == event_id
            after = eventually(
                "three log entries",
                lambda: d if len(d := list(c.webhooks.list_deliveries(hook.id).deliveries)) >= 3 else None,
            )
            assert [d.status_code for d in after] == [200, 200, 500]
            assert after[0].attempt == 1, "a redelivery starts counting attempts again"
    finally:
        if server is not None:
            server.stop()
        drop_database(db)
        rx.close()
