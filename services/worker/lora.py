"""The `lora` endpoint of a generating worker: load and unload adapters at run time, card following."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from protocol.lora import LORA_ENDPOINT, LoraCommand, LoraReply
from protocol.messages import ErrorCode
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import LoraEngine
from shared.model.hub import ModelNotFoundError, resolve_model
from shared.runtime.runtime import Runtime
from shared.runtime.server import EndpointServer, RequestContext


def lora_names(engine: Engine) -> list[str]:
    return engine.lora_names() if isinstance(engine, LoraEngine) and engine.adapters.enabled else []


class LoraHandler:
    def __init__(self, engine: LoraEngine, on_change: Callable[[], Awaitable[None]]) -> None:
        self.engine = engine
        self.on_change = on_change

    async def __call__(self, cmd: LoraCommand, ctx: RequestContext) -> AsyncIterator[LoraReply]:
        if cmd.action == "load":
            try:
                path = resolve_model(cmd.lora_path)
            except ModelNotFoundError as e:
                raise EngineError(ErrorCode.BAD_REQUEST, str(e)) from e
            await self.engine.load_lora(cmd.lora_name, path)
        elif cmd.action == "unload":
            await self.engine.unload_lora(cmd.lora_name)
        else:
            raise EngineError(ErrorCode.BAD_REQUEST, f"unknown action {cmd.action!r} (load or unload)")
        await self.on_change()
        yield LoraReply(loras=self.engine.lora_names())


async def serve_lora(rt: Runtime, component: str, engine: Engine,
                     on_change: Callable[[], Awaitable[None]]) -> EndpointServer | None:
    """Serve (and register) the `lora` endpoint when the engine has LoRA on; None otherwise."""
    if not isinstance(engine, LoraEngine) or not engine.adapters.enabled:
        return None
    server = EndpointServer(rt, component, LORA_ENDPOINT, LoraHandler(engine, on_change), LoraCommand,
                            is_final=lambda _: True)
    await server.start()
    await server.register()
    return server
