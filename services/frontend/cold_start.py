"""Scale from zero, the frontend's half: parked models are listed, and a request for one waits for a worker.

The planner keeps a `ParkedModel` (protocol/parking.py) for each model it can start; this module
follows them, so /v1/models lists the model and its tokenizer is ready with no worker live. A request
for a parked model with no live worker asks the planner (NATS request/reply) to start one and waits up
to `--cold-start-wait S` for a worker to appear, then goes on as usual; past that, or when the planner
cannot start one, 503 with a Retry-After of the start time still expected. The wait is in
`shoal_cold_start_wait_seconds{outcome}`.
"""

from __future__ import annotations

import asyncio
import time

from protocol import codec, subjects
from protocol.parking import ColdStartReply, ColdStartRequest, ParkedModel, cold_start_subject, parked_filter
from services.frontend.args import ColdStartOptions
from services.frontend.models import ModelEntry, ModelRegistry
from services.frontend.steps import ErrorStep
from shared.runtime.discovery import KeyUpdate
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, histogram

log = get_logger("shoal.frontend")
WAIT = histogram("shoal_cold_start_wait_seconds", "Time a request for a parked model waited for a worker, by "
                 "outcome (served: a worker came; timeout: 503 after --cold-start-wait; refused: the planner "
                 "cannot start one)", ["model", "outcome"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
UNDECODABLE = counter("shoal_parked_undecodable_total", "Parked-model records that did not decode (ignored)", [])
_ASK_TIMEOUT_S = 2.0
_POLL_S = 0.02


class ColdStart:
    def __init__(self, rt: Runtime, registry: ModelRegistry, opts: ColdStartOptions) -> None:
        self.rt = rt
        self.registry = registry
        self.opts = opts
        self.parked: dict[str, ParkedModel] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="parked-models")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def wait(self, model: ModelEntry, lora: str = "") -> ErrorStep | None:
        """None once `model` has a worker (at once if it has one or is not parked); else the 503 to answer."""
        parked = self.parked.get(model.name)
        if parked is None or model.candidates(lora):
            return None
        t0 = time.monotonic()
        reply = await self._ask(model.name)
        expected = reply.expected_start_s if reply is not None else parked.expected_start_s
        if reply is not None and not reply.starting:
            WAIT.labels(model.name, "refused").observe(time.monotonic() - t0)
            return ErrorStep(503, "no_workers", f"model {model.name!r} is parked and no worker can start: "
                                                f"{reply.reason}", retry_after=expected)
        end = t0 + self.opts.wait_s
        while not model.candidates(lora) and time.monotonic() < end:
            await asyncio.sleep(_POLL_S)
        waited = time.monotonic() - t0
        if model.candidates(lora):
            WAIT.labels(model.name, "served").observe(waited)
            log.info("cold_start_served", model=model.name, waited_s=round(waited, 3))
            return None
        WAIT.labels(model.name, "timeout").observe(waited)
        return ErrorStep(503, "model_starting", f"model {model.name!r} is starting a worker; retry later",
                         retry_after=max(1.0, expected - waited))

    async def _ask(self, model: str) -> ColdStartReply | None:
        try:
            msg = await self.rt.nc.request(cold_start_subject(self.rt.namespace),
                                           codec.encode(ColdStartRequest(model)), timeout=_ASK_TIMEOUT_S)
            return codec.decode(msg.data, ColdStartReply)
        except Exception as e:  # no planner answering: wait anyway (one may be starting), then 503
            log.warning("cold_start_unanswered", model=model, error=repr(e)[:200])
            return None

    async def _follow(self) -> None:
        async def apply(upd: KeyUpdate) -> None:
            if upd.value is None:
                return  # a parked record is only ever replaced
            try:
                parked = codec.decode(upd.value, ParkedModel)
            except Exception as e:
                UNDECODABLE.inc()
                log.warning("parked_undecodable", key=upd.key, error=str(e)[:200])
                return
            self.parked[parked.card.name] = parked
            await self.registry.park(parked.card)

        await self.rt.discovery.follow(subjects.MODELS_BUCKET, parked_filter(self.rt.namespace), apply)

