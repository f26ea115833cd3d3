"""Content with tool-call regions -> content and call deltas, incrementally (arguments stream as they arrive)."""

from __future__ import annotations

import re

from shared.parsers.output import CallDelta, Malformed, Parsed, Scan, ToolFormat
from shared.parsers.scan import find_first, partial_suffix


class ToolCallParser:
    """Whitespace right before a call, and at the end of an output with calls, is dropped (it only separates
    calls). Text that may still become a start marker is held back."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self.buf = ""
        self.started = False  # any output seen (at_start_only markers count only before)
        self.in_region = False  # buf begins with a region that is not complete yet
        self.gap = ""  # whitespace before the open region: dropped if it holds calls, content if not
        self.count = 0  # calls of earlier regions
        self.sent: list[int] = []  # per call of the open region: characters of its arguments sent
        self.any_call = False
        self.firsts = re.compile("[" + re.escape("".join({m[0] for m in fmt.starts})) + "]" if fmt.starts else "(?!)")

    def feed(self, text: str, final: bool = False) -> Parsed:
        if not self.buf and not final and self.started and not self.in_region and text \
                and not self.firsts.search(text) and not text[-1].isspace():
            return Parsed(content=text)  # plain text that cannot begin a marker: the common case, fast
        if self.in_region and not final and self.fmt.quiet(text):
            self.buf += text
            return Parsed()
        self.buf += text
        out = Parsed()
        while self.buf:
            if not self.in_region:
                region = self._region_start()
                if region is None:
                    self._emit_safe(out, final)
                    break
                before = self.buf[:region]
                out.content += before.rstrip()
                self.gap = before[len(before.rstrip()) :]
                self.buf, self.started, self.in_region = self.buf[region:], True, True
                self.fmt.reset()
            try:
                scan = self.fmt.scan(self.buf, final)
            except Malformed as e:
                if not self.sent and not e.cut:
                    out.content += self.gap + self.buf[: e.length]
                self._close_region(e.length)
                continue
            self._send(scan, out)
            if scan.used is None:
                break
            self._close_region(scan.used)
        return out

    def _close_region(self, used: int) -> None:
        self.buf, self.gap, self.in_region = self.buf[used:], "", False
        self.count += len(self.sent)
        self.sent = []
        self.fmt.reset()

    def _send(self, scan: Scan, out: Parsed) -> None:
        for i, call in enumerate(scan.calls):
            if i == len(self.sent):
                out.calls.append(CallDelta(self.count + i, call.name, ""))
                self.sent.append(0)
                self.any_call = True
            if len(call.arguments) > self.sent[i]:
                out.calls.append(CallDelta(self.count + i, None, call.arguments[self.sent[i] :]))
                self.sent[i] = len(call.arguments)

    def _region_start(self) -> int | None:
        if not self.started and self.fmt.at_start_only:
            stripped = self.buf.lstrip()
            lead = len(self.buf) - len(stripped)
            if any(stripped.startswith(m) for m in self.fmt.at_start_only):
                return lead
        hit = find_first(self.buf, self.fmt.starts)
        return None if hit is None else hit[0]

    def _emit_safe(self, out: Parsed, final: bool) -> None:
        """Emit what cannot become a marker; hold the rest (and trailing whitespace) until more comes."""
        if final:  # a start marker cut short by the end of the output (4 characters or more) is dropped
            keep = partial_suffix(self.buf, self.fmt.starts)
            text = self.buf[: len(self.buf) - keep] if keep >= 4 else self.buf
            out.content += text.rstrip() if self.any_call or keep >= 4 else text
            self.buf = ""
            return
        if not self.started and self.fmt.at_start_only:
            stripped = self.buf.lstrip()
            if not stripped or any(m.startswith(stripped) for m in self.fmt.at_start_only):
                return  # may still open a region at the start
        keep = partial_suffix(self.buf, self.fmt.starts)
        cut = len(self.buf) - keep
        cut = len(self.buf[:cut].rstrip())
        if cut:
            out.content += self.buf[:cut]
            self.buf, self.started = self.buf[cut:], True
