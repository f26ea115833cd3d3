"""Model cards (JetStream KV, under the worker's lease) and tokenizer artifacts (object store).

A frontend on another host needs no copy of the model directory: the worker
uploads the tokenizer files once, content-addressed, and the card names them.
"""

from __future__ import annotations

import hashlib

import msgspec
from nats.js.api import ObjectStoreConfig
from nats.js.errors import NotFoundError, ObjectNotFoundError

from protocol import codec, subjects
from protocol.discovery import ModelCard
from shared.runtime.discovery import Lease
from shared.runtime.replicas import ensure_replicas, while_electing
from shared.runtime.runtime import Runtime


class TokenizerFiles(msgspec.Struct, frozen=True):
    files: dict[str, bytes]


async def _store(rt: Runtime):
    try:
        store = await rt.js.object_store(subjects.ARTIFACTS_STORE)
    except (NotFoundError, ObjectNotFoundError):
        pass
    except Exception:
        pass
    else:
        await ensure_replicas(rt.js, f"OBJ_{subjects.ARTIFACTS_STORE}", rt.replicas)
        return store
    try:
        return await rt.js.create_object_store(subjects.ARTIFACTS_STORE,
                                               ObjectStoreConfig(bucket=subjects.ARTIFACTS_STORE,
                                                                 replicas=rt.replicas))
    except Exception:
        return await rt.js.object_store(subjects.ARTIFACTS_STORE)


async def upload_tokenizer(rt: Runtime, files: dict[str, bytes]) -> str:
    """Store tokenizer files once; returns the artifact name (content hash)."""
    blob = codec.encode(TokenizerFiles(files=dict(sorted(files.items()))))
    name = "tokenizer-" + hashlib.sha256(blob).hexdigest()[:24]
    store = await _store(rt)
    try:
        await store.get_info(name)
    except Exception:
        await while_electing(lambda: store.put(name, blob))
    return name


async def fetch_tokenizer(rt: Runtime, artifact: str) -> dict[str, bytes]:
    store = await _store(rt)
    result = await store.get(artifact)
    return codec.decode(result.data or b"", TokenizerFiles).files


async def publish_card(rt: Runtime, card: ModelCard) -> Lease:
    key = subjects.model_key(rt.namespace, card.component, card.instance_id)
    return await rt.discovery.lease(subjects.MODELS_BUCKET, key, codec.encode(card), heartbeat=True)
