"""Send a prepared request to a worker; migrate it when the worker is lost; admit it first.

The dispatch policy in one object: admission (requests in flight before a 429), retries
before a worker took the request, and migration after it did.

Migration re-sends the prompt plus every token already streamed to another
worker, so the client's stream continues without a duplicated or dropped
token; after `migration_limit` migrations the client gets a clean error.
`call` sends a one-answer request (embeddings): nothing streamed yet means a
lost worker's request is simply sent again, to another worker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from protocol.messages import EngineRequest, ErrorCode, OutputChunk, Usage
from services.frontend.models import ModelEntry
from services.frontend.request_metrics import Meter
from shared.routing.admission import ticket_of
from shared.routing.opaque import image_routing_tokens
from shared.runtime.errors import NoInstances, RemoteError, WorkerLost
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge

log = get_logger("shoal.frontend.dispatch")
MIGRATIONS = counter("shoal_frontend_migrations_total", "Requests moved to another worker", ["model"])
RETRIES = counter("shoal_frontend_retries_total", "Requests re-sent before a worker took them", ["model"])
INFLIGHT = gauge("shoal_frontend_inflight_requests", "Requests being served now")
DEFAULT_MAX_INFLIGHT = 4096


class Dispatcher:
    def __init__(self, migration_limit: int = 0, request_timeout: float | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self.migration_limit = migration_limit
        self.request_timeout = request_timeout
        self.max_inflight = max_inflight
        self.inflight = 0

    def has_room(self) -> bool:
        return self.inflight < self.max_inflight

    def admit(self) -> Callable[[], None] | None:
        """Count a request in flight (None: too many already); the returned release (idempotent) counts it out."""
        if self.inflight >= self.max_inflight:
            return None
        self.inflight += 1
        INFLIGHT.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.inflight -= 1
                INFLIGHT.dec()

        return release

    def stream(
        self,
        model: ModelEntry,
        request: EngineRequest,
        instance_id: str | None = None,
        headers: dict[str, str] | None = None,
        served: dict[str, str] | None = None,
    ) -> AsyncIterator[list[OutputChunk]]:
        """Batches of output chunks; the final chunk's usage covers every attempt.

        `served["instance_id"]` names the worker streaming now (for the response header).
        The request's metrics are recorded on the way (services.frontend.request_metrics.Meter).
        """
        return self._attempts(model, request, instance_id, headers, served)

    async def _attempts(
        self,
        model: ModelEntry,
        request: EngineRequest,
        instance_id: str | None,
        headers: dict[str, str] | None,
        served: dict[str, str] | None,
    ) -> AsyncIterator[list[OutputChunk]]:
        original = request
        generated: list[int] = []
        excluded: set[str] = set()
        migrations = retries = 0
        first_usage: Usage | None = None
        deadline = time.time() + self.request_timeout if self.request_timeout else None
        meter = Meter(model.name, len(request.token_ids))
        try:
            while True:
                if instance_id is None:
                    target, request = await self._choose(model, request, excluded, under_way=migrations > 0)
                else:
                    target = instance_id
                if served is not None:
                    served["instance_id"] = target
                try:
                    async with contextlib.aclosing(model.client.generate(
                        request, request.request_id, instance_id=target, deadline=deadline, headers=headers,
                    )) as batches:
                        async for items in batches:
                            for chunk in items:
                                generated.extend(chunk.token_ids)
                                if chunk.usage is not None:
                                    first_usage = first_usage or chunk.usage
                            if items[-1].finish_reason is not None:
                                items[-1] = msgspec.structs.replace(items[-1], usage=Usage(
                                    len(original.token_ids), len(generated), first_usage.cached_tokens
                                    if first_usage else 0))
                            meter.batch(items)
                            yield items
                        return
                except WorkerLost as e:
                    excluded.add(e.instance_id or target)
                    if instance_id is not None:
                        raise
                    if not e.started and not generated and retries < 2:
                        retries += 1
                        RETRIES.labels(model.name).inc()
                        continue
                    if migrations >= self.migration_limit:
                        raise
                    if len(generated) >= original.stop.max_tokens:  # only the final frame was lost
                        last = [OutputChunk(finish_reason="length", usage=Usage(
                            len(original.token_ids), len(generated), first_usage.cached_tokens if first_usage else 0))]
                        meter.batch(last)
                        yield last
                        return
                    migrations += 1
                    MIGRATIONS.labels(model.name).inc()
                    log.info("request_migrating", request_id=original.request_id, lost=e.instance_id,
                             tokens_so_far=len(generated), migration=migrations)
                    request = _continuation(original, generated, migrations)
                except RemoteError as e:
                    if e.code != ErrorCode.OVERLOADED or instance_id is not None or retries >= 2 or generated:
                        raise
                    excluded.add(target)
                    if not any(i not in excluded for i in model.candidates(request.lora)):
                        raise  # every worker is full: the client gets 429 with Retry-After
                    retries += 1
                finally:
                    model.router.finished(request.request_id)
        except Exception as e:
            meter.failed(e)
            raise
        finally:
            meter.end()

    async def call(
        self,
        model: ModelEntry,
        request: msgspec.Struct,
        request_id: str,
        route_tokens: Sequence[int],
        instance_id: str | None = None,
        headers: dict[str, str] | None = None,
        served: dict[str, str] | None = None,
    ) -> Any:
        """The one item a worker answers `request` with; re-sent elsewhere when its worker is lost or full."""
        excluded: set[str] = set()
        retries = migrations = 0
        deadline = time.time() + self.request_timeout if self.request_timeout else None
        while True:
            target = instance_id or self._pick(model, request_id, route_tokens, excluded)
            if served is not None:
                served["instance_id"] = target
            try:
                async with contextlib.aclosing(model.client.generate(
                    request, request_id, instance_id=target, deadline=deadline, headers=headers,
                )) as batches:
                    async for items in batches:
                        return items[0]
                raise WorkerLost("the worker ended the stream without an answer", target, started=True)
            except WorkerLost as e:
                excluded.add(e.instance_id or target)
                if instance_id is not None:
                    raise
                if not e.started and retries < 2:
                    retries += 1
                    RETRIES.labels(model.name).inc()
                elif e.started and migrations < self.migration_limit:
                    migrations += 1
                    MIGRATIONS.labels(model.name).inc()
                else:
                    raise
            except RemoteError as e:
                if e.code != ErrorCode.OVERLOADED or instance_id is not None or retries >= 2:
                    raise
                excluded.add(target)
                if not any(i not in excluded for i in model.candidates()):
                    raise
                retries += 1
            finally:
                model.router.finished(request_id)

    @staticmethod
    def _pick(model: ModelEntry, request_id: str, tokens: Sequence[int], excluded: set[str]) -> str:
        candidates = [i for i in model.candidates() if i not in excluded]
        if not candidates:
            raise NoInstances(f"no worker is serving model {model.name!r} right now", retry_after=1.0)
        return model.router.choose(request_id, tokens, candidates).instance_id

    @staticmethod
    async def _choose(model: ModelEntry, request: EngineRequest, excluded: set[str],
                      under_way: bool = False) -> tuple[str, EngineRequest]:
        """The worker to send to, and the request with the DP rank the router chose, if any.
        `under_way`: a migration, which no busy threshold refuses."""
        candidates = [i for i in model.candidates(request.lora) if i not in excluded]
        if not candidates:
            raise NoInstances(f"no worker is serving model {model.name!r} right now", retry_after=1.0)
        args = (request.request_id, _routing_tokens(model, request), candidates, request.lora,
                request.routing.session_id)  # admit may wait: a shared session's record, the admission queue
        d = model.router.choose_under_way(*args) if under_way else \
            await model.router.admit(*args, ticket=ticket_of(request))
        if d.dp_rank is not None and d.dp_rank != request.routing.dp_rank:
            routing = msgspec.structs.replace(request.routing, dp_rank=d.dp_rank)
            request = msgspec.structs.replace(request, routing=routing)
        return d.instance_id, request


def _routing_tokens(model: ModelEntry, request: EngineRequest) -> Sequence[int]:
    """The prompt as the router should see it: unexpanded images become stand-ins (shared.routing.opaque)."""
    if not request.multimodal or request.multimodal[0].offset >= 0 or model.router.mode != "kv":
        return request.token_ids
    image = model.image_input
    image_id = model.tokenizer.token_to_id(image[0]) if image else None
    if image is None or image_id is None:
        return request.token_ids
    return image_routing_tokens(request.token_ids, image_id, image[1], [i.url for i in request.multimodal])


def _continuation(original: EngineRequest, generated: list[int], n: int) -> EngineRequest:
    stop = original.stop
    done = len(generated)
    return msgspec.structs.replace(
        original,
        request_id=f"{original.request_id}-m{n}",
        token_ids=[*original.token_ids, *generated],
        stop=msgspec.structs.replace(stop, max_tokens=stop.max_tokens - done,
                                     min_tokens=max(0, stop.min_tokens - done)),
    )
