"""The committed generated code matches the pinned runtime (no server needed)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import google.protobuf

from crm_client.v1 import account_pb2, account_pb2_grpc

HERE = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    found = {}
    for line in (HERE / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def test_gencode_matches_pinned_protobuf() -> None:
    src = Path(account_pb2.__file__).read_text()
    gencode = re.search(r"# Protobuf Python Version: (\S+)", src)
    assert gencode is not None
    assert gencode.group(1) == pins()["protobuf"] == google.protobuf.__version__


def test_grpc_gencode_matches_pinned_grpcio() -> None:
    p = pins()
    assert account_pb2_grpc.GRPC_GENERATED_VERSION == p["grpcio"] == p["grpcio-tools"]
    assert version("grpcio") == p["grpcio"]


def test_imports_resolve_inside_the_package() -> None:
    from crm_client.v1 import quote_pb2

    # generated `from crm.v1 import ...` was rewritten: no top-level crm package needed
    assert quote_pb2.Quote.DESCRIPTOR.file.name == "crm/v1/quote.proto"
    assert "from crm.v1 import" not in Path(quote_pb2.__file__).read_text()
