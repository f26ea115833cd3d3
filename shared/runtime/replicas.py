"""JetStream replication: how many copies of each bucket and stream, and upgrading old ones in place.

The cluster's size is what the server told this client (the client URLs of every node, INFO
`connect_urls`) or the number of URLs it was given, whichever is larger. A bucket or stream
found with fewer replicas than wanted is updated in place (`update_stream` with
`num_replicas`): its data is kept and nothing is duplicated. Never downgraded.
"""

from __future__ import annotations

import dataclasses

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared.telemetry.logging import get_logger

log = get_logger("shoal.replicas")

CLUSTER_REPLICAS = 3  # the auto default on a cluster of at least this many nodes


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
