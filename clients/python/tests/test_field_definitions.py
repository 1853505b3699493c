"""Custom-field definitions through crm_client, against a real crm server
(see conftest.py). A definition applies to every write of its tenant: on the
shared tenant only definitions of keys unique to the test that nothing
requires; the tests that write records, or that need to know every
definition and record of a tenant, use a tenant of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

import crm_client
from crm_client import CrmError

Mint = Callable[[str, str], str]
UNKNOWN = "fld_01ARZ3NDEKTSV4RRFFQ69G5FAV"


def fields(err: CrmError) -> list[str]:
    return [field for field, _ in err.field_violations]


def test_create_get_list_update_delete(client: crm_client.Client, tag: str) -> None:
    key = f"fd_{tag}"
    made = client.field_definitions.create(
        {"resource_type": "deal", "key": key, "label": "Code", "type": "string", "max_length": 20}
    )
    assert made.id.startswith("fld_") and len(made.id) == 30
    assert made.version == 1
    assert made.HasField("max_length") and made.max_length == 20
    assert not made.HasField("minimum"), "an unset bound stays unset"
    assert made.index_state in ("building", "ready")
    assert made.created_by != "" and made.updated_by == made.created_by
    got = client.field_definitions.get(made.id)
    assert (got.id, got.resource_type, got.key, got.type, got.label, got.version) == (
        made.id, "deal", key, "string", "Code", 1
    )  # fmt: skip
    deals = client.field_definitions.list(resource_type="deal", page_size=1000).field_definitions
    assert any(d.id == made.id for d in deals)
    quotes = client.field_definitions.list(resource_type="quote", page_size=1000).field_definitions
    assert not any(d.id == made.id for d in quotes)

    relabeled = client.field_definitions.update(
        {"id": made.id, "label": "Deal code", "version": got.version}, ["label"]
    )
    assert relabeled.label == "Deal code"
    assert relabeled.max_length == 20, "outside the mask: unchanged"
    assert relabeled.version == got.version + 1
    # A mask path naming a field the definition leaves unset clears it.
    unbounded = client.field_definitions.update({"id": made.id}, ["max_length"])
    assert not unbounded.HasField("max_length")
    assert unbounded.version == relabeled.version + 1
    with pytest.raises(CrmError) as stale:
        client.field_definitions.update({"id": made.id, "label": "x", "version": got.version})
    assert stale.value.code == grpc.StatusCode.ABORTED

    client.field_definitions.delete(made.id)
    with pytest.raises(CrmError) as gone:
        client.field_definitions.get(made.id)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(CrmError) as twice:
        client.field_definitions.delete(made.id)
    assert twice.value.code == grpc.StatusCode.NOT_FOUND


def test_invalid_definitions_name_the_field_and_a_key_twice_is_already_exists(
    client: crm_client.Client, tag: str
) -> None:
    with pytest.raises(CrmError) as line_item:
        client.field_definitions.create({"resource_type": "line_item", "key": f"li_{tag}", "type": "string"})
    assert line_item.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(line_item.value) == ["field_definition.resource_type"]
    with pytest.raises(CrmError) as no_options:
        client.field_definitions.create({"resource_type": "deal", "key": f"en_{tag}", "type": "enum"})
    assert no_options.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(no_options.value) == ["field_definition.options"]

    key = f"twice_{tag}"
    first = client.field_definitions.create({"resource_type": "contact", "key": key, "type": "boolean"})
    try:
        with pytest.raises(CrmError) as again:
            client.field_definitions.create({"resource_type": "contact", "key": key, "type": "string"})
        assert again.value.code == grpc.StatusCode.ALREADY_EXISTS
    finally:
        client.field_definitions.delete(first.id)


def test_bad_paging_is_invalid(client: crm_client.Client) -> None:
    with pytest.raises(CrmError) as bad_size:
        client.field_definitions.list(page_size=-1)
    assert bad_size.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(bad_size.value) == ["page_size"]
    with pytest.raises(CrmError) as bad_type:
        client.field_definitions.list(resource_type="line_item")
    assert bad_type.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(bad_type.value) == ["resource_type"]
    with pytest.raises(CrmError) as bad_token:
        client.field_definitions.list(page_token="not-a-token")
    assert bad_token.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def own_tenant(target: str, mint_token: Mint, tag: str) -> Iterator[Callable[[str], crm_client.Client]]:
    """Clients for tenants of their own (no other test defines fields or writes records there)."""
    clients: list[crm_client.Client] = []

    def make(name: str) -> crm_client.Client:
        c = crm_client.connect(target, mint_token(f"py-{name}-{tag}", "field-tester"))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_pages_go_by_resource_type_then_key(own_tenant: Callable[[str], crm_client.Client]) -> None:
    c = own_tenant("pages")
    for resource_type, key in [("contact", "b_key"), ("account", "z_key"), ("account", "a_key")]:
        c.field_definitions.create({"resource_type": resource_type, "key": key, "type": "boolean"})
    p1 = c.field_definitions.list(page_size=2)
    assert [f"{d.resource_type}.{d.key}" for d in p1.field_definitions] == ["account.a_key", "account.z_key"]
    assert p1.next_page_token != ""
    p2 = c.field_definitions.list(page_size=2, page_token=p1.next_page_token)
    assert [f"{d.resource_type}.{d.key}" for d in p2.field_definitions] == ["contact.b_key"]
    assert p2.next_page_token == ""
    accounts = c.field_definitions.list(resource_type="account").field_definitions
    assert [d.key for d in accounts] == ["a_key", "z_key"]
    assert p1.field_definitions[0].index_state == "none", "boolean needs no index of its own"


def test_writes_are_checked_and_a_violated_tightening_is_a_conflict(
    own_tenant: Callable[[str], crm_client.Client],
) -> None:
    c = own_tenant("check")
    seats = c.field_definitions.create(
        {"resource_type": "account", "key": "seats", "type": "integer", "minimum": 0}
    )
    assert seats.HasField("minimum") and seats.minimum == 0

    with pytest.raises(CrmError) as not_integer:
        c.customer.accounts.create({"name": "Text", "custom_fields": {"seats": "7"}})
    assert not_integer.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(not_integer.value) == ["account.custom_fields.seats"]

    small = c.customer.accounts.create({"name": "Small", "custom_fields": {"seats": 3}})
    mid = c.customer.accounts.create({"name": "Mid", "custom_fields": {"seats": 12}})
    big = c.customer.accounts.create({"name": "Big", "custom_fields": {"seats": 40}})

    # A dry run of an update (id and mask) ...
    capped = c.field_definitions.check({"id": seats.id, "maximum": 10}, ["maximum"])
    assert capped.violating_records == 2
    assert list(capped.sample_record_ids) == sorted([mid.id, big.id])
    roomy = c.field_definitions.check({"id": seats.id, "maximum": 50}, ["maximum"])
    assert (roomy.violating_records, list(roomy.sample_record_ids)) == (0, [])
    # ... and of a create (no id): no account has a plan yet.
    plan = c.field_definitions.check(
        {"resource_type": "account", "key": "plan", "type": "string", "required": True}
    )
    assert plan.violating_records == 3
    assert list(plan.sample_record_ids) == sorted([small.id, mid.id, big.id])

    # The tightening itself is refused, and changes nothing.
    with pytest.raises(CrmError) as conflict:
        c.field_definitions.update({"id": seats.id, "maximum": 10}, ["maximum"])
    assert conflict.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert conflict.value.reason == "FIELD_DEFINITION_CONFLICT"
    assert conflict.value.metadata["violating_records"] == "2"
    unchanged = c.field_definitions.get(seats.id)
    assert not unchanged.HasField("maximum")
    assert unchanged.version == seats.version
    with pytest.raises(CrmError) as refused:
        c.field_definitions.create({"resource_type": "account", "key": "plan", "type": "string", "required": True})
    assert refused.value.reason == "FIELD_DEFINITION_CONFLICT"
    assert refused.value.metadata["violating_records"] == "3"

    # Deleting the definition frees the key: the values stay in the records.
    c.field_definitions.delete(seats.id)
    free = c.customer.accounts.create({"name": "Free", "custom_fields": {"seats": "many"}})
    assert dict(free.custom_fields) == {"seats": "many"}
    assert dict(c.customer.accounts.get(big.id).custom_fields) == {"seats": 40}


def test_another_tenants_or_an_unknown_definition_is_not_found(
    own_tenant: Callable[[str], crm_client.Client],
) -> None:
    owner, other = own_tenant("owner"), own_tenant("other")
    definition = owner.field_definitions.create(
        {"resource_type": "deal", "key": "region", "type": "enum", "options": ["emea", "amer"]}
    )
    calls: list[tuple[str, Callable[[], object]]] = [
        ("another tenant's get", lambda: other.field_definitions.get(definition.id)),
        ("another tenant's update", lambda: other.field_definitions.update({"id": definition.id, "label": "x"})),
        (
            "another tenant's check",
            lambda: other.field_definitions.check({"id": definition.id, "options": ["emea"]}, ["options"]),
        ),
        ("another tenant's delete", lambda: other.field_definitions.delete(definition.id)),
        ("get of an unknown id", lambda: owner.field_definitions.get(UNKNOWN)),
        ("delete of an unknown id", lambda: owner.field_definitions.delete(UNKNOWN)),
    ]
    for what, call in calls:
        with pytest.raises(CrmError) as err:
            call()
        assert err.value.code == grpc.StatusCode.NOT_FOUND, what
    assert list(other.field_definitions.list().field_definitions) == []
    assert owner.field_definitions.get(definition.id).version == 1  # the owner still has it
