"""The `lora` endpoint of a generating worker: load and unload adapters at run time, card following.

Served only with `--enable-lora-runtime-updates`. A load names a folder under
`--lora-root` (or, with `--lora-allow-hub-download`, a Hugging Face id): it is
located, size-checked and downloaded in the worker's one adapter-fetch thread
under `--lora-load-timeout`, so the event loop (streams, lease, health) never
waits on it; a second load while one is fetched is refused (429). The engine
then checks the adapter against the model (shapes, rank) before it serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from protocol.lora import LORA_ENDPOINT, LoraCommand, LoraReply
from protocol.messages import ErrorCode
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import LoraEngine
from shared.engine.lora_args import LoraOptions
from shared.engine.lora_source import LoraSourceError, check_name, fetch
from shared.runtime.runtime import Runtime
from shared.runtime.server import EndpointServer, RequestContext


def lora_names(engine: Engine) -> list[str]:
    return engine.lora_names() if isinstance(engine, LoraEngine) and engine.adapters.enabled else []


class LoraHandler:
    def __init__(self, engine: LoraEngine, on_change: Callable[[], Awaitable[None]], opts: LoraOptions,
                 base_names: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.on_change = on_change
        self.opts = opts
        self.base_names = base_names
        self._fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-fetch")
        self._fetching: Future[str] | None = None  # the fetch in the thread (it may outlive its deadline)

    async def __call__(self, cmd: LoraCommand, ctx: RequestContext) -> AsyncIterator[LoraReply]:
        if cmd.action == "load":
            try:
                check_name(cmd.lora_name, self.base_names)
            except LoraSourceError as e:
                raise EngineError(ErrorCode.BAD_REQUEST, str(e)) from e
            await self.engine.load_lora(cmd.lora_name, await self._fetch(cmd))
        elif cmd.action == "unload":
            await self.engine.unload_lora(cmd.lora_name)
        else:
            raise EngineError(ErrorCode.BAD_REQUEST, f"unknown action {cmd.action!r} (load or unload)")
        await self.on_change()
        yield LoraReply(loras=self.engine.lora_names())

    async def _fetch(self, cmd: LoraCommand) -> str:
        """The adapter's local folder, fetched in the one fetch thread within --lora-load-timeout."""
        self.engine.adapters.check_new(cmd.lora_name)
        if self._fetching is not None and not self._fetching.done():
            raise EngineError(ErrorCode.OVERLOADED, "another adapter is being loaded on this worker; try again")
        self._fetching = fut = self._fetcher.submit(fetch, cmd.lora_path, self.opts)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.opts.lora_load_timeout)
        except TimeoutError as e:
            raise EngineError(ErrorCode.TIMEOUT, f"loading adapter {cmd.lora_name!r} took longer than "
                              f"--lora-load-timeout {self.opts.lora_load_timeout:g} s") from e
        except LoraSourceError as e:
            raise EngineError(ErrorCode.BAD_REQUEST, f"adapter {cmd.lora_name!r}: {e}") from e

    def close(self) -> None:
        self._fetcher.shutdown(wait=False, cancel_futures=True)


async def serve_lora(rt: Runtime, component: str, engine: Engine, on_change: Callable[[], Awaitable[None]],
                     opts: LoraOptions, base_names: tuple[str, ...] = ()) -> EndpointServer | None:
    """Serve (and register) the `lora` endpoint with --enable-lora-runtime-updates; None otherwise."""
    if not isinstance(engine, LoraEngine) or not engine.adapters.enabled:
        return None
    engine.adapters.max_loaded = opts.max_loaded_loras
    if not opts.runtime_updates:
        return None
    server = EndpointServer(rt, component, LORA_ENDPOINT, LoraHandler(engine, on_change, opts, base_names),
                            LoraCommand, is_final=lambda _: True)
    await server.start()
    await server.register()
    return server
