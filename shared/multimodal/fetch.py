"""Image bytes from a URL: http(s) with a size limit and a timeout, or a data: URI.

The HTTP download runs in a thread (urllib), never on the event loop; a URL that
cannot be fetched within the limits is a `bad_request` EngineError with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request

from protocol.messages import ErrorCode
from shared.errors import EngineError

MAX_IMAGE_BYTES = 16 << 20
FETCH_TIMEOUT_S = 10.0


def bad_image(message: str) -> EngineError:
    return EngineError(ErrorCode.BAD_REQUEST, message)


async def fetch_image(url: str, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The bytes the URL names; raises EngineError(ErrorCode.BAD_REQUEST) with the reason."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        if len(url) < 64 << 10:
            return decode_data_uri(url, max_bytes)
        return await asyncio.to_thread(decode_data_uri, url, max_bytes)
    if scheme not in ("http", "https"):
        raise bad_image(f"image URL must be http(s):// or data:, not {url[:40]!r}")
    try:
        return await asyncio.wait_for(asyncio.to_thread(_http_get, url, max_bytes, timeout), timeout + 1.0)
    except TimeoutError as e:
        raise bad_image(f"fetching image {url[:200]} timed out after {timeout:g} s") from e


def decode_data_uri(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise bad_image("malformed data: URI (no comma)")
    if len(payload) * 3 // 4 > max_bytes:
        raise bad_image(f"image larger than {max_bytes} bytes")
    if head.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise bad_image(f"data: URI is not valid base64: {e}") from e
    return urllib.parse.unquote_to_bytes(payload)


def _http_get(url: str, max_bytes: int, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "shoal-encoder", "Accept": "image/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise bad_image(f"image at {url[:200]} is {length} bytes; the limit is {max_bytes}")
            data: bytes = r.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise bad_image(f"fetching image {url[:200]} failed: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise bad_image(f"fetching image {url[:200]} failed: {getattr(e, 'reason', e)}") from e
    if len(data) > max_bytes:
        raise bad_image(f"image at {url[:200]} is larger than {max_bytes} bytes")
    return data
