"""End-of-turn tokens a model writes last (`<|im_end|>`, `<|eot_id|>`, DeepSeek's end of sentence, `</s>`, ...): the
detokenizer skips special tokens, but outputs recorded or decoded with them keep one at the end. Dropped there
only (as text in the middle of an answer, `</s>` is a strikethrough's end)."""

from __future__ import annotations

from shared.parsers.scan import partial_suffix

# each begins with "<" (the fast paths count on it)
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
              "<\uff5cend\u2581of\u2581sentence\uff5c>", "</s>", "<|eos|>", "<end_of_turn>")


class TrailingEos:
    """`feed(text)` -> the text, less what may still turn out to be the output's last end-of-turn token (held
    back until more text shows it is not the last, or dropped by `feed("", final=True)`)."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str, final: bool = False) -> str:
        if not self.held and "<" not in text:  # every token begins with "<": the common case, fast
            return text
        text = self.held + text
        body = text.rstrip()
        tok = next((t for t in EOS_TOKENS if body.endswith(t)), "")
        if final:
            self.held = ""
            return body[: len(body) - len(tok)] if tok else text
        keep = len(text) - len(body) + len(tok) if tok else partial_suffix(text, EOS_TOKENS)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]
