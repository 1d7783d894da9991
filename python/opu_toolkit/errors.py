"""Errors: one exception class per gRPC status code, each keeping the code and the message.

A server's status (``grpc.RpcError``) becomes the class of its code with the server's message
unchanged; the client's own checks (bad arguments, malformed URIs) raise the same classes, so a
caller handles ``InvalidArgumentError`` alike whichever side found the problem. The classes of
bad input also derive from ``ValueError``, UNIMPLEMENTED from ``NotImplementedError``.
"""

from __future__ import annotations

import grpc


class OpuError(Exception):
    """A failed device call: ``code`` (a ``grpc.StatusCode``) and ``message`` (the server's)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(OpuError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfRangeError(OpuError, ValueError):
    code = grpc.StatusCode.OUT_OF_RANGE


class NotFoundError(OpuError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(OpuError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(OpuError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(OpuError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnimplementedError(OpuError, NotImplementedError):
    code = grpc.StatusCode.UNIMPLEMENTED


class UnavailableError(OpuError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(OpuError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(OpuError):
    code = grpc.StatusCode.CANCELLED


class DataLossError(OpuError):
    code = grpc.StatusCode.DATA_LOSS


class InternalError(OpuError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgumentError, OutOfRangeError, NotFoundError, FailedPreconditionError,
    UnauthenticatedError, ResourceExhaustedError, UnimplementedError, UnavailableError,
    DeadlineExceededError, CancelledError, DataLossError, InternalError)}


def error(code: grpc.StatusCode, message: str) -> OpuError:
    """The exception for ``code``, carrying ``message``."""
    cls = _BY_CODE.get(code, OpuError)
    return cls(message, code) if cls is OpuError else cls(message)


def from_rpc_error(err: grpc.RpcError, context: str = "") -> OpuError:
    """A ``grpc.RpcError`` (which is also a ``grpc.Call``) as the exception of its code; the
    server's message is kept verbatim, after ``context`` when one is given."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    message = details or ""
    if context:
        message = f"{context}: {message}"
    out = error(code, message)
    out.server_message = details
    return out
