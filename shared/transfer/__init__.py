"""KV transfer between workers over NIXL (disaggregated prefill/decode on the reference engine).

- `agent.KvAgent`: one NIXL agent per process, KV tensors registered once, writes with a
  completion notification, every NIXL call on one thread.
- `directory.AgentDirectory`: agent metadata published in / fetched from the `shoal-nixl` bucket.
- `inbox.NotificationInbox`: the receiver waits for a room's `done` / `abort` notification.
- the wire structs (`AgentRecord`, `PrefillRequest`, `PrefillResult`) live in `protocol.transfer`.
"""

from protocol.transfer import AgentRecord, PrefillRequest, PrefillResult
from shared.errors import TransferFailed
from shared.transfer.agent import KvAgent
from shared.transfer.directory import AgentDirectory
from shared.transfer.inbox import NotificationInbox

__all__ = ["AgentDirectory", "AgentRecord", "KvAgent", "NotificationInbox", "PrefillRequest",
           "PrefillResult", "TransferFailed"]
