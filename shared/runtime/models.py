"""Model cards (JetStream KV, under the worker's lease) and tokenizer artifacts (object store).

A frontend on another host needs no copy of the model directory: the worker
uploads the tokenizer files once, content-addressed, and the card names them.
The name is the content's sha256 (`tokenizer-<hex>`), so the card records the
hash: a reader recomputes it and refuses files that do not match (another
role's credential could have overwritten the object); a worker finding its
name taken by other bytes puts its own again.
"""

from __future__ import annotations

import contextlib
import hashlib

import msgspec
from nats.js.api import ObjectStoreConfig
from nats.js.errors import NotFoundError, ObjectNotFoundError

from protocol import codec, subjects
from protocol.discovery import ModelCard
from shared.runtime.discovery import Lease
from shared.runtime.replicas import ensure_replicas, while_electing
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger

log = get_logger("shoal.artifacts")


class TokenizerFiles(msgspec.Struct, frozen=True):
    files: dict[str, bytes]


class ArtifactMismatch(ValueError):
    """An artifact whose bytes do not hash to the name its model card gives."""


PREFIX = "tokenizer-"
MIN_HASH_HEX = 24  # names of older workers carry the first 24 hex digits


def _matches(name: str, blob: bytes) -> bool:
    want = name.removeprefix(PREFIX)
    return name.startswith(PREFIX) and len(want) >= MIN_HASH_HEX and \
        hashlib.sha256(blob).hexdigest().startswith(want)


async def artifacts_store(rt: Runtime):
    """The artifacts object store, created if missing (where this credential may: see shared.runtime.provision)."""
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
        try:
            return await rt.js.object_store(subjects.ARTIFACTS_STORE)
        except Exception as e:
            raise RuntimeError(f"object store {subjects.ARTIFACTS_STORE} is missing and this NATS user may not "
                               f"create it: run `python -m shared.cli setup` with the setup user") from e


async def upload_tokenizer(rt: Runtime, files: dict[str, bytes]) -> str:
    """Store tokenizer files once; returns the artifact name (`tokenizer-` + the sha256 of the content)."""
    blob = codec.encode(TokenizerFiles(files=dict(sorted(files.items()))))
    name = PREFIX + hashlib.sha256(blob).hexdigest()
    store = await artifacts_store(rt)
    try:
        have = (await store.get(name)).data or b""
    except Exception:
        await while_electing(lambda: store.put(name, blob))
        return name
    if not _matches(name, have):  # changed by someone else: put ours back (purging theirs may be refused)
        log.warning("tokenizer_artifact_repaired", artifact=name)
        with contextlib.suppress(Exception):
            await store.put(name, blob)
    return name


async def fetch_tokenizer(rt: Runtime, artifact: str) -> dict[str, bytes]:
    """The files of `artifact`; ArtifactMismatch when its bytes do not hash to its name."""
    store = await artifacts_store(rt)
    result = await store.get(artifact)
    blob = result.data or b""
    if not _matches(artifact, blob):
        raise ArtifactMismatch(f"artifact {artifact[:80]!r} does not match its hash (changed in the object store?)")
    return codec.decode(blob, TokenizerFiles).files


async def publish_card(rt: Runtime, card: ModelCard) -> Lease:
    key = subjects.model_key(rt.namespace, card.component, card.instance_id)
    return await rt.discovery.lease(subjects.MODELS_BUCKET, key, codec.encode(card), heartbeat=True)
