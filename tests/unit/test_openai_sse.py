"""OpenAI's SSE framing shared by the chat and completions renderers (services.frontend.render.openai_sse):
a chunk that finishes its choice is held so the end (usage when asked, then [DONE]) goes out in the same write;
an error step ends the stream with its error event after what was held; the frames are closed either way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.messages import Usage
from services.frontend.http_errors import SSE_DONE, sse_error_step
from services.frontend.render import openai_sse
from services.frontend.steps import ErrorStep, FinishStep, Frame, TextStep, UsageStep


class Frames:
    def __init__(self, frames: list[Frame]) -> None:
        self.frames, self.closed = frames, False

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Frame]:
        for f in self.frames:
            yield f

    async def aclose(self) -> None:
        self.closed = True


def _chunk(frame: Frame) -> tuple[bytes, bool]:
    text = "".join(s.text for s in frame if isinstance(s, TextStep)).encode()
    return text, any(isinstance(s, FinishStep) for s in frame)


async def _writes(frames: Frames, usage: bool) -> list[bytes]:
    event = (lambda u: f"<usage {u.completion_tokens}>".encode()) if usage else None
    return [w async for w in openai_sse(frames, _chunk, event)]  # type: ignore[arg-type]


async def test_the_last_chunk_the_usage_and_done_go_out_in_one_write() -> None:
    frames = Frames([[TextStep("a")], [TextStep("b"), FinishStep("stop")], [UsageStep(Usage(3, 2))]])
    assert await _writes(frames, usage=True) == [b"a", b"b<usage 2>" + SSE_DONE]
    assert frames.closed
    frames = Frames([[TextStep("a")], [TextStep("b"), FinishStep("stop")], [UsageStep(Usage(3, 2))]])
    assert await _writes(frames, usage=False) == [b"a", b"b" + SSE_DONE]


async def test_an_error_ends_the_stream_after_what_was_held() -> None:
    err = ErrorStep(502, "worker_lost", "lost")
    frames = Frames([[TextStep("a"), FinishStep("stop")], [err], [TextStep("never")]])
    assert await _writes(frames, usage=True) == [b"a" + sse_error_step(err)]
    assert frames.closed
