"""Python client for the crm gRPC API (crm.v1).

    import crm_client
    client = crm_client.connect("localhost:50051", token)
    page = client.customer.accounts.list(page_size=10)
    for event in client.changes.watch(after_sequence=0):   # the change feed
        ...

Generated message and stub modules live in ``crm_client.v1``
(``crm_client.v1.account_pb2`` etc.).
"""

from crm_client.client import (
    Changes,
    ChangeWatch,
    Client,
    Customer,
    ListResource,
    ReconnectInfo,
    Resource,
    connect,
    is_transient,
)
from crm_client.errors import CrmError

__all__ = [
    "ChangeWatch",
    "Changes",
    "Client",
    "CrmError",
    "Customer",
    "ListResource",
    "ReconnectInfo",
    "Resource",
    "connect",
    "is_transient",
]
