"""``HttpConnection``: one kept-alive HTTP/1.1 connection to one server, for the SDK's
JSON queries (the leaderboard routes, ``GET /api/nodes``).

Why not the stdlib's ``urllib``/``http.client`` on a worker thread, as before: a query
then cost a new TCP connection and a thread hop, and ``http.client`` spends more of
its own CPU reading a response head than the server spends answering a rank query
(benchmarks/leaderboard.py prints both clients). The SDK's queries are small GETs
answered with a length-delimited body, so the protocol needed is small: a request line
and headers out; a status line, headers and a body in (``Content-Length``, chunked, or
until close). Requests on one connection go one at a time, in order.

A connection the server closed while idle (its keep-alive timeout, or after its
request budget) is reopened for the next request; a GET sent on a reused connection
that closes before any byte of the answer arrives is sent once more on a new one,
since it cannot have been answered (RFC 9112 section 9.3.1: idempotent requests may be
retried). Everything else that goes wrong is an ``OSError`` (refused, reset, timed
out, a malformed answer), which the callers treat as "this node cannot be reached".
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["HttpConnection", "HttpResponse"]

MAX_HEAD = 64 * 1024
"""Bytes a response's status line and headers may take."""
MAX_BODY = 64 * 1024 * 1024
"""Bytes a response body may take (the largest leaderboard page is far below)."""


class HttpResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        """Lower-cased names; a repeated header keeps its last value."""
        self.body = body


class _Reader(asyncio.Protocol):
    """Collects the bytes of the connection; :meth:`HttpConnection._read_response`
    parses them. ``waiter`` is woken by every arrival and by the close."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def expire(self) -> None:
        """The request's time is up: the wait for its answer raises TimeoutError."""
        self.closed = True  # this connection is not used again
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError("no answer within the timeout"))


class HttpConnection:
    """Requests to ``base_url`` (``http://host:port`` or ``https://...``) over one
    kept-alive connection, opened on the first request; ``timeout`` bounds each
    request, connecting included."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        default_port = 443 if self.tls else 80
        host_header = parts.netloc.rpartition("@")[2] if self.port != default_port else self.host
        self._host_line = f" HTTP/1.1\r\nHost: {host_header}\r\n"
        self.timeout = timeout
        self.connections = 0
        """TCP connections opened so far (a kept-alive client opens one)."""
        self.pending = 0
        """Requests on this connection not answered yet: the one being answered and
        those waiting for it (requests go one at a time, in order)."""
        self._reader: _Reader | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> HttpConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader.transport is not None:
            reader.transport.close()

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] = {},
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        """Send ``method target`` with ``headers`` and read the whole answer."""
        head = method + " " + target + self._host_line
        for name, value in headers.items():
            head += f"{name}: {value}\r\n"
        data = (head + "\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        self.pending += 1
        try:
            async with self._lock:
                try:
                    response = await self._exchange(method, data, deadline)
                except BaseException:
                    self.close()  # a half-read answer would be taken for the next one
                    raise
                if response.headers.get("connection", "").lower() == "close" or (
                    self._reader is not None and self._reader.closed
                ):
                    self.close()
                return response
        finally:
            self.pending -= 1

    async def _exchange(self, method: str, data: bytes, deadline: float) -> HttpResponse:
        reused = self._reader is not None and not self._reader.closed
        for attempt in range(2):
            reader = await self._open(deadline)
            # One timer per request (not asyncio.timeout: a third of this client's own
            # cost per query): it fails the wait for the answer when it fires.
            expiry = asyncio.get_running_loop().call_at(deadline, reader.expire)
            try:
                reader.transport.write(data)  # type: ignore[union-attr]
                return await self._read_response(reader, method)
            except _ClosedBeforeAnswer:
                self.close()
                if attempt or not (reused and method in ("GET", "HEAD")):
                    break
            finally:
                expiry.cancel()
        raise ConnectionResetError("the server closed the connection before answering")

    async def _open(self, deadline: float) -> _Reader:
        reader = self._reader
        if reader is not None and not reader.closed:
            return reader
        self.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            _, reader = await loop.create_connection(
                _Reader,
                self.host,
                self.port,
                ssl=ssl.create_default_context() if self.tls else None,
            )
        self._reader = reader
        self.connections += 1
        return reader

    async def _read_response(self, reader: _Reader, method: str) -> HttpResponse:
        buf = reader.buffer
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD:
                raise _malformed("a response head over 64 KiB")
            await self._more(reader, answered=bool(buf))
        lines = buf[:end].decode("latin-1").split("\r\n")
        del buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _malformed(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _malformed(f"a header line without a colon: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        status = int(code)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return HttpResponse(status, headers, b"")
        if "content-length" in headers and "transfer-encoding" not in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > MAX_BODY:
                raise _malformed(f"a Content-Length of {length[:40]!r}")
            size = int(length)
            while len(buf) < size:
                await self._more(reader, answered=True)
            body = bytes(buf[:size])
            del buf[:size]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        else:  # the body runs until the server closes
            while not reader.closed:
                if len(buf) > MAX_BODY:
                    raise _malformed("a body over the limit")
                await self._more(reader, answered=True, until_close=True)
            body = bytes(buf)
            buf.clear()
        return HttpResponse(status, headers, body)

    async def _chunked(self, reader: _Reader) -> bytes:
        buf, body = reader.buffer, bytearray()
        while True:
            while (end := buf.find(b"\r\n")) < 0:
                await self._more(reader, answered=True)
            size_text = bytes(buf[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _malformed(f"a chunk size of {size_text[:20]!r}") from None
            if size == 0:  # the last chunk: then trailers (rarely any) and an empty line
                while (stop := buf.find(b"\r\n\r\n", end)) < 0:
                    await self._more(reader, answered=True)
                del buf[: stop + 4]
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise _malformed("a body over the limit")
            while len(buf) < end + 2 + size + 2:
                await self._more(reader, answered=True)
            body += buf[end + 2 : end + 2 + size]
            del buf[: end + 2 + size + 2]

    @staticmethod
    async def _more(reader: _Reader, *, answered: bool, until_close: bool = False) -> None:
        """Wait for more bytes (or, with ``until_close``, for them or the close)."""
        if reader.closed:
            if until_close:
                return
            if not answered:
                raise _ClosedBeforeAnswer
            raise ConnectionResetError("the server closed the connection mid-answer")
        reader.waiter = asyncio.get_running_loop().create_future()
        try:
            await reader.waiter
        finally:
            reader.waiter = None


class _ClosedBeforeAnswer(Exception):
    """The connection closed before any byte of the answer: it was never answered."""


def _malformed(what: str) -> OSError:
    return ConnectionError(f"malformed HTTP answer: {what}")
