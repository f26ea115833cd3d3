"""A small, fast HTTP/1.1 server on asyncio + httptools: whole and streamed (chunked/SSE) responses."""

from shared.http.request import Request
from shared.http.response import Handler, Response, StreamingResponse, error_response
from shared.http.server import HttpServer

__all__ = ["Handler", "HttpServer", "Request", "Response", "StreamingResponse", "error_response"]
