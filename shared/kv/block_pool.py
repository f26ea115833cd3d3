"""A pool of fixed-size KV blocks with prefix reuse, reference counts and LRU eviction.

Logical bookkeeping only: block ids index whatever storage an engine keeps
(the reference engine's per-layer tensors; nothing for the mock engine).
Every change to the set of cached blocks is reported as KV events. With a host tier
(shared.kv.host_tier), evicted blocks are copied to host memory and a prompt's prefix
found there is copied back instead of recomputed (it counts as cached).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent
from shared.kv.hashing import block_hash
from shared.kv.host_tier import HostTier

EventSink = Callable[[list[KvEvent]], None]


@dataclass
class BlockTable:
    """The blocks one request holds, in token order."""

    block_ids: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # of the full blocks committed so far
    root: int | None = None  # the first block's parent (shared.kv.hashing.lora_root)
    num_cached_tokens: int = 0  # prompt tokens found in the cache at allocation


class BlockPool:
    def __init__(self, num_blocks: int, page_size: int, sink: EventSink | None = None,
                 host: HostTier | None = None) -> None:
        if num_blocks <= 0 or page_size <= 0:
            raise ValueError("num_blocks and page_size must be positive")
        self.host = host
        self.num_blocks = num_blocks
        self.page_size = page_size
        self._sink = sink
        self._ref = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # never hashed, or evicted
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, ref 0, LRU first

    # ---- queries -------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks a new request could take (free or evictable)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def cached_prefix(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are cached now."""
        n = 0
        for h in hashes:
            if h not in self._by_hash:
                break
            n += 1
        return n

    def cached_tokens(self, tokens: Sequence[int], root: int | None = None) -> int:
        """Tokens of a prompt that `allocate` would find cached (never its last token: it is recomputed)."""
        if len(tokens) < 2:
            return 0
        n = (len(tokens) - 1) // self.page_size
        return self.cached_prefix(self._hash_prefix(tokens, n, root)) * self.page_size

    def ref_count(self, block_id: int) -> int:
        return self._ref[block_id]

    # ---- allocation ----------------------------------------------------------------
    def allocate(self, tokens: Sequence[int], hashes: Sequence[int] | None = None,
                 root: int | None = None) -> BlockTable | None:
        """Blocks for a prompt, reusing cached full blocks; None if it does not fit now.

        The last prompt token is always recomputed (its logits are needed), so a
        prompt never counts as cached beyond the last full block before it.
        """
        ps = self.page_size
        limit = (len(tokens) - 1) // ps
        if hashes is None:
            hashes = self._hash_prefix(tokens, limit, root)
        reusable = min(self.cached_prefix(hashes), limit)
        on_host = self._host_run(hashes, reusable, limit)
        need = self.blocks_needed(len(tokens)) - reusable
        fresh_free = sum(1 for h in hashes[:reusable] if self._ref[self._by_hash[h]] == 0)
        if need > self.num_free - fresh_free:
            return None
        table = BlockTable(root=root)
        for h in hashes[:reusable]:
            bid = self._by_hash[h]
            self._take(bid)
            table.block_ids.append(bid)
            table.hashes.append(h)
        reloaded = self._reload(table, on_host)
        table.num_cached_tokens = (reusable + reloaded) * ps
        for _ in range(need - (len(table.block_ids) - reusable)):
            table.block_ids.append(self._pop_free())
        if reloaded:
            self._send([self._stored_event(table, tokens, list(range(reusable, reusable + reloaded)), ps)])
        return table

    def _host_run(self, hashes: Sequence[int], start: int, limit: int) -> list[int]:
        """The blocks after the GPU-cached prefix that the host tier holds (to reload, not recompute)."""
        host = self.host
        if host is None:
            return []
        end = start
        while end < min(len(hashes), limit) and hashes[end] in host and hashes[end] not in self._by_hash:
            end += 1
        return list(hashes[start:end])

    def _reload(self, table: BlockTable, hashes: list[int]) -> int:
        """Copy host blocks into fresh GPU blocks of `table`, in order; how many made it (taking a GPU block
        may evict another one to host, which could displace a later block of the run)."""
        host = self.host
        if host is None or not hashes:
            return 0
        host.touch(hashes)
        n = 0
        for h in hashes:
            bid = self._pop_free()
            if h not in host:  # displaced by the block that made room: compute it (bid stays in the table)
                table.block_ids.append(bid)
                break
            host.load(h, bid)
            self._by_hash[h] = bid
            self._hash_of[bid] = h
            table.block_ids.append(bid)
            table.hashes.append(h)
            n += 1
        return n

    def grow(self, table: BlockTable, num_tokens: int) -> bool:
        """Make room for `num_tokens` tokens in total; False if the pool is full."""
        need = self.blocks_needed(num_tokens) - len(table.block_ids)
        if need > self.num_free:
            return False
        for _ in range(need):
            table.block_ids.append(self._pop_free())
        return True

    def commit(self, table: BlockTable, tokens: Sequence[int]) -> None:
        """Register every newly full block of `tokens` (computed KV) in the cache."""
        ps = self.page_size
        full = min(len(tokens) // ps, len(table.block_ids))
        stored: list[int] = []
        first = len(table.hashes)
        parent = table.hashes[-1] if table.hashes else table.root
        for i in range(first, full):
            h = block_hash(parent, tokens[i * ps : (i + 1) * ps])
            bid = table.block_ids[i]
            table.hashes.append(h)
            parent = h
            if h in self._by_hash:  # same content computed twice: keep the older copy cached
                continue
            self._by_hash[h] = bid
            self._hash_of[bid] = h
            stored.append(i)
        if stored:
            self._emit_stored(table, tokens, stored)

    def free(self, table: BlockTable) -> None:
        """Release a request's blocks; cached ones stay reusable until evicted."""
        for bid in reversed(table.block_ids):
            self._ref[bid] -= 1
            if self._ref[bid] < 0:
                raise AssertionError(f"block {bid} freed twice")
            if self._ref[bid] == 0:
                if self._hash_of[bid] is None:
                    self._free.append(bid)
                else:
                    self._evictable[bid] = None
        table.block_ids.clear()
        table.hashes.clear()

    def clear(self) -> None:
        """Drop every cached block that no request holds (e.g. a cache flush)."""
        for bid in list(self._evictable):
            self._uncache(bid)
            self._free.append(bid)
        self._evictable.clear()
        if self.host is not None:
            self.host.clear()
        self._send([AllBlocksCleared()])

    # ---- internals -----------------------------------------------------------------
    def _hash_prefix(self, tokens: Sequence[int], n_blocks: int, parent: int | None) -> list[int]:
        out: list[int] = []
        ps = self.page_size
        for i in range(n_blocks):
            parent = block_hash(parent, tokens[i * ps : (i + 1) * ps])
            if parent not in self._by_hash and (self.host is None or parent not in self.host):
                break
            out.append(parent)
        return out

    def _take(self, bid: int) -> None:
        if self._ref[bid] == 0:
            self._evictable.pop(bid, None)
        self._ref[bid] += 1

    def _pop_free(self) -> int:
        if self._free:
            bid = self._free.pop()
        else:
            bid, _ = self._evictable.popitem(last=False)
            h = self._uncache(bid)
            saved = self.host.save(h, bid) if self.host is not None else []  # host copy first, then GPU gone
            self._send([*saved, BlockRemoved(block_hashes=[h])])
        self._ref[bid] = 1
        return bid

    def _uncache(self, bid: int) -> int:
        h = self._hash_of[bid]
        assert h is not None
        self._hash_of[bid] = None
        if self._by_hash.get(h) == bid:
            del self._by_hash[h]
        return h

    def _emit_stored(self, table: BlockTable, tokens: Sequence[int], idx: list[int]) -> None:
        ps = self.page_size
        events: list[KvEvent] = []
        run: list[int] = []
        for i in idx:  # group consecutive blocks into one event each
            if run and i != run[-1] + 1:
                events.append(self._stored_event(table, tokens, run, ps))
                run = []
            run.append(i)
        events.append(self._stored_event(table, tokens, run, ps))
        self._send(events)

    @staticmethod
    def _stored_event(table: BlockTable, tokens: Sequence[int], run: list[int], ps: int) -> BlockStored:
        parent = table.hashes[run[0] - 1] if run[0] > 0 else None
        return BlockStored(
            block_hashes=[table.hashes[i] for i in run],
            token_ids=list(tokens[run[0] * ps : (run[-1] + 1) * ps]),
            parent_hash=parent,
            block_size=ps,
        )

    def _send(self, events: list[KvEvent]) -> None:
        if self._sink is not None:
            self._sink(events)
