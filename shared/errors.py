"""The one error family: every way a request can fail is a `ShoalError` carrying a protocol `ErrorCode`.

Imports only `protocol`, so every layer (engines, transfer, multimodal, runtime,
services) raises and catches the same types. An endpoint server turns any
`ShoalError` into the `ErrorInfo` of the stream's last frame; a client turns
that back into a `ShoalError` (shared/runtime/errors.py).
"""

from __future__ import annotations

from protocol.messages import ErrorCode, ErrorInfo


class ShoalError(Exception):
    """A failure with its `ErrorCode` (the HTTP status follows from it) and an optional retry hint."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)
        self.retry_after = retry_after

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, retry_after=self.retry_after)


class EngineError(ShoalError):
    """The engine (or the code feeding it) refused or failed a request."""

    code = ErrorCode.ENGINE_ERROR

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, code, retry_after)


class TransferFailed(ShoalError):
    """Moving KV or embeddings between workers failed or timed out."""

    code = ErrorCode.TRANSFER_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)


class BadRequest(ShoalError):
    """The client's request is wrong (400): `param` names the field when one is to blame."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, param: str | None = None, code: ErrorCode | None = None) -> None:
        super().__init__(message, code)
        self.param = param


# 5xx whose messages may carry exception text from deep inside a worker: clients get these words instead
_GENERIC: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "internal error while serving the request",
    ErrorCode.ENGINE_ERROR: "the engine failed while serving the request",
}


def client_message(code: ErrorCode, message: str) -> str:
    """What a client may read of a failure: generic words for internal and engine errors (the details go
    to the logs), the message itself for every other code (those are written for clients)."""
    return _GENERIC.get(code, message)
