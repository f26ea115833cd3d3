"""Errors a runtime caller may see; each carries a protocol ErrorCode."""

from __future__ import annotations

from protocol.messages import ErrorCode, ErrorInfo


class RuntimeFailure(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, retry_after=self.retry_after)


class NatsUnavailable(RuntimeFailure):
    code = ErrorCode.NO_WORKERS


class NoInstances(RuntimeFailure):
    code = ErrorCode.NO_WORKERS


class WorkerLost(RuntimeFailure):
    """The instance serving a stream went away (gap, silence, lease expiry, drain)."""

    code = ErrorCode.WORKER_LOST

    def __init__(self, message: str, instance_id: str = "", started: bool = False) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.started = started


class RemoteError(RuntimeFailure):
    """The handler on the far side ended the stream with an error."""


def from_info(info: ErrorInfo) -> RuntimeFailure:
    if info.code == ErrorCode.WORKER_LOST:
        return WorkerLost(info.message)
    return RemoteError(info.message, info.code, info.retry_after)
