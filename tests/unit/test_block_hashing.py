"""The block hash: one chain whichever way it is computed, and the router's cheap check for stand-in ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.kv.hashing import block_hash, block_hashes, has_negative, pack_tokens, packed_block_hashes

TOKENS = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=70)


@given(TOKENS, st.sampled_from([1, 4, 16]), st.one_of(st.none(), st.integers(0, 2**63 - 1)))
def test_the_prompt_at_once_equals_block_by_block(tokens: list[int], page: int, parent: int | None) -> None:
    chained, h = [], parent
    for start in range(0, len(tokens) - page + 1, page):
        h = block_hash(h, tokens[start : start + page])
        chained.append(h)
    assert block_hashes(tokens, page, parent) == chained == packed_block_hashes(pack_tokens(tokens), page, parent)
    assert all(0 <= x < 2**63 for x in chained)


@given(TOKENS)
def test_has_negative_is_min_below_zero(tokens: list[int]) -> None:
    assert has_negative(pack_tokens(tokens)) == (bool(tokens) and min(tokens) < 0)


def test_a_block_depends_on_its_parent_and_every_token() -> None:
    block = list(range(16))
    assert block_hash(None, block) == block_hash(0, block)
    assert len({block_hash(None, block), block_hash(1, block), block_hash(None, [*block[:15], 99])}) == 3
