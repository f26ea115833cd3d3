"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: every worker of the base model, over NATS.

Each worker of the base gets one `LoraCommand` on its `lora` endpoint; once
all have answered, the frontend waits (briefly) until their model cards list
the change, so a client's next /v1/models already shows it.

Off unless the frontend runs with `--enable-lora-runtime-updates` (404 then,
as if the routes did not exist); on, they take the admin key only (`--admin-api-key`,
never the inference key). Names are checked here (and again on the workers):
1 to 64 of [A-Za-z0-9._-], not a served model's name. Paths are the workers'
business: each confines them to its own `--lora-root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time

import msgspec

from protocol.lora import LORA_ENDPOINT, LoraCommand, LoraReply
from services.frontend.http_errors import decode_body, error_response, failure_response, json_encoder
from services.frontend.lora_flags import LoraAdminOptions
from services.frontend.models import ModelEntry, ModelRegistry
from shared.engine.lora_source import LoraSourceError, check_name
from shared.http import Request, Response
from shared.runtime.client import EndpointClient
from shared.runtime.errors import RuntimeFailure

LISTED_TIMEOUT_S = 5.0
ROUTES = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


class LoraAdapterRequest(msgspec.Struct, frozen=True):
    """SGLang's body; `model` picks the base model where the frontend serves several."""

    lora_name: str
    lora_path: str = ""
    model: str = ""


class LoraRoutes:
    def __init__(self, registry: ModelRegistry, opts: LoraAdminOptions = LoraAdminOptions()) -> None:
        self.registry = registry
        self.opts = opts

    def owns(self, path: str) -> bool:
        """The routes that check the admin key themselves (the inference key is no use on them)."""
        return path in ROUTES

    def _refused(self, req: Request) -> Response | None:
        if not self.opts.runtime_updates or not self.opts.admin_api_key:
            return error_response(404, f"no route {req.path} (run-time adapter updates are off: "
                                  "--enable-lora-runtime-updates)", "not_found")
        got = req.headers.get("authorization", "")
        if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(),
                                                                  self.opts.admin_api_key.encode())):
            return error_response(401, "missing or invalid admin API key", "invalid_api_key")
        return None

    async def load(self, req: Request) -> Response:
        return await self._run(req, "load")

    async def unload(self, req: Request) -> Response:
        return await self._run(req, "unload")

    async def _run(self, req: Request, action: str) -> Response:
        refused = self._refused(req)
        if refused is not None:
            return refused
        body = decode_body(req.body, LoraAdapterRequest)
        if isinstance(body, Response):
            return body
        if action == "load" and not 0 < len(body.lora_path) <= 1024:
            return error_response(400, "lora_path is required (at most 1024 characters)", "invalid_request",
                                  "lora_path")
        try:
            if action == "load":  # (an adapter of any name given at start may be unloaded)
                check_name(body.lora_name, tuple(self.registry.models))
        except LoraSourceError as e:
            return error_response(400, str(e), "invalid_request", "lora_name")
        model = self._base(body.model)
        if isinstance(model, Response):
            return model
        instances = model.candidates()
        if not instances:
            return error_response(503, f"no worker is serving model {model.name!r} right now", "no_workers",
                                  retry_after=1.0)
        cmd = LoraCommand(f"lora-{secrets.token_hex(8)}", action, body.lora_name, body.lora_path)
        client = await self._client(model)
        answers = await asyncio.gather(*(_send(client, iid, cmd) for iid in instances), return_exceptions=True)
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed:
            first = failed[0]
            if isinstance(first, RuntimeFailure):
                return failure_response(first)
            raise first
        await _listed(model, body.lora_name, action == "load")
        return Response(200, json_encoder.encode({"success": True, "loaded_adapters": model.loras,
                                                  "workers": len(instances)}))

    def _base(self, name: str) -> ModelEntry | Response:
        if name:
            model = self.registry.get(name)
            if model is None:
                return error_response(404, f"The model `{name}` does not exist.", "model_not_found", "model")
            return model
        generative = [m for m in self.registry.serving() if not m.is_embedding]
        if len(generative) != 1:
            return error_response(400, "name the base model in `model`: this frontend serves "
                                  f"{len(generative)} generative models", "invalid_request", "model")
        return generative[0]

    async def _client(self, model: ModelEntry) -> EndpointClient[LoraReply]:
        if model.lora_client is None:
            component = next(iter(model.cards.values())).component
            model.lora_client = EndpointClient(self.registry.rt, component, LORA_ENDPOINT, LoraReply)
            await model.lora_client.start()
        return model.lora_client


async def _send(client: EndpointClient[LoraReply], instance_id: str, cmd: LoraCommand) -> LoraReply:
    async with contextlib.aclosing(client.generate(cmd, cmd.request_id, instance_id=instance_id)) as batches:
        async for items in batches:
            return items[0]
    raise RuntimeError(f"worker {instance_id} ended the stream without an answer")


async def _listed(model: ModelEntry, name: str, present: bool) -> None:
    end = time.monotonic() + LISTED_TIMEOUT_S
    while (name in model.loras) != present and time.monotonic() < end:
        await asyncio.sleep(0.02)
