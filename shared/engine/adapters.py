"""Which LoRA adapters an engine serves, which requests use each, and unloading that waits for them.

Engine-agnostic bookkeeping (the reference and mock engines share it): an
adapter being unloaded takes no new request at once, and goes only when the
requests already using it have ended, so unloading never breaks a request; if
they outlast the grace period the unload is refused and the adapter stays.
"""

from __future__ import annotations

import asyncio
import time

from protocol.messages import ErrorCode
from shared.engine.base import EngineError

UNLOAD_GRACE_S = 30.0


class AdapterSet:
    def __init__(self, enabled: bool, max_loaded: int = 0) -> None:
        self.enabled = enabled
        self.max_loaded = max_loaded  # 0: no limit
        self.paths: dict[str, str] = {}  # name -> folder, in load order
        self._users: dict[object, str] = {}  # request token -> adapter
        self._closing: set[str] = set()

    def names(self) -> list[str]:
        return [n for n in self.paths if n not in self._closing]

    def check_new(self, name: str) -> None:
        """Refuse to load `name` twice, beyond the limit, or when LoRA is off."""
        if not self.enabled:
            raise EngineError(ErrorCode.BAD_REQUEST,
                              "LoRA adapters are off on this worker (start it with --enable-lora)")
        if name in self.paths:
            raise EngineError(ErrorCode.BAD_REQUEST, f"adapter {name!r} is loaded already")
        if self.max_loaded and len(self.paths) >= self.max_loaded:
            raise EngineError(ErrorCode.OVERLOADED, f"{len(self.paths)} adapters loaded: unload one first")

    def added(self, name: str, path: str) -> None:
        self.paths[name] = path

    def use(self, name: str, token: object) -> None:
        """A request starts with adapter `name` (refused if it is not loaded or is being unloaded)."""
        if name not in self.paths or name in self._closing:
            raise EngineError(ErrorCode.NOT_FOUND, f"adapter {name!r} is not loaded on this worker")
        self._users[token] = name

    def done(self, token: object) -> None:
        self._users.pop(token, None)

    def in_use(self, name: str) -> int:
        return sum(1 for n in self._users.values() if n == name)

    async def drain(self, name: str, grace: float = UNLOAD_GRACE_S) -> None:
        """Stop new requests for `name` and wait for its running ones; then the caller unloads it."""
        if name not in self.paths or name in self._closing:
            raise EngineError(ErrorCode.NOT_FOUND, f"adapter {name!r} is not loaded on this worker")
        self._closing.add(name)
        end = time.monotonic() + grace
        while self.in_use(name):
            if time.monotonic() > end:
                self._closing.discard(name)
                raise EngineError(ErrorCode.OVERLOADED, f"adapter {name!r} is still used by {self.in_use(name)} "
                                  f"requests after {grace:.0f}s; not unloaded")
            await asyncio.sleep(0.02)

    def reopen(self, name: str) -> None:
        """An unload that failed: the adapter takes requests again."""
        self._closing.discard(name)

    def removed(self, name: str) -> None:
        self.paths.pop(name, None)
        self._closing.discard(name)

