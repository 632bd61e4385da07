"""``HttpConnection``: one kept-alive HTTP/1.1 connection to one server, for the SDK's
JSON queries (the leaderboard routes, ``GET /api/nodes``).

Why not the stdlib's ``urllib``/``http.client`` on a worker thread, as before: a query
then cost a new TCP connection and a thread hop, and ``http.client`` spends more of
its own CPU reading a response head than the server spends answering a rank query
(benchmarks/leaderboard.py prints both clients). The SDK's queries are small GETs
answered with a length-delimited body, so the protocol needed is small: a request line
and headers out; a status line, headers and a body in (``Content-Length``, chunked, or
until close). Requests on one connection go one at a time, in order.

The answer is parsed by the connection's protocol as its bytes arrive
(:class:`_Reader`, no coroutine per read), the request waits on one future for the
whole answer, and one timer per connection watches the deadlines. In process,
without the socket, a rank query through ``Leaderboards.entry`` cost 40 us of CPU
when a coroutine read the buffer with a timer per request, 32-33 us so (a bare
asyncio protocol reading the same answer: 8 us).

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


class _ClosedBeforeAnswer(Exception):
    """The connection closed before any byte of the answer: it was never answered."""


def _malformed(what: str) -> OSError:
    return ConnectionError(f"malformed HTTP answer: {what}")


def _header_dict(fields: str) -> dict[str, str]:
    """The header lines of a head (CRLF-separated) by lower-cased name."""
    headers: dict[str, str] = {}
    for line in fields.split("\r\n") if fields else ():
        name, colon, value = line.partition(":")
        if not colon:
            raise _malformed(f"a header line without a colon: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


_UNTIL_CLOSE = -1
_CHUNKED = -2


class _Reader(asyncio.Protocol):
    """The connection's bytes in, each answer out: the answer being read is parsed
    as its bytes arrive and resolves :attr:`answer`, the future its request waits on,
    with the :class:`HttpResponse` or the ``OSError`` it is. A request's deadline is
    watched by one timer per connection, moved only when it fires early."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[HttpResponse] | None = None
        self._method = "GET"
        self._status = 0
        """The status of the answer being read once its head is in (0: not yet)."""
        self._headers: dict[str, str] = {}
        self._length = 0
        """The body's length, or :data:`_UNTIL_CLOSE`, or :data:`_CHUNKED`."""
        self._chunks = bytearray()
        self.deadline = 0.0
        """When the answer being waited for is late (while :attr:`answer` is set)."""
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio's calls -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answer is not None:
            self._parse()

    def eof_received(self) -> bool:
        self._closed()
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed()

    # -- the request's side --------------------------------------------------------------

    def expect(self, method: str, deadline: float) -> asyncio.Future[HttpResponse]:
        """The future of the answer to the request about to be sent."""
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        self._method, self._status, self.deadline = method, 0, deadline
        if self._timer is None or self._timer.when() > deadline:
            self._arm(loop, deadline)
        if self.buffer or self.closed:  # bytes nobody asked for, or closed already
            self._parse()
        return self.answer

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timer = None
        if self.answer is None:
            return  # the answer came in time; no request is waiting
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:  # a later request's deadline: wait for it
            self._arm(loop, self.deadline)
            return
        self.closed = True  # this connection is not used again
        self._fail(TimeoutError("no answer within the timeout"))

    def _closed(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.answer is not None:
            self._parse()

    # -- parsing -------------------------------------------------------------------------

    def _parse(self) -> None:
        try:
            if self._status == 0 and not self._head():
                return
            body = self._body()
        except (OSError, _ClosedBeforeAnswer) as exc:
            self._fail(exc)
            return
        if body is not None:
            answer, self.answer = self.answer, None
            if answer is not None and not answer.done():
                answer.set_result(HttpResponse(self._status, self._headers, body))

    def _fail(self, exc: BaseException) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def _head(self) -> bool:
        """Read the answer's head: True once read, False while more bytes are needed."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise _malformed("a response head over 64 KiB")
            if self.closed:
                if buf:
                    raise ConnectionResetError("the server closed the connection mid-answer")
                raise _ClosedBeforeAnswer
            return False
        head = buf[:end].decode("latin-1")
        del buf[: end + 4]
        status_line, _, fields = head.partition("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _malformed(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers = _header_dict(fields)
        self._status, self._headers = int(code), headers
        coding = headers.get("transfer-encoding")  # it overrides any Content-Length
        length = headers.get("content-length")
        if self._method == "HEAD" or self._status in (204, 304) or 100 <= self._status < 200:
            self._length = 0
        elif coding is not None and coding.lower() == "chunked":
            self._length = _CHUNKED
            self._chunks = bytearray()
        elif coding is None and length is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise _malformed(f"a Content-Length of {length[:40]!r}")
            self._length = int(length)
        else:  # the body runs until the server closes
            self._length = _UNTIL_CLOSE
        return True

    def _body(self) -> bytes | None:
        """The answer's body once it is all in, else None."""
        buf, size = self.buffer, self._length
        if size >= 0:
            if len(buf) < size:
                return self._need()
            body = bytes(buf[:size])
            del buf[:size]
            return body
        if size == _UNTIL_CLOSE:
            if len(buf) > MAX_BODY:
                raise _malformed("a body over the limit")
            if not self.closed:
                return None
            body = bytes(buf)
            buf.clear()
            return body
        return self._chunked()

    def _chunked(self) -> bytes | None:
        buf, body = self.buffer, self._chunks
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return self._need()
            size_text = bytes(buf[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _malformed(f"a chunk size of {size_text[:20]!r}") from None
            if size == 0:  # the last chunk: then trailers (rarely any) and an empty line
                stop = buf.find(b"\r\n\r\n", end)
                if stop < 0:
                    return self._need()
                del buf[: stop + 4]
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise _malformed("a body over the limit")
            if len(buf) < end + 2 + size + 2:
                return self._need()
            body += buf[end + 2 : end + 2 + size]
            del buf[: end + 2 + size + 2]

    def _need(self) -> None:
        """More of the body is needed: None, or the error if no more will come."""
        if self.closed:
            raise ConnectionResetError("the server closed the connection mid-answer")
        return None


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
        deadline = asyncio.get_running_loop().time() + (
            self.timeout if timeout is None else timeout
        )
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
        reader = self._reader
        reused = reader is not None and not reader.closed
        for attempt in range(2):
            if reader is None or reader.closed:
                reader = await self._open(deadline)
            answer = reader.expect(method, deadline)
            reader.transport.write(data)  # type: ignore[union-attr]
            try:
                return await answer
            except _ClosedBeforeAnswer:
                self.close()
                reader = None
                if attempt or not (reused and method in ("GET", "HEAD")):
                    break
        raise ConnectionResetError("the server closed the connection before answering")

    async def _open(self, deadline: float) -> _Reader:
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
