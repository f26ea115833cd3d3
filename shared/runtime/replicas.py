"""JetStream replication: how many copies of each bucket and stream, and upgrading old ones in place.

The cluster's size is what the server told this client (the client URLs of every node, INFO
`connect_urls`) or the number of URLs it was given, whichever is larger. A bucket or stream
found with fewer replicas than wanted is updated in place (`update_stream` with
`num_replicas`): its data is kept and nothing is duplicated. Never downgraded.
`while_electing` retries a write while a stream has no leader (just made, or its node lost).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from shared.telemetry.logging import get_logger

log = get_logger("shoal.replicas")

CLUSTER_REPLICAS = 3  # the auto default on a cluster of at least this many nodes
ELECTION_WAIT_S = 15.0  # a replicated stream elects a leader in seconds (4 to 10 after its node is lost)
_NO_LEADER = (NoStreamResponseError, ServiceUnavailableError,  # no stream leader; no meta leader (503)
              nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError)
T = TypeVar("T")


def cluster_size(nc: NATS) -> int:
    """The nodes' client URLs the server advertises (INFO connect_urls; nats-py keeps INFO only in
    `_server_info`) or the URLs this client was given, whichever are more (a node that has not yet
    met its peers advertises only itself)."""
    advertised = set(nc._server_info.get("connect_urls") or [])
    given = [u for u in nc.servers if u not in nc.discovered_servers]
    return max(len(advertised), len(given), 1)


def replicas_for(nc: NATS, wanted: int = 0) -> int:
    """`wanted` (0: 3 on a cluster of 3+ nodes, else 1), never more than the cluster has nodes."""
    size = cluster_size(nc)
    if wanted <= 0:
        return CLUSTER_REPLICAS if size >= CLUSTER_REPLICAS else 1
    return min(wanted, size)


async def ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Raise `stream`'s replicas to `replicas` if it has fewer (in place, data kept).

    A failed upgrade (no permission, too few nodes up) is logged, not raised: the stream still serves.
    """
    try:
        info = await js.stream_info(stream)
        have = info.config.num_replicas or 1
        if have >= replicas:
            return
        await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
    except Exception as e:
        log.warning("stream_replicas_unchanged", stream=stream, wanted=replicas, error=str(e) or type(e).__name__)
        return
    log.info("stream_replicas_raised", stream=stream, replicas=replicas, was=have)


async def while_electing(op: Callable[[], Awaitable[T]], wait: float = ELECTION_WAIT_S) -> T:
    """`op()`, tried again while JetStream answers nothing or "temporarily unavailable" (a new
    replicated stream, or one whose leader was lost, has no leader yet; or the cluster is electing
    its meta leader), for up to `wait` seconds."""
    end = time.monotonic() + wait
    while True:
        try:
            return await op()
        except _NO_LEADER:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)
