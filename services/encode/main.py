"""python -m services.encode: vision tower -> NIXL agent over a slot pool (record published) -> serve `encode`."""

from __future__ import annotations

import asyncio
import sys

import torch

from protocol.multimodal import EncodeRequest
from services.encode.args import EncodeConfig, parse
from services.encode.handler import EncodeHandler
from services.encode.store import EmbeddingStore
from shared.multimodal.image import ImageSpec
from shared.multimodal.slots import SlotPool
from shared.multimodal.vision import VisionTower, load_llava
from shared.runtime.server import EndpointServer
from shared.runtime.service import Service, run
from shared.transfer import AgentDirectory, KvAgent


def load_tower(cfg: EncodeConfig) -> VisionTower:
    """The Llava model without its language half (only the vision tower and projector run here)."""
    llava = load_llava(cfg.model_path, torch.float32, torch.device(cfg.device))
    llava.model.language_model = torch.nn.Identity()
    llava.lm_head = torch.nn.Identity()
    return VisionTower(llava)


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("encode", cfg.common) as svc:
        rt = svc.rt
        tower = await asyncio.to_thread(load_tower, cfg)
        pool = SlotPool(cfg.slots, tower.num_tokens * tower.hidden_size * 4)
        agent = KvAgent(rt.instance_id)
        await agent.start([pool.tensor], pool.slot_bytes)
        directory = AgentDirectory(rt, agent)
        await directory.publish()
        store = EmbeddingStore(agent, pool, cfg.ttl)
        store.start()
        handler = EncodeHandler(tower, ImageSpec.from_dir(cfg.model_path), store, cfg.media)
        server = EndpointServer(rt, cfg.component, cfg.endpoint, handler, EncodeRequest, is_final=lambda _: True)
        await server.start()
        await server.register()
        svc.set_health(lambda: {**store.stats, "held": store.held, "free_slots": pool.num_free})
        svc.set_ready()
        svc.log.info("encode_ready", tokens_per_image=tower.num_tokens, slots=cfg.slots)
        try:
            await svc.stopped()
            svc.set_ready(False)
            await server.drain(cfg.common.drain_grace)
        finally:
            await store.stop()
            await directory.revoke()
            await agent.stop()
            handler.close()


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
