"""One client connection: parse requests, run the handler, write responses in order.

Reading stays on while a request is handled (so a client that goes away is noticed at
once); complete pipelined requests queue up and reading pauses only when that queue is
long. One task per request runs the handler and writes its response.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import unquote

import httptools

from shared.http.request import Request
from shared.http.response import Response, StreamingResponse, encode_head, error_response
from shared.http.state import ServerState
from shared.http.wire import (
    _CHUNKED,
    _CLOSE,
    _CONTINUE,
    _KEEP_10,
    _LAST_CHUNK,
    _METHODS,
    _aclose,
    _Reject,
    _size,
)

log = logging.getLogger("shoal.http")

MAX_PIPELINED = 8  # queued requests before reading pauses
LINGER_S = 2.0  # after an error reply, read and drop input this long so the client sees the reply, not a reset


class HttpConnection(asyncio.Protocol):
    __slots__ = ("_body", "_client", "_closed", "_continue", "_current", "_failed", "_head_sent", "_head_timer",
                 "_header_bytes", "_header_count", "_headers", "_lingering", "_loop", "_method", "_parser", "_pending",
                 "_pending_bytes", "_phase", "_read_paused",
                 "_state", "_task", "_timer", "_transport", "_url", "_writable", "_write_paused")

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loop = state.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._url = b""
        self._method = "GET"
        self._headers: dict[str, str] = {}
        self._header_bytes = self._header_count = 0
        self._body: bytes | bytearray = b""
        self._pending: deque[Request | Response] = deque()
        self._pending_bytes = 0  # bytes of the requests queued in _pending
        self._current: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None  # a head, then its body: data does not reset it
        self._phase = 0  # of the message being read: 0 none, 1 its head, 2 its body (which timer it needs)
        self._writable: asyncio.Future[None] | None = None
        self._closed = self._failed = self._lingering = self._continue = self._head_sent = False
        self._read_paused = self._write_paused = False

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        state = self._state
        if state.max_connections is not None and len(state.connections) >= state.max_connections:
            self._transport.write(encode_head(503, "application/json", [("retry-after", "1")],
                                              b"content-length: 0\r\n" + _CLOSE, state.date))
            self._transport.close()
            return
        state.connections.add(self)
        self._arm_timer(min(state.keepalive_timeout, state.header_timeout))  # the first request must start soon

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._state.connections.discard(self)
        self._cancel_timer()
        self._cancel_head_timer()
        self._pending.clear()
        self._pending_bytes = 0
        if self._current is not None:
            self._current.mark_lost()
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()
        if self._task is None:
            self._next()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # lingering after an error reply: drop input
        self._cancel_timer()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._failed = True  # no protocol switching: answer what came before, then close
            if self._task is None and not self._pending:
                self._transport.close()  # type: ignore[union-attr]
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.message)
            else:
                log.error("http_parser_callback_failed", exc_info=cause)
                self._fail(500, "internal server error")
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed HTTP request: {e}")
        if self._phase and self._head_timer is None and not self._failed:
            # armed once a read ends inside a head or a body (a request that came whole costs no timer)
            head = self._phase == 1
            self._head_timer = self._loop.call_later(
                self._state.header_timeout if head else self._state.body_timeout,
                self._on_head_timeout if head else self._on_body_timeout)
        if self._task is None and self._timer is None and not self._failed:
            self._arm_timer(self._state.keepalive_timeout)  # a request still arriving: bound the wait

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self._cancel_head_timer()
        self._phase = 1  # header_timeout from here (armed by data_received if the head is not whole)
        self._url = b""
        self._headers = {}
        self._header_bytes = self._header_count = 0
        self._body = b""

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF: empty headers are not free
        self._header_count += 1
        if self._header_count > self._state.max_headers:
            raise _Reject(431, f"request head has over {self._state.max_headers} header lines")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()  # the body now has body_timeout, however slowly its bytes come
        self._phase = 2
        method = self._parser.get_method()
        self._method = _METHODS.get(method) or method.decode("latin-1")
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._state.max_body_bytes:
            raise _Reject(413, f"request body over {self._state.max_body_bytes} bytes")
        if self._headers.get("expect", "").lower() == "100-continue":
            if self._task is None and not self._pending:
                self._transport.write(_CONTINUE)  # type: ignore[union-attr]
            else:
                self._continue = True  # sent once the responses ahead of it are out

    def on_body(self, body: bytes) -> None:
        if not self._body:
            self._body = body
            size = len(body)
        else:
            if isinstance(self._body, bytes):
                self._body = bytearray(self._body)
            self._body += body
            size = len(self._body)
        if size > self._state.max_body_bytes:
            raise _Reject(413, f"request body over {self._state.max_body_bytes} bytes")

    def on_message_complete(self) -> None:
        self._cancel_head_timer()
        self._phase = 0
        self._continue = False
        req = self._build_request()
        self._pending.append(req)
        self._pending_bytes += _size(req)
        if self._task is None:
            self._next()
        elif ((len(self._pending) >= MAX_PIPELINED or self._pending_bytes >= self._state.max_pipelined_bytes)
              and not self._read_paused):
            self._read_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._state.max_header_bytes:
            raise _Reject(431, f"request head over {self._state.max_header_bytes} bytes")

    def _build_request(self) -> Request:
        url = self._url
        if url[:1] != b"/" and url != b"*":
            parsed = httptools.parse_url(url)
            path_b, query_b = parsed.path or b"/", parsed.query or b""
        else:
            path_b, _, query_b = url.partition(b"?")
        path = path_b.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self._body if isinstance(self._body, bytes) else bytes(self._body)
        p = self._parser
        return Request(self._method, path, query_b.decode("latin-1"), self._headers, body, self._client,
                       p.get_http_version(), p.should_keep_alive())

    # --- request lifecycle ---

    def _next(self) -> None:
        """Start the next queued request, or go idle when there is none."""
        if self._closed or self._lingering:
            return
        if not self._pending:
            self._idle()
        elif not self._write_paused:
            item = self._pending.popleft()
            if isinstance(item, Response):
                self._send_error(item)
                return
            self._pending_bytes = max(0, self._pending_bytes - _size(item))
            self._current = item
            self._head_sent = False
            self._state.request_started()
            self._task = self._loop.create_task(self._serve(item))
            self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._state.request_finished()
        req, self._task, self._current = self._current, None, None
        if not task.cancelled() and task.exception() is not None:
            log.error("http_request_task_failed", exc_info=task.exception())
        if self._closed:
            return
        if task.cancelled() or (req is not None and not req.keep_alive):
            self._transport.close()  # type: ignore[union-attr]
        else:
            self._next()

    def _idle(self) -> None:
        transport = self._transport
        assert transport is not None
        if self._failed or self._state.draining:
            transport.close()
            return
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if self._continue:
            self._continue = False
            transport.write(_CONTINUE)
        self._arm_timer(self._state.keepalive_timeout)

    def _fail(self, status: int, message: str) -> None:
        """Stop parsing; answer `status` after the requests ahead of it, then close."""
        self._failed = True
        self._pending.append(error_response(status, message))
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]
        if self._task is None:
            self._next()

    def _send_error(self, resp: Response) -> None:
        transport = self._transport
        assert transport is not None
        self._pending.clear()
        self._pending_bytes = 0
        self._lingering = True
        framing = b"content-length: %d\r\n%b" % (len(resp.body), _CLOSE)
        transport.write(encode_head(resp.status, resp.content_type, None, framing, self._state.date) + resp.body)
        if transport.can_write_eof():
            transport.write_eof()
            self._arm_timer(LINGER_S)
        else:
            transport.close()

    def shutdown(self) -> None:
        """Server drain: close now when idle, else after the response in progress."""
        if self._task is None and not self._lingering and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- writing responses ---

    async def _serve(self, req: Request) -> None:
        try:
            resp = await self._state.handler(req)
            if isinstance(resp, StreamingResponse):
                await self._stream(req, resp)
            else:
                self._write_whole(req, resp)
        except Exception:
            if self._closed or self._transport.is_closing():  # type: ignore[union-attr]
                log.debug("http_handler_ended_after_disconnect method=%s path=%s", req.method, req.path)
                return
            log.exception("http_handler_failed method=%s path=%s", req.method, req.path)
            if self._head_sent:
                req.keep_alive = False  # mid-stream: close without the last chunk so the client sees the failure
            else:
                self._write_whole(req, error_response(500, "internal server error"))

    def _connection_header(self, req: Request) -> bytes:
        if not req.keep_alive or self._state.draining:
            req.keep_alive = False
            return _CLOSE
        return b"" if req.version == "1.1" else _KEEP_10

    def _write_whole(self, req: Request, resp: Response) -> None:
        if not isinstance(resp, Response):
            raise TypeError(f"handler returned {type(resp).__name__}, not Response or StreamingResponse")
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return
        body = resp.body
        framing = b"content-length: %d\r\n%b" % (len(body), self._connection_header(req))
        head = encode_head(resp.status, resp.content_type, resp.headers, framing, self._state.date)
        self._head_sent = True
        if req.method == "HEAD" or not body:
            transport.write(head)
        elif len(body) <= 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))

    async def _stream(self, req: Request, resp: StreamingResponse) -> None:
        chunks = resp.chunks
        try:
            transport = self._transport
            if self._closed or transport is None or transport.is_closing():
                return
            chunked = req.version != "1.0"  # HTTP/1.0 has no chunked encoding: raw body, then close
            if not chunked:
                req.keep_alive = False
            framing = (_CHUNKED if chunked else b"") + self._connection_header(req)
            transport.write(encode_head(resp.status, resp.content_type, resp.headers, framing, self._state.date))
            self._head_sent = True
            if req.method != "HEAD":
                await self._pump(chunks, transport, chunked)
        finally:
            await _aclose(chunks)

    async def _pump(self, chunks: AsyncIterator[bytes], transport: asyncio.Transport, chunked: bool) -> None:
        """Copy chunks to the socket, never asking for the next one while the socket is backed up."""
        it = chunks.__aiter__()
        while True:
            if self._write_paused:
                await self._wait_writable()
            if transport.is_closing():
                return
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            if chunk and not transport.is_closing():
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked and not transport.is_closing():
            transport.write(_LAST_CHUNK)

    async def _wait_writable(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()
        await self._writable

    def _wake_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- timers ---

    def _arm_timer(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        """A request head still incomplete after header_timeout: a slow or stuck client; close."""
        self._head_timer = None
        if not self._read_paused and self._transport is not None:
            log.info("http_header_timeout client=%s", self._client)
            self._transport.close()

    def _on_body_timeout(self) -> None:
        """A body still incomplete body_timeout after its head: a trickling client; close."""
        self._head_timer = None
        if not self._read_paused and self._transport is not None:
            log.info("http_body_timeout client=%s", self._client)
            self._transport.close()

    def _on_timer(self) -> None:
        self._timer = None
        if self._task is None and self._transport is not None:
            self._transport.close()
