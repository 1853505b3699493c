"""Python client for the crm gRPC API (crm.v1).

    import crm_client
    client = crm_client.connect("localhost:50051", token)
    page = client.customer.accounts.list(page_size=10)

Generated message and stub modules live in ``crm_client.v1``
(``crm_client.v1.account_pb2`` etc.).
"""

from crm_client.client import (
    Client,
    Customer,
    ListResource,
    Resource,
    connect,
)
from crm_client.errors import CrmError

__all__ = ["Client", "CrmError", "Customer", "ListResource", "Resource", "connect"]
