"""SGLang's KV events -> shoal's, re-hashed with shoal's block hash.

SGLang names blocks by its own hashes; the router knows only shoal's
(`shared.kv.hashing`). Each stored block is re-hashed from its tokens,
chained on its parent's shoal hash, and remembered, so a later removal
(which carries SGLang hashes only) can be translated too.

HiCache's host and storage tiers send the same events with another `medium`:
each tier is translated on its own (shoal's event `medium`: gpu, host, storage),
so a block on host after its GPU copy went is a host hit for the router; a
medium shoal does not know is dropped. A partial page is not a block for the
router; a block whose parent was never seen cannot be hashed and is
dropped, with its descendants.

A LoRA adapter's blocks (an event's `lora_id`) chain on the adapter's root
(`shared.kv.hashing.lora_root`), as the router hashes a request for that
adapter, so they count for that adapter only; an id `adapter_of` cannot name
is dropped rather than counted for the base model. EAGLE's bigram keys
([token, next token] per position) are read as their first tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent
from shared.engine.sglang.wire import WireCleared, WireEvent, WireRemoved, WireStored
from shared.kv.hashing import block_hash, lora_root

# SGLang's medium -> shoal's tier (protocol.kv_events.TIERS); events without a medium are GPU events
TIER_OF_MEDIUM = {None: "gpu", "GPU": "gpu", "CPU_PINNED": "host", "CPU": "host", "DISK": "storage",
                  "EXTERNAL": "storage"}


AdapterOf = Callable[[Any], "str | None"]  # SGLang's lora_id -> the adapter's name (None: unknown)


class BlockHashTranslator:
    def __init__(self, page_size: int, adapter_of: AdapterOf | None = None) -> None:
        self.page_size = page_size
        self.adapter_of = adapter_of
        self._tiers: dict[str, tuple[dict[int, int], dict[int, int]]] = {
            tier: ({}, {}) for tier in set(TIER_OF_MEDIUM.values())}  # per tier: the two maps below
        self._ours, self._refs = self._tiers["gpu"]  # SGLang hash -> shoal hash; shoal hash -> SGLang hashes
        self.dropped = 0  # blocks not forwarded (unknown parent, partial page, bigram key, unknown medium)

    @property
    def num_blocks(self) -> int:
        return sum(len(refs) for _, refs in self._tiers.values())

    def _use(self, medium: str | None) -> str | None:
        """Point the maps at the tier of `medium`; its shoal name, None for a medium shoal does not know."""
        tier = TIER_OF_MEDIUM.get(medium)
        if tier is not None:
            self._ours, self._refs = self._tiers[tier]
        return tier

    def translate(self, events: Iterable[WireEvent]) -> list[KvEvent]:
        out: list[KvEvent] = []
        for ev in events:
            if isinstance(ev, WireCleared):
                for ours, refs in self._tiers.values():
                    ours.clear()
                    refs.clear()
                out.append(AllBlocksCleared())
                continue
            tier = self._use(ev.medium)
            if tier is None:
                self.dropped += len(ev.block_hashes)
            elif isinstance(ev, WireStored):
                self._stored(ev, out, tier)
            elif isinstance(ev, WireRemoved):
                self._removed(ev, out, tier)
        return out

    def _parent(self, sg_hash: int) -> int | None:
        """A parent's shoal hash: it may sit in another tier than its child (e.g. GPU above a host tail)."""
        found = self._ours.get(sg_hash)
        for ours, _ in self._tiers.values() if found is None else ():
            found = ours.get(sg_hash)
            if found is not None:
                break
        return found

    def _stored(self, ev: WireStored, out: list[KvEvent], tier: str = "gpu") -> None:
        parent = None if ev.parent_hash is None else self._parent(ev.parent_hash)
        if ev.parent_hash is not None and parent is None:
            self.dropped += len(ev.block_hashes)
            return
        first_parent = parent
        if ev.parent_hash is None and ev.lora_id is not None:  # an adapter's first block: its own root
            name = self.adapter_of(ev.lora_id) if self.adapter_of is not None else None
            if not name:
                self.dropped += len(ev.block_hashes)
                return
            parent = lora_root(name)
        hashes: list[int] = []
        tokens: list[int] = []
        for sg_hash, block in zip(ev.block_hashes, _blocks(ev), strict=False):
            if len(block) != self.page_size or not all(isinstance(t, int) for t in block):
                self.dropped += 1
                break
            ours = block_hash(parent, block)
            self._remember(sg_hash, ours)
            hashes.append(ours)
            tokens += block
            parent = ours
        if hashes:
            _append_stored(out, hashes, tokens, first_parent, self.page_size, tier)

    def _remember(self, sg_hash: int, ours: int) -> None:
        if self._ours.get(sg_hash) == ours:
            return
        self._ours[sg_hash] = ours
        self._refs[ours] = self._refs.get(ours, 0) + 1

    def _removed(self, ev: WireRemoved, out: list[KvEvent], tier: str = "gpu") -> None:
        gone: list[int] = []
        for sg_hash in ev.block_hashes:
            ours = self._ours.pop(sg_hash, None)
            if ours is None:
                continue
            left = self._refs[ours] - 1
            if left:
                self._refs[ours] = left
            else:
                del self._refs[ours]
                gone.append(ours)
        if not gone:
            return
        if out and isinstance(out[-1], BlockRemoved) and out[-1].medium == tier:
            out[-1] = BlockRemoved(block_hashes=[*out[-1].block_hashes, *gone], medium=tier)
        else:
            out.append(BlockRemoved(block_hashes=gone, medium=tier))


def _blocks(ev: WireStored) -> list[list[int]]:
    """The token lists of the event's blocks (one per hash); an EAGLE bigram key's pairs give their first."""
    ids = [t[0] if isinstance(t, (list, tuple)) and len(t) == 2 else t for t in ev.token_ids]
    if len(ev.block_hashes) == 1:
        return [ids]
    size = ev.block_size
    return [ids[i * size : (i + 1) * size] for i in range(len(ev.block_hashes))]


def _append_stored(out: list[KvEvent], hashes: list[int], tokens: list[int], parent: int | None,
                   page_size: int, tier: str = "gpu") -> None:
    """Add a stored run, merged into the previous event when it continues that chain in the same tier."""
    last = out[-1] if out else None
    if isinstance(last, BlockStored) and parent is not None and last.block_hashes[-1] == parent \
            and last.medium == tier:
        out[-1] = BlockStored(block_hashes=[*last.block_hashes, *hashes], token_ids=[*last.token_ids, *tokens],
                              parent_hash=last.parent_hash, block_size=page_size, medium=tier)
    else:
        out.append(BlockStored(block_hashes=hashes, token_ids=tokens, parent_hash=parent, block_size=page_size,
                               medium=tier))
