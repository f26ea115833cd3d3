"""Block ids -> NIXL descriptor rows `(address, length, device)`, one list per side.

Runs of blocks that are consecutive on both sides merge into one row, so a
prompt written into fresh (mostly consecutive) blocks moves as few large regions.
"""

from __future__ import annotations

import numpy as np

from protocol.transfer import AgentRecord


def block_runs(src: list[int], dst: list[int]) -> list[tuple[int, int, int]]:
    """`(src_start, dst_start, count)` for each run consecutive on both sides."""
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source blocks for {len(dst)} destination blocks")
    runs: list[tuple[int, int, int]] = []
    for s, d in zip(src, dst, strict=True):
        if runs:
            s0, d0, n = runs[-1]
            if s == s0 + n and d == d0 + n:
                runs[-1] = (s0, d0, n + 1)
                continue
        runs.append((s, d, 1))
    return runs


def region_rows(layout: AgentRecord, starts: list[int], counts: list[int]) -> np.ndarray:
    """Rows for every layer of `layout`, one per run (`starts[i]`, `counts[i]` blocks), layer-major."""
    bpb = np.uint64(layout.bytes_per_block)
    bases = np.asarray(layout.layer_addrs, dtype=np.uint64)[:, None]
    addrs = bases + np.asarray(starts, dtype=np.uint64)[None, :] * bpb
    rows = np.empty((addrs.size, 3), dtype=np.uint64)
    rows[:, 0] = addrs.ravel()
    rows[:, 1] = np.tile(np.asarray(counts, dtype=np.uint64) * bpb, len(layout.layer_addrs))
    rows[:, 2] = layout.device_id
    return rows


def write_rows(local: AgentRecord, remote: AgentRecord, src: list[int], dst: list[int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor rows for copying local blocks `src` into remote blocks `dst`, all layers."""
    if local.bytes_per_block != remote.bytes_per_block or len(local.layer_addrs) != len(remote.layer_addrs):
        raise ValueError("KV layouts differ between the two workers (model, page size or dtype)")
    runs = block_runs(src, dst)
    counts = [n for _, _, n in runs]
    return (region_rows(local, [s for s, _, _ in runs], counts),
            region_rows(remote, [d for _, d, _ in runs], counts))
