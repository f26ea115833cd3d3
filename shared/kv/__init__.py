"""KV cache bookkeeping shared by engines and routers."""

from shared.kv.hashing import block_hash, block_hashes

__all__ = ["block_hash", "block_hashes"]
