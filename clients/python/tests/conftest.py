"""Fixtures for the tests against a real crm server.

Run them through scripts/py-client.sh (which uses scripts/with-server.sh), or
by hand with CRM_GRPC (host:port) and CRM_TOKEN set; CRM_BIN (default
target/debug/crm, relative to the repository root) mints other tenants' tokens.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import crm_client

REPO = Path(__file__).resolve().parents[3]


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests via scripts/py-client.sh")
    return value


@pytest.fixture(scope="session")
def target() -> str:
    return _env("CRM_GRPC")


@pytest.fixture(scope="session")
def client(target: str) -> Iterator[crm_client.Client]:
    with crm_client.connect(target, _env("CRM_TOKEN")) as c:
        yield c


@pytest.fixture(scope="session")
def mint_token() -> Callable[[str, str], str]:
    bin_path = Path(os.environ.get("CRM_BIN") or "target/debug/crm")
    if not bin_path.is_absolute():
        bin_path = REPO / bin_path

    def mint(tenant: str, sub: str = "py-tester") -> str:
        out = subprocess.run(
            [str(bin_path), "token", "--tenant", tenant, "--sub", sub],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    return mint


@pytest.fixture
def tag() -> str:
    """A tag unique to one test, to filter its own records out of the shared tenant."""
    return "t" + uuid.uuid4().hex[:12]
