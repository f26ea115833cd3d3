"""A token's own bytes (OpenAI's `logprobs.content[].bytes`): what the token adds to the output's UTF-8.

A byte-level token that holds part of a character decodes alone to U+FFFD; its own bytes are
read from its vocabulary entry instead: GPT-2's byte-to-unicode alphabet (byte-level BPE) or
SentencePiece's `<0xHH>` byte fallback. Joining the bytes of every token gives the text's UTF-8.
"""

from __future__ import annotations

import functools
import re

from shared.tokenizer.tokenizer import Tokenizer

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


def token_bytes(tok: Tokenizer, token_id: int, text: str | None = None) -> bytes:
    """The bytes token `token_id` contributes (`text`: its decoded text, when the caller has it)."""
    if text is None:
        text = tok.decode([token_id], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text.encode()
    piece = tok.id_to_token(token_id) or ""
    if m := _BYTE_PIECE.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    table = _unicode_to_byte()
    if piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return text.encode()
