"""Batch writes, upsert and external_id through crm_client, against a real
crm server (see conftest.py)."""

from __future__ import annotations

import uuid

import grpc
import pytest

import crm_client
from crm_client import CrmError, UpdateItem, UpsertItem, UpsertResult
from crm_client.v1 import account_pb2


def test_batch_create_then_batch_get_in_order(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    created = accounts.batch_create(
        [{"name": "B1", "tags": [tag]}, account_pb2.Account(name="B2", tags=[tag]), {"name": "B3", "tags": [tag]}],
        request_id=str(uuid.uuid4()),
    )
    assert [a.name for a in created] == ["B1", "B2", "B3"]
    assert all(a.id.startswith("acc_") and a.version == 1 for a in created)

    ids = [created[2].id, created[0].id, created[1].id, created[2].id]
    got = accounts.batch_get(ids)
    assert [a.id for a in got] == ids  # in the order asked, an id twice returned twice
    assert isinstance(got[0], account_pb2.Account)

    with pytest.raises(CrmError) as missing:
        accounts.batch_get([created[0].id, "acc_00000000000000000000000000"])
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_batch_create_is_idempotent(client: crm_client.Client, tag: str) -> None:
    request_id = str(uuid.uuid4())
    first = client.customer.accounts.batch_create([{"name": "Idem", "tags": [tag]}], request_id=request_id)
    again = client.customer.accounts.batch_create([{"name": "Idem", "tags": [tag]}], request_id=request_id)
    assert [a.id for a in again] == [a.id for a in first]


def test_upsert_creates_then_updates(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    ext = f"erp-{tag}"
    first = accounts.upsert({"external_id": ext, "name": "Up", "industry": "saas", "phone": "1"})
    assert isinstance(first, UpsertResult)
    assert first.created is True
    assert (first.record.external_id, first.record.version) == (ext, 1)

    # a dict: its keys are the mask (phone cleared, industry kept)
    second = accounts.upsert({"externalId": ext, "name": "Up2", "phone": ""}, request_id=str(uuid.uuid4()))
    assert second.created is False
    assert second.record.id == first.record.id
    assert (second.record.name, second.record.phone, second.record.industry) == ("Up2", "", "saas")
    assert second.record.version == 2

    # an explicit mask: only the masked field is written
    third = accounts.upsert(
        account_pb2.Account(external_id=ext, name="Ignored", description="Hi"), update_mask=["description"]
    )
    assert third.created is False
    assert (third.record.name, third.record.description, third.record.version) == ("Up2", "Hi", 3)

    with pytest.raises(CrmError) as stale:
        accounts.upsert({"external_id": ext, "name": "x", "version": 1})
    assert stale.value.code == grpc.StatusCode.ABORTED


def test_batch_upsert_created_list(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    existing = accounts.upsert({"external_id": f"{tag}-a", "name": "A"})
    assert existing.created
    res = accounts.batch_upsert(
        [
            {"external_id": f"{tag}-a", "name": "A2"},
            account_pb2.Account(external_id=f"{tag}-b", name="B"),
            UpsertItem({"external_id": f"{tag}-c", "name": "C", "industry": "x"}, update_mask=["industry"]),
        ],
        request_id=str(uuid.uuid4()),
    )
    assert res.created == [False, True, True]
    assert [a.name for a in res.records] == ["A2", "B", "C"]
    assert (res.records[0].id, res.records[0].version) == (existing.record.id, 2)


def test_invalid_item_fails_the_whole_batch(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    with pytest.raises(CrmError) as err:
        accounts.batch_create(
            [
                {"name": "Ok", "tags": [tag]},
                {"name": "Bad", "website": "not a url", "tags": [tag]},
                {"name": "Ok2", "tags": [tag]},
            ]
        )
    e = err.value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in e.field_violations]
    assert "requests[1].account.website" in fields
    assert all(f.startswith("requests[1].") for f in fields), fields
    page = accounts.list(filter=f"tags:{tag}", show_deleted=True)
    assert list(page.accounts) == []  # nothing written

    with pytest.raises(CrmError) as upsert_err:
        accounts.batch_upsert(
            [
                {"external_id": f"{tag}-ok", "name": "ok"},
                {"external_id": f"{tag}-bad", "name": "bad", "website": "not a url"},
            ]
        )
    assert upsert_err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].account.website" in [f for f, _ in upsert_err.value.field_violations]
    assert list(accounts.list(filter=f'external_id = "{tag}-ok"').accounts) == []


def test_batch_update_and_batch_delete(client: crm_client.Client, tag: str) -> None:
    accounts = client.customer.accounts
    a, b = accounts.batch_create([{"name": "U1", "tags": [tag]}, {"name": "U2", "tags": [tag]}])

    updated = accounts.batch_update(
        [
            UpdateItem(a.id, {"industry": "saas"}, version=1),
            UpdateItem(b.id, account_pb2.Account(industry="retail", phone="ignored"), update_mask=["industry"]),
        ],
        request_id=str(uuid.uuid4()),
    )
    assert [(x.id, x.industry, x.version) for x in updated] == [(a.id, "saas", 2), (b.id, "retail", 2)]
    assert updated[1].phone == ""

    with pytest.raises(CrmError) as stale:
        accounts.batch_update(
            [UpdateItem(a.id, {"industry": "new"}, version=2), UpdateItem(b.id, {"industry": "new"}, version=1)]
        )
    assert stale.value.code == grpc.StatusCode.ABORTED
    after = accounts.batch_get([a.id, b.id])
    assert [(x.industry, x.version) for x in after] == [("saas", 2), ("retail", 2)]  # nothing written

    deleted = accounts.batch_delete([b.id, a.id], request_id=str(uuid.uuid4()))
    assert [(x.id, x.is_deleted) for x in deleted] == [(b.id, True), (a.id, True)]
    with pytest.raises(CrmError):
        accounts.batch_delete([a.id])  # already deleted: the batch fails
    assert accounts.get(a.id).is_deleted


def test_other_entities(client: crm_client.Client, tag: str) -> None:
    c = client.customer
    (acc,) = c.accounts.batch_create([{"name": "Ent", "tags": [tag]}])
    contacts = c.contacts.batch_create(
        [{"first_name": "Ada", "account_id": acc.id}, {"first_name": "Bob", "account_id": acc.id}]
    )
    assert [x.first_name for x in c.contacts.batch_get([x.id for x in contacts])] == ["Ada", "Bob"]
    assert c.contacts.upsert({"external_id": f"{tag}-c", "first_name": "Cy"}).created

    (deal,) = c.deals.batch_create([{"name": "D", "account_id": acc.id}])
    assert c.deals.batch_upsert([{"external_id": f"{tag}-d", "name": "D2", "account_id": acc.id}]).created == [True]

    (quote,) = c.quotes.batch_create([{"account_id": acc.id, "currency": "USD"}])
    items = c.line_items.batch_create(
        [{"quote_id": quote.id, "quantity": 1, "unit_price": 10}, {"quote_id": quote.id, "quantity": 2, "unit_price": 5}]
    )
    assert len(c.line_items.batch_get([x.id for x in items])) == 2

    acts = c.activities.batch_create(
        [{"type": "note", "subject": "N1", "account_id": acc.id}, {"type": "call", "subject": "N2", "account_id": acc.id}]
    )
    assert [x.subject for x in c.activities.batch_get([x.id for x in reversed(acts)])] == ["N2", "N1"]
    assert not hasattr(c.activities, "upsert")
    assert c.deals.batch_get([deal.id])[0].name == "D"
