"""Wire structs and tags of disaggregated serving.

A decode worker publishes its `AgentRecord` in the `shoal-nixl` bucket
(`subjects.NIXL_BUCKET`, key `subjects.agent_key`); it sends a prefill worker a
`PrefillRequest` naming the blocks to write, and gets one `PrefillResult` back
once they are written. The NIXL write carries `done_tag(room)`; a prefill that
gives up sends `abort_tag(room)`. With SGLang's own transfer the request carries
only the bootstrap (host, port, room) and `dst_block_ids` stays empty.
"""

from __future__ import annotations

import msgspec

from protocol.messages import EngineRequest


class AgentRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a writer needs to reach a worker's KV: NIXL metadata and where each layer's tensor lives."""

    name: str  # NIXL agent name (= the worker's instance id)
    metadata: bytes
    layer_addrs: list[int]  # base address of each layer's KV tensor
    bytes_per_block: int  # block b of a layer starts at layer_addrs[l] + b * bytes_per_block
    num_blocks: int
    mem_type: str = "DRAM"  # "DRAM" | "VRAM"
    device_id: int = 0


class PrefillRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """To a prefill worker: compute `request`'s prompt and write its KV into the decode worker's blocks.

    `request.bootstrap` names the decode worker (instance_id = its NIXL agent) and the
    room (tag of the completion notification). Blocks before `first_block` are already
    cached on the decode worker and are not written.
    """

    request: EngineRequest
    dst_block_ids: list[int]
    first_block: int = 0


class PrefillResult(msgspec.Struct, frozen=True, omit_defaults=True):
    first_token: int
    first_logprob: float | None = None
    num_tokens: int = 0
    blocks_written: int = 0


def done_tag(room: int) -> bytes:
    """Notification carried by the KV write: the blocks of `room` are in place."""
    return f"done:{room}".encode()


def abort_tag(room: int) -> bytes:
    """Notification sent when a prefill gives up: nothing more will be written for `room`."""
    return f"abort:{room}".encode()


def parse_tag(msg: bytes) -> tuple[str, int] | None:
    kind, _, room = msg.decode(errors="replace").partition(":")
    if kind not in ("done", "abort") or not room.isdigit():
        return None
    return kind, int(room)
