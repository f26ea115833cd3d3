"""gpt-oss (harmony) output: messages `<|start|>assistant<|channel|>CH[ to=R]<|message|>BODY<|end|>`.

Two forms of a call: the recipient in the channel (`<|channel|>commentary to=functions.NAME <|constrain|>json
<|message|>ARGS<|call|>`) or in the header (`<|start|>assistant to=functions.NAME<|channel|>commentary json
<|message|>ARGS<|call|>`). analysis -> reasoning, final and commentary without a recipient -> content,
a `functions.` recipient -> a call (its JSON streams as it arrives). The first message's `<|start|>assistant`
is in the prompt. `<|call|>` and `<|return|>` end the generation, so the detokenizer may have dropped them:
the output's end ends a message too. Learned from the harmony format's documentation, not from
openai-harmony (its encoding files are fetched from the network on first use).
"""

from __future__ import annotations

import re

from shared.parsers.jsonscan import JsonSpan
from shared.parsers.output import CallDelta, Parsed
from shared.parsers.scan import find_first, partial_suffix

_HEADS = ("<|start|>", "<|channel|>", "to=")
_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_NEXT = ("<|start|>", "<|channel|>")
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")


class HarmonyParser:
    def __init__(self, calls: bool) -> None:
        self.calls = calls
        self.buf = ""
        self.state = "start"  # start -> header -> body -> start ...; text: plain output, no harmony framing
        self.kind = "content"  # the open body: content, reasoning or call
        self.count = 0  # calls so far (the open one included)
        self.sent_args = False
        self.args = ""  # the open call's arguments so far (a JSON object cut short is closed when it ends)

    def feed(self, text: str, final: bool = False) -> Parsed:
        self.buf += text
        out = Parsed()
        while True:
            if self.state == "start":
                s = self.buf.lstrip()
                if not s:
                    if final:
                        self.buf = ""
                    return out
                if s.startswith(_HEADS):
                    self.buf, self.state = s, "header"
                elif any(h.startswith(s) for h in _HEADS) and not final:
                    return out
                else:
                    self.state = "text"
            if self.state == "text":
                hit = find_first(self.buf, _NEXT)
                if hit is None:
                    keep = 0 if final else partial_suffix(self.buf, _NEXT)
                    out.content += self.buf[: len(self.buf) - keep]
                    self.buf = self.buf[len(self.buf) - keep :]
                    return out
                out.content += self.buf[: hit[0]]
                self.buf, self.state = self.buf[hit[0] :], "header"
            if self.state == "header":
                i = self.buf.find("<|message|>")
                if i < 0:
                    if final:  # a header cut short: nothing was said
                        self.buf = ""
                    return out
                self._open(self.buf[:i], out)
                self.buf, self.state = self.buf[i + len("<|message|>") :], "body"
            if self.state == "body":
                if not self._body(out, final):
                    return out

    def _open(self, header: str, out: Parsed) -> None:
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        name = recipient.group(1) if recipient else ""
        if name.startswith("functions.") and self.calls:
            self.kind = "call"
            out.calls.append(CallDelta(self.count, name[len("functions.") :], ""))
            self.count += 1
            self.sent_args = False
            self.args = ""
        elif (channel and channel.group(1) == "analysis") or name:
            self.kind = "reasoning"  # the analysis channel, and built-in tools (browser, python)
        else:
            self.kind = "content"

    def _body(self, out: Parsed, final: bool) -> bool:
        """Emit the open body as far as it is known; True when it ended (and scanning goes on)."""
        hit = find_first(self.buf, (*_ENDS, *_NEXT))
        if hit is None:
            keep = 0 if final else partial_suffix(self.buf, (*_ENDS, *_NEXT))
            body = self.buf[: len(self.buf) - keep]
            if self.kind == "call" and not final:
                body = body.rstrip()  # whitespace before <|call|> is no part of the arguments
            self._say(body, out, ended=final)
            self.buf = self.buf[len(body) :] if not final else ""
            if final:
                self.state = "start"
            return False
        body, marker = self.buf[: hit[0]], hit[1]
        self._say(body, out, ended=True)
        self.buf = self.buf[hit[0] + (len(marker) if marker in _ENDS else 0) :]
        self.state = "start"
        return True

    def _say(self, body: str, out: Parsed, ended: bool) -> None:
        if self.kind == "call":
            if ended:
                body = body.rstrip()
            if body:
                out.calls.append(CallDelta(self.count - 1, None, body))
                self.sent_args = True
                self.args += body
            if ended and self.args.lstrip().startswith("{"):
                span = JsonSpan(len(self.args) - len(self.args.lstrip()))
                if span.advance(self.args) is None and not span.bad:  # cut short (max_tokens, a stop): closed
                    out.calls.append(CallDelta(self.count - 1, None, span.closing(self.args)))
            elif ended and not self.sent_args:
                out.calls.append(CallDelta(self.count - 1, None, "{}"))
            if ended:
                self.kind = "content"
        elif self.kind == "reasoning":
            out.reasoning += body
        else:
            out.content += body
