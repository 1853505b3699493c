"""Python client for the crm gRPC API (crm.v1).

    import os
    import crm_client
    client = crm_client.connect("localhost:50051", os.environ["CRM_TOKEN"])   # a JWT
    page = client.customer.accounts.list(page_size=10)
    accounts = client.customer.accounts.batch_create([{"name": "A"}, {"name": "B"}])
    result = client.customer.accounts.upsert({"external_id": "erp-1", "name": "A"})
    for event in client.changes.watch(after_sequence=0):   # the change feed
        ...

Generated message and stub modules live in ``crm_client.v1``
(``crm_client.v1.account_pb2`` etc.).
"""

from crm_client.client import (
    BatchUpsertResult,
    Changes,
    ChangeWatch,
    Client,
    Customer,
    ListResource,
    ReconnectInfo,
    Resource,
    UpdateItem,
    UpsertItem,
    UpsertResult,
    connect,
    is_transient,
)
from crm_client.errors import CrmError

__all__ = [
    "BatchUpsertResult",
    "ChangeWatch",
    "Changes",
    "Client",
    "CrmError",
    "Customer",
    "ListResource",
    "ReconnectInfo",
    "Resource",
    "UpdateItem",
    "UpsertItem",
    "UpsertResult",
    "connect",
    "is_transient",
]
