"""Errors a runtime caller may see: members of the one family (shared/errors.py)."""

from __future__ import annotations

from protocol.messages import ErrorCode, ErrorInfo
from shared.errors import ShoalError

RuntimeFailure = ShoalError  # the family's name where runtime callers catch it


class NatsUnavailable(ShoalError):
    code = ErrorCode.NO_WORKERS


class NoInstances(ShoalError):
    code = ErrorCode.NO_WORKERS


class WorkersBusy(ShoalError):
    """Every worker that could take the request is past a busy threshold (shared.routing.busy): retry later."""

    code = ErrorCode.WORKERS_BUSY


class WorkerLost(ShoalError):
    """The instance serving a stream went away (gap, silence, lease expiry, drain)."""

    code = ErrorCode.WORKER_LOST

    def __init__(self, message: str, instance_id: str = "", started: bool = False) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.started = started


class RemoteError(ShoalError):
    """The handler on the far side ended the stream with an error."""


def from_info(info: ErrorInfo) -> ShoalError:
    if info.code == ErrorCode.WORKER_LOST:
        return WorkerLost(info.message)
    if info.code == ErrorCode.WORKERS_BUSY:
        return WorkersBusy(info.message, retry_after=info.retry_after)
    return RemoteError(info.message, info.code, info.retry_after)
