"""Per-request grammar state in an engine: which tokens may come next, and the tokens that came."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: xgrammar (and torch) take seconds to import, and only grammars need them
    import torch
    import xgrammar as xgr


class TokenMask:
    """A request's grammar matcher. `allowed_mask` before sampling, `accept` after (one token a step)."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = vocab_size

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write this request's allowed tokens into row `row` of an xgrammar bitmask."""
        self.matcher.fill_next_token_bitmask(bitmask, row)

    def allowed_ids(self) -> torch.Tensor:
        """Ids the grammar allows next (the mock engine draws among them)."""
        import torch
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        self.fill(bitmask, 0)
        logits = torch.zeros(1, self.vocab_size)
        xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=self.vocab_size)
        return torch.nonzero(logits[0] == 0).flatten()

    def accept(self, token: int) -> bool:
        """Advance by `token`; False when the grammar refuses it (or had ended already)."""
        return bool(self.matcher.accept_token(token))

    @property
    def done(self) -> bool:
        """The grammar reached its end (it accepted a stop token)."""
        return bool(self.matcher.is_terminated())


def apply_masks(logits: torch.Tensor, masks: list[TokenMask | None]) -> None:
    """Constrained rows of `logits` [rows, vocab] keep only their grammar's tokens (in place, one batch)."""
    rows = [i for i, m in enumerate(masks) if m is not None]
    if not rows:
        return
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(len(masks), logits.shape[1])
    for i in rows:
        masks[i].fill(bitmask, i)  # type: ignore[union-attr]
    xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
