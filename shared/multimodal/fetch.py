"""Image bytes from a URL: http(s) under a deadline, a size cap and an address policy, or a data: URI.

The HTTP client is asyncio's own (no threads): the deadline cancels the
transfer and closes the socket, so a slow server holds nothing once it has
run out. Fetches per process are bounded (`max_concurrent_fetches`); a data:
URI never waits for them.

SSRF: the host is resolved once, every address it resolves to is checked
(loopback, private, link-local, multicast, unspecified, reserved, and the
IPv4 forms inside IPv6 are refused unless `--allow-private-media`), and the
client connects to the checked address itself (no second resolution). Each
redirect (at most 3) is checked the same way; only http and https. Hosts in
`--allowed-media-domains` (and their subdomains) are the only ones fetched
when it is set, and are trusted to be private. Errors are generic: no status
codes, ports or bytes of what the other end said.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import ssl
import urllib.parse

import msgspec

from protocol.messages import ErrorCode
from shared.config.flags import FlagGroup, flag
from shared.errors import EngineError

MAX_IMAGE_BYTES = 16 << 20
FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
MAX_HEAD_BYTES = 16 << 10


class MediaOptions(msgspec.Struct, frozen=True):
    allow_private_media: bool = False
    allowed_media_domains: list[str] = []
    max_image_bytes: int = MAX_IMAGE_BYTES
    fetch_timeout: float = FETCH_TIMEOUT_S
    max_concurrent_fetches: int = 16
    max_images_per_request: int = 8
    max_image_pixels: int = 4096 * 4096
    decode_threads: int = 2


MEDIA_FLAGS = FlagGroup(
    "images by URL (fetch limits and which hosts may be fetched)", MediaOptions,
    flag("allow_private_media", "--allow-private-media",
         help="fetch images from loopback, private and link-local addresses too (default: refused)"),
    flag("allowed_media_domains", "--allowed-media-domains", nargs="+", metavar="DOMAIN",
         help="fetch images only from these hosts and their subdomains (trusted even when private)"),
    flag("max_image_bytes", "--max-image-bytes", help="largest image, in bytes (downloaded or data:)"),
    flag("fetch_timeout", "--fetch-timeout", help="seconds to fetch one image, redirects included"),
    flag("max_concurrent_fetches", "--max-concurrent-fetches", help="image downloads at once in this process"),
    flag("max_images_per_request", "--max-images-per-request", help="images one request may carry"),
    flag("max_image_pixels", "--max-image-pixels", help="largest image, width x height (checked before decoding)"),
    flag("decode_threads", "--image-decode-threads", help="threads decoding images (a bounded pool)"),
)


def bad_image(message: str) -> EngineError:
    return EngineError(ErrorCode.BAD_REQUEST, message)


class ImageFetcher:
    """Fetches image URLs for one process: at most `max_concurrent_fetches` at once, each under its deadline."""

    def __init__(self, opts: MediaOptions = MediaOptions()) -> None:
        self.opts = opts
        self._slots = asyncio.Semaphore(max(1, opts.max_concurrent_fetches))
        self._ssl: ssl.SSLContext | None = None

    async def fetch(self, url: str) -> bytes:
        """The bytes the URL names; EngineError(bad_request) with a generic reason otherwise."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            if len(url) < 64 << 10:
                return decode_data_uri(url, self.opts.max_image_bytes)
            return await asyncio.to_thread(decode_data_uri, url, self.opts.max_image_bytes)
        if scheme not in ("http", "https"):
            raise bad_image("image URL must be http(s):// or data:")
        try:
            async with asyncio.timeout(self.opts.fetch_timeout), self._slots:
                return await self._get(url)
        except TimeoutError:
            raise bad_image(f"fetching the image timed out after {self.opts.fetch_timeout:g} s") from None

    async def _get(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise bad_image("image URL must be http(s):// or data:")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise bad_image("malformed image URL") from None
            address = await self._address(parts.hostname, port)
            status, headers, reader, writer = await self._request(parts, address, port)
            try:
                if status in (301, 302, 303, 307, 308) and headers.get("location"):
                    url = urllib.parse.urljoin(url, headers["location"])
                    continue
                if status != 200:
                    raise bad_image("the image URL did not return an image")
                return await self._body(headers, reader)
            finally:
                writer.close()
        raise bad_image(f"the image URL redirected more than {MAX_REDIRECTS} times")

    def _trusted(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == d or host.endswith("." + d) for d in (d.lower().lstrip(".") for d in
                                                                  self.opts.allowed_media_domains))

    async def _address(self, host: str, port: int) -> str:
        """The address to connect to: resolved once, every answer checked."""
        trusted = self._trusted(host)
        if self.opts.allowed_media_domains and not trusted:
            raise bad_image("the image URL's host is not allowed (--allowed-media-domains)")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise bad_image("the image URL's host could not be resolved") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise bad_image("the image URL's host could not be resolved")
        if not (trusted or self.opts.allow_private_media) and not all(public(a) for a in addresses):
            raise bad_image("the image URL's host is not allowed (a private, loopback or link-local address)")
        return addresses[0]

    async def _request(self, parts: urllib.parse.SplitResult, address: str, port: int
                       ) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
        tls = None
        if parts.scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            tls = self._ssl
        try:
            reader, writer = await asyncio.open_connection(address, port, ssl=tls,
                                                           server_hostname=parts.hostname if tls else None,
                                                           limit=MAX_HEAD_BYTES)
        except (OSError, ssl.SSLError):
            raise bad_image("could not connect to the image URL's host") from None
        try:
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            if ":" in (parts.hostname or ""):
                host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shoal-image-fetch\r\n"
                         "Accept: image/*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise ValueError("not HTTP")
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            return int(rest[:3]), headers, reader, writer
        except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            raise bad_image("the image URL's host did not answer with HTTP") from None
        except BaseException:
            writer.close()
            raise

    async def _body(self, headers: dict[str, str], reader: asyncio.StreamReader) -> bytes:
        cap = self.opts.max_image_bytes
        too_big = bad_image(f"the image is larger than {cap} bytes")
        length = headers.get("content-length", "")
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                out = bytearray()
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    if size == 0:
                        return bytes(out)
                    if len(out) + size > cap:
                        raise too_big
                    out += await reader.readexactly(size)
                    await reader.readexactly(2)
            if length:
                if not length.isdigit():
                    raise ValueError("bad length")
                if int(length) > cap:
                    raise too_big
                return await reader.readexactly(int(length))
            data = await reader.read(cap + 1)
            while len(data) <= cap:
                more = await reader.read(cap + 1 - len(data))
                if not more:
                    break
                data += more
            if len(data) > cap:
                raise too_big
            return data
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise bad_image("the image URL's answer was cut short or malformed") from None


def public(address: str) -> bool:
    """A globally routable unicast address (IPv4 inside IPv6 judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            ip = mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
                or ip.is_reserved or not ip.is_global)


_default: ImageFetcher | None = None


async def fetch_image(url: str, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """One fetch with the default policy (private addresses refused)."""
    global _default
    if _default is None or (_default.opts.max_image_bytes, _default.opts.fetch_timeout) != (max_bytes, timeout):
        _default = ImageFetcher(MediaOptions(max_image_bytes=max_bytes, fetch_timeout=timeout))
    return await _default.fetch(url)


def decode_data_uri(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise bad_image("malformed data: URI (no comma)")
    if len(payload) * 3 // 4 > max_bytes:
        raise bad_image(f"image larger than {max_bytes} bytes")
    if head.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_image("data: URI is not valid base64") from None
    data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise bad_image(f"image larger than {max_bytes} bytes")
    return data

