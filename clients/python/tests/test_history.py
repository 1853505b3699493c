"""Field history and erasure through crm_client, against a real crm server
(see conftest.py). Each test uses tenants of its own, so that its records'
histories and purges touch nothing another test reads; purging needs a token
whose scope claim holds crm:purge, minted with ``crm token --scope``."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

import crm_client
from crm_client import CrmError
from crm_client.v1 import contact_pb2, history_pb2

from conftest import crm_bin

UNKNOWN = "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV"
Tenant = Callable[..., crm_client.Client]


def mint(tenant: str, scope: str | None = None) -> str:
    args = [str(crm_bin()), "token", "--tenant", tenant, "--sub", "history-tester"]
    if scope is not None:
        args += ["--scope", scope]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def tenant(target: str, tag: str) -> Iterator[Tenant]:
    """Clients for tenants of the test's own; ``scope`` sets the token's scope claim."""
    opened: list[crm_client.Client] = []

    def make(name: str, scope: str | None = None) -> crm_client.Client:
        c = crm_client.connect(target, mint(f"py-{name}-{tag}", scope))
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def value(v: struct_pb2.Value) -> Any:
    """A history entry's old_value / new_value (a google.protobuf.Value) as Python."""
    return json_format.MessageToDict(v)


def brief(e: history_pb2.HistoryEntry) -> tuple[int, str, Any, Any]:
    return (e.record_version, e.field, value(e.old_value), value(e.new_value))


def fields(err: CrmError) -> list[str]:
    return [field for field, _ in err.field_violations]


def test_list_after_a_create_and_an_update(tenant: Tenant) -> None:
    own = tenant("list")
    request_id = str(uuid.uuid4())
    made = own.customer.accounts.create(
        {"name": "Before", "custom_fields": {"tier": "gold"}, "employee_count": 5}, request_id=request_id
    )
    changed = own.customer.accounts.update(
        made.id,
        {"name": "After", "custom_fields": {"tier": "platinum"}},
        update_mask=["name", "custom_fields.tier"],
    )
    assert changed.version == 2

    names = own.history.list("accounts", made.id, fields=["name"])
    assert [brief(e) for e in names.entries] == [
        (2, "name", "Before", "After"),
        (1, "name", None, "Before"),
    ]
    assert names.next_page_token == ""
    update, create = names.entries
    assert update.changed_by == "history-tester"
    assert (update.request_id, create.request_id) == ("", request_id)
    assert update.app_id == ""
    assert update.changed_at == changed.updated_at
    assert create.changed_at == made.updated_at

    # Everything: by version descending, then by field name; the server's own
    # fields and each custom field key are entries too.
    entries = list(own.history.list("accounts", made.id).entries)
    order = [(e.record_version, e.field) for e in entries]
    assert order == sorted(order, key=lambda vf: (-vf[0], vf[1]))
    v2 = [e.field for e in entries if e.record_version == 2]
    for f in ("custom_fields.tier", "name", "updated_at", "version"):
        assert f in v2
    assert "employee_count" not in v2, "an unchanged field has no entry"
    tier = next(e for e in entries if e.record_version == 2 and e.field == "custom_fields.tier")
    assert (value(tier.old_value), value(tier.new_value)) == ("gold", "platinum")
    employees = next(e for e in entries if e.field == "employee_count")
    assert brief(employees) == (1, "employee_count", None, 5)

    custom = own.history.list("accounts", made.id, fields=["custom_fields.tier", "employee_count"])
    assert [(e.record_version, e.field) for e in custom.entries] == [
        (2, "custom_fields.tier"),
        (1, "custom_fields.tier"),
        (1, "employee_count"),
    ]


def test_pages_and_list_all(tenant: Tenant) -> None:
    own = tenant("pages")
    acc = own.customer.accounts.create({"name": "A"})
    deal = own.customer.deals.create({"account_id": acc.id, "name": "D", "stage": "qualification"})
    version = deal.version
    for stage in ("proposal", "negotiation", "closed_won"):
        version = own.customer.deals.update(deal.id, {"stage": stage}, version=version, update_mask=["stage"]).version

    p1 = own.history.list("deals", deal.id, fields=["stage"], page_size=3)
    assert [value(e.new_value) for e in p1.entries] == ["closed_won", "negotiation", "proposal"]
    assert p1.next_page_token != ""
    p2 = own.history.list("deals", deal.id, fields=["stage"], page_size=3, page_token=p1.next_page_token)
    assert [brief(e) for e in p2.entries] == [(1, "stage", None, "qualification")]
    assert p2.next_page_token == ""

    every = list(own.history.list_all("deals", deal.id, page_size=2))
    assert every == list(own.history.list("deals", deal.id, page_size=1000).entries)
    # A token is bound to its list: other fields are INVALID_ARGUMENT.
    with pytest.raises(CrmError) as other:
        own.history.list("deals", deal.id, fields=["name"], page_token=p1.next_page_token)
    assert other.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_at_returns_the_record_as_it_was(tenant: Tenant) -> None:
    own = tenant("at")
    made = own.customer.contacts.create({"first_name": "Ada", "last_name": "Before"})
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    changed = own.customer.contacts.update(made.id, {"last_name": "After"}, update_mask=["last_name"])

    # get's JSON is the REST one: proto field names, every field.
    then = own.history.at("contacts", made.id, between)
    assert (then["id"], then["last_name"], then["version"]) == (made.id, "Before", 1)
    assert own.history.at("contacts", made.id, made.updated_at)["last_name"] == "Before"
    assert own.history.at("contacts", made.id, between.replace(tzinfo=None))["last_name"] == "Before"
    now = own.history.at("contacts", made.id, changed.updated_at)
    assert (now["last_name"], now["version"]) == ("After", 2)
    # ... so it parses into the typed record.
    assert json_format.ParseDict(then, contact_pb2.Contact()) == made
    assert json_format.ParseDict(now, contact_pb2.Contact()) == own.customer.contacts.get(made.id)

    with pytest.raises(CrmError) as before:
        own.history.at("contacts", made.id, datetime.now(timezone.utc) - timedelta(hours=1))
    assert before.value.code == grpc.StatusCode.NOT_FOUND


