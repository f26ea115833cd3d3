"""Agent metadata through discovery: each worker that takes writes publishes its `AgentRecord`
in the JetStream KV bucket `shoal-nixl` under a lease; a writer fetches a peer's
record on first use and loads it into its agent.
"""

from __future__ import annotations

from protocol import codec
from protocol.subjects import NIXL_BUCKET, agent_key
from protocol.transfer import AgentRecord
from shared.errors import TransferFailed
from shared.runtime.discovery import Lease
from shared.runtime.runtime import Runtime
from shared.transfer.agent import KvAgent


class AgentDirectory:
    def __init__(self, rt: Runtime, agent: KvAgent) -> None:
        self.rt = rt
        self.agent = agent
        self._lease: Lease | None = None

    async def publish(self) -> None:
        key = agent_key(self.rt.namespace, self.agent.name)
        self._lease = await self.rt.discovery.lease(NIXL_BUCKET, key, codec.encode(self.agent.record))

    async def revoke(self) -> None:
        if self._lease is not None:
            await self._lease.revoke()
            self._lease = None

    async def peer(self, instance_id: str) -> AgentRecord:
        """The peer's record, loaded into the local agent (fetched once per peer)."""
        known = self.agent.peer(instance_id)
        if known is not None:
            return known
        kv = await self.rt.discovery.bucket(NIXL_BUCKET)
        try:
            entry = await kv.get(agent_key(self.rt.namespace, instance_id))
        except Exception as e:
            raise TransferFailed(f"no NIXL agent published by instance {instance_id}: {e}") from e
        if not entry.value:
            raise TransferFailed(f"no NIXL agent published by instance {instance_id}")
        return await self.agent.add_peer(codec.decode(entry.value, AgentRecord))
