"""crm_client against a real crm server (see conftest.py)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

import grpc
import pytest

import crm_client
from crm_client import CrmError
from crm_client.v1 import account_pb2, deal_pb2


def new_account(client: crm_client.Client, tag: str, name: str = "Acme") -> account_pb2.Account:
    return client.customer.accounts.create({"name": name, "tags": [tag]})


# --- lists ---------------------------------------------------------------


def test_accounts_list_with_no_arguments(client: crm_client.Client, tag: str) -> None:
    created = new_account(client, tag, "Listed Inc")
    page = client.customer.accounts.list()
    assert isinstance(page, account_pb2.ListAccountsResponse)
    # newest first, default page 50: the record just created is on page one
    assert page.accounts[0].id == created.id
    assert created.id in [a.id for a in page.accounts]


def test_list_all_follows_pages(client: crm_client.Client, tag: str) -> None:
    ids = [new_account(client, tag, f"Paged {i}").id for i in range(5)]
    accounts = client.customer.accounts

    first = accounts.list(filter=f"tags:{tag}", page_size=2, order_by="name")
    assert [a.name for a in first.accounts] == ["Paged 0", "Paged 1"]
    assert first.next_page_token != ""

    pages = 0
    token = ""
    while True:
        page = accounts.list(filter=f"tags:{tag}", page_size=2, order_by="name", page_token=token)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3

    seen = list(accounts.list_all(filter=f"tags:{tag}", page_size=2, order_by="name"))
    assert [a.name for a in seen] == [f"Paged {i}" for i in range(5)]
    assert sorted(a.id for a in seen) == sorted(ids)


# --- CRUD per entity -----------------------------------------------------


def test_account_crud(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    acc = accounts.create(
        {"name": "Globex", "domain": "globex.example", "tags": [tag], "customFields": {"tier": "gold"}}
    )
    assert acc.id.startswith("acc_") and acc.version == 1 and acc.name == "Globex"
    assert acc.custom_fields["tier"] == "gold"

    got = accounts.get(acc.id)
    assert (got.id, got.domain, got.version) == (acc.id, "globex.example", 1)

    # dict keys are the mask: legal_name written, name untouched
    upd = accounts.update(acc.id, {"legal_name": "Globex Corp"}, version=1)
    assert (upd.legal_name, upd.name, upd.version) == ("Globex Corp", "Globex", 2)

    # explicit mask: only the masked field is written
    upd = accounts.update(
        acc.id, {"name": "Ignored", "description": "Hi"}, version=2, update_mask=["description"]
    )
    assert (upd.name, upd.description, upd.version) == ("Globex", "Hi", 3)

    # a message with no mask: the populated fields are written
    upd = accounts.update(acc.id, account_pb2.Account(name="Globex 2"))
    assert (upd.name, upd.legal_name, upd.version) == ("Globex 2", "Globex Corp", 4)

    # a key given with an empty value clears the field
    upd = accounts.update(acc.id, {"description": ""})
    assert upd.description == "" and upd.version == 5

    deleted = accounts.delete(acc.id, version=5)
    assert deleted.is_deleted and deleted.version == 6
    assert acc.id not in [a.id for a in accounts.list(filter=f"tags:{tag}").accounts]
    assert acc.id in [a.id for a in accounts.list(filter=f"tags:{tag}", show_deleted=True).accounts]
    assert accounts.get(acc.id).is_deleted

    restored = accounts.undelete(acc.id)
    assert not restored.is_deleted and restored.version == 7


def test_contact_crud(client: crm_client.Client, tag: str) -> None:
    acc = new_account(client, tag)
    contacts = client.customer.contacts
    con = contacts.create(
        {"account_id": acc.id, "first_name": "Hank", "last_name": "Scorpio",
         "email": f"hank-{tag}@globex.example", "tags": [tag]}
    )  # fmt: skip
    assert con.id.startswith("con_") and con.display_name == "Hank Scorpio"
    assert contacts.get(con.id).email == f"hank-{tag}@globex.example"
    upd = contacts.update(con.id, {"jobTitle": "CEO"}, version=con.version)
    assert upd.job_title == "CEO" and upd.version == con.version + 1
    assert [c.id for c in contacts.list(filter=f"tags:{tag}").contacts] == [con.id]
    assert contacts.delete(con.id, version=upd.version).is_deleted
    assert list(contacts.list_all(filter=f"tags:{tag}")) == []


def test_deal_crud(client: crm_client.Client, tag: str) -> None:
    acc = new_account(client, tag)
    deals = client.customer.deals
    deal = deals.create(
        deal_pb2.Deal(account_id=acc.id, name="Big one", stage="proposal", currency="USD", tags=[tag])
    )
    assert deal.id.startswith("deal_") and deal.stage == "proposal"
    assert deals.get(deal.id).name == "Big one"
    upd = deals.update(deal.id, {"stage": "negotiation", "value": 1234.5}, version=deal.version)
    assert upd.stage == "negotiation" and upd.value == 1234.5
    assert [d.id for d in deals.list(filter=f"tags:{tag}").deals] == [deal.id]
    assert deals.delete(deal.id).is_deleted


def test_activity_list_get_create(client: crm_client.Client, tag: str) -> None:
    acc = new_account(client, tag)
    activities = client.customer.activities
    act = activities.create(
        {"account_id": acc.id, "type": "call", "subject": "Pricing call", "tags": [tag]}
    )
    assert act.id.startswith("act_") and act.type == "call"
    assert activities.get(act.id).subject == "Pricing call"
    assert [a.id for a in activities.list(filter=f"tags:{tag}").activities] == [act.id]
    assert [a.id for a in activities.list_all(filter=f"tags:{tag}")] == [act.id]
    # activities are append-only in crm.v1: the wrapper offers no update/delete
    assert not hasattr(activities, "update") and not hasattr(activities, "delete")


def test_quote_and_line_items_update_totals(client: crm_client.Client, tag: str) -> None:
    acc = new_account(client, tag)
    quotes, items = client.customer.quotes, client.customer.line_items
    quote = quotes.create({"account_id": acc.id, "name": "Year one", "currency": "USD", "tags": [tag]})
    assert quote.id.startswith("qte_") and quote.status == "draft"
    assert quotes.get(quote.id).name == "Year one"

    seats = items.create(
        {"quote_id": quote.id, "description": "Seats", "quantity": 3, "unit_price": 19.99}
    )
    onboarding = items.create(
        {"quote_id": quote.id, "description": "Onboarding", "quantity": 1, "unit_price": 500,
         "discount": 10, "discount_type": "percent"}
    )  # fmt: skip
    assert seats.id.startswith("li_") and math.isclose(seats.total, 59.97)
    assert math.isclose(onboarding.total, 450.0)

    q = quotes.get(quote.id)
    assert math.isclose(q.total, 509.97) and math.isclose(q.value, 509.97)
    assert [(li.id, li.description) for li in q.line_items] == [
        (seats.id, "Seats"),
        (onboarding.id, "Onboarding"),
    ]
    assert q.version > quote.version  # rollups bump the quote's version

    listed = items.list(filter=f'quote_id = "{quote.id}"', order_by="total desc")
    assert [li.id for li in listed.line_items] == [onboarding.id, seats.id]

    upd = items.update(seats.id, {"quantity": 5}, version=seats.version)
    assert math.isclose(upd.total, 99.95)
    assert math.isclose(quotes.get(quote.id).total, 549.95)

    items.delete(onboarding.id)
    q = quotes.get(quote.id)
    assert math.isclose(q.total, 99.95) and [li.id for li in q.line_items] == [seats.id]

    q = quotes.update(quote.id, {"status": "sent"}, version=q.version)
    assert q.status == "sent"
    assert quotes.delete(quote.id, version=q.version).is_deleted


# --- errors --------------------------------------------------------------


def test_stale_version_is_aborted(client: crm_client.Client, tag: str) -> None:
    acc = new_account(client, tag)
    client.customer.accounts.update(acc.id, {"name": "v2"}, version=1)
    with pytest.raises(CrmError) as err:
        client.customer.accounts.update(acc.id, {"name": "v3"}, version=1)
    e = err.value
    assert e.code == grpc.StatusCode.ABORTED
    assert e.reason == "VERSION_MISMATCH" and e.domain == "crm.v1"
    assert e.metadata.get("expected_version") == "1" and e.metadata.get("current_version") == "2"
    with pytest.raises(CrmError) as err:
        client.customer.accounts.delete(acc.id, version=1)
    assert err.value.code == grpc.StatusCode.ABORTED
    assert client.customer.accounts.get(acc.id).name == "v2"


def test_validation_error_names_the_fields(client: crm_client.Client) -> None:
    with pytest.raises(CrmError) as err:
        client.customer.accounts.create({"website": "nope", "annual_revenue": -1})
    e = err.value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.reason == "VALIDATION_FAILED"
    fields = {f for f, _ in e.field_violations}
    assert {"account.website", "account.annual_revenue", "account.name"} <= fields
    assert dict(e.field_violations)["account.name"] == "is required"
    assert "account.website" in e.message


def test_bad_filter_is_invalid_argument(client: crm_client.Client) -> None:
    with pytest.raises(CrmError) as err:
        client.customer.deals.list(filter="name =")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.value.field_violations] == ["filter"]


def test_other_tenant_sees_not_found(
    client: crm_client.Client, target: str, mint_token: Callable[[str, str], str], tag: str
) -> None:
    acc = new_account(client, tag, "Tenant A's")
    with crm_client.connect(target, mint_token(f"py-other-{tag}", "intruder")) as other:
        for call in (
            lambda: other.customer.accounts.get(acc.id),
            lambda: other.customer.accounts.update(acc.id, {"name": "hijacked"}),
            lambda: other.customer.accounts.delete(acc.id),
        ):
            with pytest.raises(CrmError) as err:
                call()
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            assert err.value.reason == "RESOURCE_NOT_FOUND"
        assert list(other.customer.accounts.list_all(filter=f"tags:{tag}")) == []
    again = client.customer.accounts.get(acc.id)
    assert (again.name, again.version, again.is_deleted) == ("Tenant A's", 1, False)


def test_token_may_be_a_function(target: str, mint_token: Callable[[str, str], str], tag: str) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return mint_token(f"py-fn-{tag}", "fn")

    with crm_client.connect(target, token) as c:
        acc = c.customer.accounts.create({"name": "Fn"})
        assert c.customer.accounts.get(acc.id).tenant_id == f"py-fn-{tag}"
    assert len(calls) == 2


def test_missing_token_is_unauthenticated(target: str) -> None:
    with crm_client.connect(target) as anon:
        with pytest.raises(CrmError) as err:
            anon.customer.accounts.list()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.reason == "MISSING_CREDENTIALS"


def test_request_id_makes_create_idempotent(client: crm_client.Client, tag: str) -> None:
    rid = str(uuid.uuid4())
    a = client.customer.accounts.create({"name": "Once", "tags": [tag]}, request_id=rid)
    b = client.customer.accounts.create({"name": "Once", "tags": [tag]}, request_id=rid)
    assert a.id == b.id
    assert len(list(client.customer.accounts.list_all(filter=f"tags:{tag}"))) == 1
    with pytest.raises(CrmError) as err:
        client.customer.accounts.create({"name": "Different", "tags": [tag]}, request_id=rid)
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.reason == "REQUEST_ID_REUSED"
