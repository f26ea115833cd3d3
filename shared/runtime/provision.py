"""`shoal setup`: create a namespace's JetStream buckets and streams, once, with the setup credential.

Where NATS access control is on (deploy/nats/render_config.py), only the setup role may create,
update, purge or delete streams and buckets; every service opens the ones made here (and
says which command to run when one is missing). Without access control the services still
create what they need on first use, so `just up` and the tests need no setup step.
Idempotent: existing buckets are kept (their replicas raised if fewer than wanted).
"""

from __future__ import annotations

import argparse
import asyncio

from protocol import subjects
from shared.config.args import add_common_args, common_from_args
from shared.runtime.discovery import open_bucket
from shared.runtime.models import artifacts_store
from shared.runtime.publishers import ensure_kv_stream
from shared.runtime.replicas import while_electing
from shared.runtime.runtime import Runtime

BUCKETS = (subjects.INSTANCES_BUCKET, subjects.MODELS_BUCKET, subjects.NIXL_BUCKET)


async def provision(rt: Runtime) -> list[str]:
    """Create (or keep) every bucket and stream of `rt.namespace`; their JetStream stream names."""
    made = []
    for bucket in BUCKETS:
        await while_electing(lambda b=bucket: open_bucket(rt.js, b, replicas=rt.replicas))
        made.append(f"KV_{bucket}")
    await artifacts_store(rt)
    made.append(f"OBJ_{subjects.ARTIFACTS_STORE}")
    made.append(await ensure_kv_stream(rt))
    return made


def add_setup_args(p: argparse.ArgumentParser) -> None:
    add_common_args(p)


def setup(a: argparse.Namespace) -> int:
    cfg = common_from_args(a)

    async def run() -> list[str]:
        rt = await Runtime.connect(cfg.nats, cfg.namespace, "setup")
        try:
            return await provision(rt)
        finally:
            await rt.close()

    for name in asyncio.run(run()):
        print(name)
    return 0
