"""Webhook definitions through crm_client, against a real crm server (see
conftest.py). The server refuses private targets, so these webhooks name a
public address literal."""

from __future__ import annotations

import base64

import grpc
import pytest

import crm_client
from crm_client import CrmError


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
