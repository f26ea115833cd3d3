"""The prefill half of a disaggregated pair: compute the prompt, write its KV into the decode worker.

Per request: load the decode worker's NIXL agent (once per peer), `prefill()`,
write the blocks the decode worker does not have cached, with the `done`
notification riding on the write, answer the first token, `release()`. A request
that ends otherwise (cancelled, failed write) sends `abort`, so the decode
worker frees its reserved blocks at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from protocol.messages import ErrorCode
from protocol.transfer import abort_tag, done_tag
from services.worker.args import WorkerConfig
from services.worker.role import Role
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import BootstrapKv, KvExport
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.tracing import extract_context, span
from shared.transfer import AgentDirectory, KvAgent, PrefillRequest, PrefillResult


class PrefillHandler:
    def __init__(self, engine: KvExport, agent: KvAgent, directory: AgentDirectory, transfer_timeout: float) -> None:
        self.engine = engine
        self.agent = agent
        self.directory = directory
        self.transfer_timeout = transfer_timeout

    async def __call__(self, req: PrefillRequest, ctx: RequestContext) -> AsyncIterator[PrefillResult]:
        boot, rid = req.request.bootstrap, req.request.request_id
        if boot is None or not boot.instance_id:
            raise EngineError(ErrorCode.BAD_REQUEST, "a prefill request needs bootstrap info naming the decode worker")
        with span("worker.prefill", context=extract_context(ctx.headers),
                  attributes={"request_id": rid, "prompt_tokens": len(req.request.token_ids), "room": boot.room}):
            peer = await self.directory.peer(boot.instance_id)
            finished = False
            try:
                hand = await self.engine.prefill(req.request)
                dst = req.dst_block_ids[req.first_block:len(hand.block_ids)]
                src = hand.block_ids[req.first_block:req.first_block + len(dst)]
                if src:
                    await self.agent.write(peer, src, dst, done_tag(boot.room), self.transfer_timeout)
                finished = True
                yield PrefillResult(hand.first_token, hand.first_logprob, hand.num_tokens, len(src))
            finally:
                await self.engine.release(rid)
                if not finished:
                    await asyncio.shield(self.agent.notify(peer.name, abort_tag(boot.room)))


class SglangPrefillHandler:
    """SGLang moves the KV itself: run the prompt with the decode worker's bootstrap room, answer the first token."""

    def __init__(self, engine: BootstrapKv) -> None:
        self.engine = engine

    async def __call__(self, req: PrefillRequest, ctx: RequestContext) -> AsyncIterator[PrefillResult]:
        boot = req.request.bootstrap
        if boot is None:
            raise EngineError(ErrorCode.BAD_REQUEST, "a prefill request needs the bootstrap host, port and room")
        with span("worker.prefill", context=extract_context(ctx.headers),
                  attributes={"request_id": req.request.request_id, "prompt_tokens": len(req.request.token_ids),
                              "room": boot.room}):
            hand = await self.engine.prefill(req.request)  # cancelled: the engine aborts the request
            yield PrefillResult(hand.first_token, hand.first_logprob, hand.num_tokens)


async def prefill_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    """Wire the prefill side: a NIXL agent over the engine's KV tensors, and the handler.

    On SGLang there is no agent of shoal's: its bootstrap server (host and port in the
    instance record's metadata) pairs with the decode engine."""
    if isinstance(engine, BootstrapKv):
        return Role(SglangPrefillHandler(engine), PrefillRequest, is_final=lambda _: True,
                    request_id_of=lambda r: r.request.request_id)
    if not isinstance(engine, KvExport):
        raise EngineError(ErrorCode.BAD_REQUEST, f"engine {engine.name} cannot hand off KV (use --engine reference)")
    rt = svc.rt
    agent = KvAgent(rt.instance_id)
    await agent.start(engine.kv_tensors(), engine.bytes_per_block)
    handler = PrefillHandler(engine, agent, AgentDirectory(rt, agent), cfg.transfer_timeout)
    return Role(handler, PrefillRequest, is_final=lambda _: True,
                request_id_of=lambda r: r.request.request_id, stop=agent.stop)
