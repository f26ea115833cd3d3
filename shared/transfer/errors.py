"""The one error a KV transfer raises; `code` is the protocol's ErrorCode value."""

from __future__ import annotations


class TransferFailed(Exception):
    """Moving KV between workers failed or timed out; the request ends with `transfer_failed`."""

    code = "transfer_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
