"""Scale from zero, the planner's half: parked models and cold starts.

For every pool the connector can start (not prefill pools: a decode worker asks for those), the
planner keeps a `ParkedModel` in the models bucket at `parked_key` once it has seen one card of the
pool: the card (so a frontend lists the model and has its tokenizer with no worker live), the pool's
`max_workers` and the last measured start time. A pool never seen is started once to learn its card
(with `--min-workers 0` it drains again after `--scale-to-zero-idle`). A frontend's request on
`cold_start_subject` for a model with no live worker starts one at once (not at the next interval)
and is answered with the expected start time; the start is timed from the connector's call to the
worker's card in discovery.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.parking import (
    DEFAULT_START_S,
    ColdStartReply,
    ColdStartRequest,
    ParkedModel,
    cold_start_subject,
    parked_key,
)
from services.planner.connectors import Connector
from services.planner.decision import Planner
from services.planner.intake import Intake
from services.planner.observe import PREFILL, Pool
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge

log = get_logger("shoal.planner")
COLD_STARTS = counter("shoal_planner_cold_starts_total", "Workers started for a parked model on a frontend's request",
                      ["model"])
START_S = gauge("shoal_planner_start_seconds", "The last measured worker start (connector call to card seen)",
                ["model", "component"])


class Parking:
    def __init__(self, rt: Runtime, intake: Intake, planner: Planner, connector: Connector) -> None:
        self.rt = rt
        self.intake = intake
        self.planner = planner
        self.connector = connector
        self.expected: dict[Pool, float] = {}  # measured start seconds per pool
        self._starting: dict[Pool, float] = {}  # pool -> when its start was asked for
        self._published: dict[Pool, ParkedModel] = {}
        self._sub: Any = None

    def pools(self) -> list[Pool]:
        return [p for p in self.connector.pools() if p.role != PREFILL]

    async def start(self) -> None:
        self._sub = await self.rt.nc.subscribe(cold_start_subject(self.rt.namespace), cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def sync(self) -> None:
        """Every interval: time the starts that showed up, publish parked records, learn unseen pools."""
        now = time.monotonic()
        for pool in self.pools():
            live = self.intake.live(pool)
            began = self._starting.get(pool)
            if began is not None and live > 0:
                self.expected[pool] = now - self._starting.pop(pool)
                START_S.labels(pool.model, pool.component).set(self.expected[pool])
            card = self.intake.last_cards.get(pool)
            if card is None:
                if live == 0 and began is None and self.planner.zero_allowed(pool):  # else the decision starts it
                    await self._start(pool, "learn the model card")
                continue
            parked = ParkedModel(card, self.planner.opts.max_workers, self.expected.get(pool, DEFAULT_START_S))
            if self._published.get(pool) != parked:
                kv = await self.rt.discovery.bucket(subjects.MODELS_BUCKET)
                await kv.put(parked_key(self.rt.namespace, pool.model), codec.encode(parked))
                self._published[pool] = parked

    async def cold_start(self, model: str) -> ColdStartReply:
        pools = [p for p in self.pools() if p.model == model]
        if not pools:
            return ColdStartReply(model, False, reason="the planner starts no worker of this model")
        now = time.monotonic()
        waits = []
        for pool in pools:
            expected = self.expected.get(pool, DEFAULT_START_S)
            if self.intake.live(pool) > 0:
                waits.append(0.0)
            elif pool in self._starting:
                waits.append(max(0.0, expected - (now - self._starting[pool])))
            else:
                await self._start(pool, "cold start")
                COLD_STARTS.labels(model).inc()
                waits.append(expected)
        return ColdStartReply(model, True, max(waits))

    async def _start(self, pool: Pool, why: str) -> None:
        now = time.monotonic()
        self._starting[pool] = now
        self.planner.woken(pool, now)
        log.info("planner_cold_start", model=pool.model, component=pool.component, reason=why)
        await self.connector.scale(pool, 0, 1)

    async def _on_request(self, msg: Msg) -> None:
        try:
            req = codec.decode(msg.data, ColdStartRequest)
        except Exception as e:
            log.warning("cold_start_undecodable", error=str(e)[:200])
            return
        try:
            reply = await self.cold_start(req.model)
        except Exception as e:  # a connector that failed: the frontend answers 503 with the default wait
            log.warning("cold_start_failed", model=req.model, error=repr(e)[:200])
            reply = ColdStartReply(req.model, False, reason="the planner could not start a worker")
        if msg.reply:
            await msg.respond(codec.encode(reply))
