"""CrmError: a failed crm call, with the google.rpc details decoded."""

from __future__ import annotations

from typing import Any

import grpc
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
from grpc_status import rpc_status


class CrmError(Exception):
    """A crm call that ended with a non-OK gRPC status.

    Attributes:
        code: the gRPC status code (e.g. ``grpc.StatusCode.ABORTED``).
        message: the status message.
        reason: ``google.rpc.ErrorInfo.reason`` (e.g. ``"VERSION_MISMATCH"``), or None.
        domain: ``google.rpc.ErrorInfo.domain`` (``"crm.v1"``), or None.
        metadata: ``google.rpc.ErrorInfo.metadata`` (e.g. expected_version).
        field_violations: ``google.rpc.BadRequest`` violations as
            ``(field, description)`` pairs, e.g. ``("account.name", "is required")``.
        details: every decoded detail message (ErrorInfo, BadRequest, others
            left as ``google.protobuf.Any``).
    """

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    metadata: dict[str, str]
    field_violations: list[tuple[str, str]]
    details: list[Any]

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.details = list(details or [])

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> CrmError:
        """Builds a CrmError from the RpcError a grpc stub raised."""
        call: Any = err  # unary stubs raise an RpcError that is also a grpc.Call
        code: grpc.StatusCode = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
        message: str = (call.details() if hasattr(call, "details") else None) or ""
        status: status_pb2.Status | None = None
        try:
            status = rpc_status.from_call(call)
        except (ValueError, AttributeError):
            status = None  # details present but inconsistent with the status
        if status is None:
            return cls(code, message)

        reason = domain = None
        metadata: dict[str, str] = {}
        violations: list[tuple[str, str]] = []
        details: list[Any] = []
        for any_detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if any_detail.Unpack(info):  # Unpack is False when the type differs
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
                details.append(info)
            elif any_detail.Unpack(bad):
                violations.extend((v.field, v.description) for v in bad.field_violations)
                details.append(bad)
            else:
                details.append(any_detail)
        return cls(
            code,
            status.message or message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
            details=details,
        )