def test_bad_arguments_and_other_tenants(tenant: Tenant) -> None:
    owner = tenant("owner")
    other = tenant("other")
    acc = owner.customer.accounts.create({"name": "Mine"})

    with pytest.raises(CrmError) as field:
        owner.history.list("accounts", acc.id, fields=["name", "nope"])
    assert field.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(field.value) == ["fields[1]"]
    with pytest.raises(CrmError) as size:
        owner.history.list("accounts", acc.id, page_size=-1)
    assert (size.value.code, fields(size.value)) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_size"])
    with pytest.raises(CrmError) as collection:
        owner.history.list("webhooks", acc.id)
    assert (collection.value.code, fields(collection.value)) == (grpc.StatusCode.INVALID_ARGUMENT, ["collection"])
    with pytest.raises(CrmError) as token:
        owner.history.list("accounts", acc.id, page_token="not-a-token")
    assert token.value.code == grpc.StatusCode.INVALID_ARGUMENT

    now = datetime.now(timezone.utc)
    for what, call in [
        ("another tenant's list", lambda: other.history.list("accounts", acc.id)),
        ("another tenant's at", lambda: other.history.at("accounts", acc.id, now)),
        ("list of an unknown id", lambda: owner.history.list("accounts", UNKNOWN)),
        ("at of an unknown id", lambda: owner.history.at("accounts", UNKNOWN, now)),
    ]:
        with pytest.raises(CrmError) as err:
            call()
        assert err.value.code == grpc.StatusCode.NOT_FOUND, what

    # Soft-deleted records keep and show their history.
    owner.customer.accounts.delete(acc.id)
    deleted = owner.history.list("accounts", acc.id, fields=["is_deleted"]).entries
    assert [(e.record_version, e.field, value(e.new_value)) for e in deleted] == [(2, "is_deleted", True)]


def test_purge_is_refused_without_the_scope(client: crm_client.Client, tenant: Tenant) -> None:
    plain = tenant("refused")
    other_scope = tenant("refused", "crm:read crm:write")
    acc = plain.customer.accounts.create({"name": "Keep"})
    for c in (plain, other_scope, client):
        with pytest.raises(CrmError) as err:
            c.erasure.purge("accounts", acc.id)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.reason == "MISSING_SCOPE"
        assert err.value.metadata["required_scope"] == "crm:purge"
    assert plain.customer.accounts.get(acc.id).name == "Keep"


def test_purge_with_the_scope_erases_the_record(tenant: Tenant) -> None:
    own = tenant("purge")
    purger = tenant("purge", "crm:purge")
    acc = own.customer.accounts.create({"name": "Erase me"}, request_id=str(uuid.uuid4()))
    own.customer.accounts.update(acc.id, {"name": "Erase me too"}, update_mask=["name"])

    erased = purger.erasure.purge("accounts", acc.id)
    assert erased["records"] == 1
    assert erased["history"] > 0
    assert erased["idempotent_responses"] == 1

    for what, call in [
        ("get", lambda: own.customer.accounts.get(acc.id)),
        ("history", lambda: own.history.list("accounts", acc.id)),
        ("a second purge", lambda: purger.erasure.purge("accounts", acc.id)),
    ]:
        with pytest.raises(CrmError) as err:
            call()
        assert err.value.code == grpc.StatusCode.NOT_FOUND, what


def test_live_children_need_cascade(tenant: Tenant) -> None:
    own = tenant("cascade", "crm:purge crm:write")
    acc = own.customer.accounts.create({"name": "Parent"})
    contact = own.customer.contacts.create({"account_id": acc.id, "first_name": "Child", "last_name": "One"})

    with pytest.raises(CrmError) as refused:
        own.erasure.purge("accounts", acc.id)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "HAS_CHILDREN"
    assert own.customer.contacts.get(contact.id).first_name == "Child"

    erased = own.erasure.purge("accounts", acc.id, cascade=True)
    assert erased["records"] == 2
    for get in (lambda: own.customer.contacts.get(contact.id), lambda: own.customer.accounts.get(acc.id)):
        with pytest.raises(CrmError) as gone:
            get()
        assert gone.value.code == grpc.StatusCode.NOT_FOUND
