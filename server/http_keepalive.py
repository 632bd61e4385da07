"""Plain HTTP/1.1 on the websocket port, with keep-alive.

websockets serves HTTP only as a refused upgrade: one request per TCP connection,
then it half-closes (``ServerProtocol.send_response``). A leaderboard query then costs
a TCP handshake more than its answer. So :class:`~server.connection.GameConnection`
hands the bytes of a new connection to an :class:`HttpChannel` first, which parses
requests as websockets' parser does (regular heads under 8 KiB the quick way,
:func:`parse_head`; the rest with ``Request.parse`` itself: the same line and header
limits, the same refusals), and:

* a websocket upgrade (``Upgrade: websocket``), as the first request or after plain
  ones, goes to websockets from its first byte on, exactly as if the connection had
  just opened: the handshake, ``process_request`` and the session run as before;
* any other request is answered by the one dispatcher (``Router.dispatch``) and the
  connection is kept for the next request: HTTP/1.1 by default, HTTP/1.0 only when
  it asks (``Connection: keep-alive``), never after ``Connection: close``. An answer
  that needs no waiting (a leaderboard query without ``wait=``, ``/api/nodes``,
  ``/metrics``) is sent in the very call that read the request: no task, no await.
  One that must wait (the store, a match, another node) is awaited in a task, and
  the requests after it wait their turn, so answers always leave in order.

Bounds, per connection: ``http_max_requests`` requests (the last answer says
``Connection: close``), ``http_idle_timeout`` seconds between an answer and the next
complete request head (``open_timeout`` for the first one), ``MAX_PIPELINED`` requests
read ahead of their answers (then reading pauses until they are answered, in order).
Plain HTTP connections count toward ``max_connections`` beside websocket sessions; when
a new connection would go over it, the connection idle the longest is closed (idle
keep-alive connections never keep anyone else out), and when none is idle, answers are
sent with ``Connection: close``.

A request websockets' parser refuses gets the documented JSON error and the connection
is closed after it (docs/protocol.md section 8): 414 ``request_line_too_long``, 431
``headers_too_large``, 400 ``bad_request`` (not HTTP/1.x, a body, a transfer coding).
Closing is lingering: the server half-closes after its last answer and discards what
the client still sends until it closes (at most ``close_timeout``), so a client that
pipelined more requests reads the answers it got instead of a TCP reset.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import (
    HeaderLineTooLong,
    RequestLineTooLong,
    SecurityError,
    TooManyHeaders,
)
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request, Response
from websockets.streams import StreamReader

from replay.protocol import error_body
from server.http import HttpRequest, ValidHeaders, json_response

__all__ = ["MAX_PIPELINED", "PARSER_REFUSALS", "HttpChannel", "PlainHttp", "wants_websocket"]

log = logging.getLogger(__name__)

MAX_PIPELINED = 16
"""Requests read ahead of their answers on one connection; then reading pauses. Each is
a parsed request head (at most ~1 MiB by websockets' limits, a few hundred bytes usually)."""

PARSER_REFUSALS: dict[type[Exception], tuple[int, str]] = {
    RequestLineTooLong: (HTTPStatus.REQUEST_URI_TOO_LONG, "request_line_too_long"),
    HeaderLineTooLong: (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
    TooManyHeaders: (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
}
"""Requests websockets' HTTP parser refuses for their size, with the
status and code of their answer (docs/protocol.md section 8); anything else it refuses is
400 ``bad_request``."""
_VISIBLE = r"\x21-\x7e\x80-\xff"
_FIELD_TEXT = (
    r"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rf"((?:[{_VISIBLE}](?:[\x09\x20-\x7e\x80-\xff]*[{_VISIBLE}])?)?)[ \t]*\r\n"
)
_FIELD = re.compile(_FIELD_TEXT)
_FIELDS = re.compile(f"(?:{_FIELD_TEXT})*")
"""A header line as websockets' parser accepts it (RFC 9110: a token, a colon, the
value stripped of spaces and tabs), and a block of them. The value starts and ends with
a visible character, so it is found without trying every split of its trailing blanks."""
_PLAIN_GET = re.compile(
    rb"GET (/[\x21-\x7e]*) HTTP/1\.1\r\n"
    rb"((?!(?i:authorization|connection|upgrade|keep-alive|transfer-encoding|content-length|"
    rb"expect|te):)" + _FIELD_TEXT.encode() + rb"){0,%d}\r\n" % MAX_NUM_HEADERS
)
"""A complete HTTP/1.1 GET head (valid as :data:`_FIELDS` checks it) with none of the
headers that carry credentials, change the connection (HTTP/1.1 keeps it alive) or
announce a body: its answer depends on its target alone (``PlainHttp.at_once``)."""
_SLOW = object()
"""What :func:`parse_head` answers for a request it leaves to websockets' parser."""
E_BAD_REQUEST = "bad_request"
E_INTERNAL = "internal"

Dispatch = Callable[[ServerConnection, HttpRequest], Response | Awaitable[Response]]
"""The answer to a request, or an awaitable of it when its handler must wait."""
Pending = tuple[HttpRequest, Awaitable[Response]]
"""A request whose answer is awaited."""


class Connection(Protocol):
    """What a channel needs of its connection (server/connection.py's GameConnection)."""

    transport: asyncio.Transport
    paused: bool
    """Writing is paused: the transport's buffer is over its high-water mark."""

    def upgrade(self, data: bytes) -> None:
        """Hand the connection to websockets, ``data`` being its first bytes."""

    async def drain(self) -> None: ...

    def eof_received(self) -> bool | None: ...


def wants_websocket(request: Request) -> bool:
    """The one test of whether a request is a websocket upgrade (else plain HTTP)."""
    upgrade = request.headers.get_all("Upgrade")
    return len(upgrade) == 1 and upgrade[0].lower() == "websocket"


@dataclass
class PlainHttp:
    """Plain HTTP on the server's port: the dispatcher, the limits, and the connections
    open now (they share ``max_connections`` with websocket sessions)."""

    dispatch: Dispatch
    max_requests: int
    idle_timeout: float
    first_request_timeout: float
    close_timeout: float
    max_connections: int
    websockets: Callable[[], int]
    """Websocket sessions open now."""
    channels: set[HttpChannel] = field(default_factory=set)
    idle: dict[HttpChannel, None] = field(default_factory=dict)
    """Kept-alive channels waiting for their next request, the longest idle first."""
    closing: bool = False
    """The server stops: every answer closes its connection."""

    at_once: Callable[[str], Response | None] | None = None
    """The answer to ``GET target`` from the target alone (``Router.at_once``), tried
    first for a request that sends no credentials and no header that changes the answer
    (:data:`_PLAIN_GET`): no request object, headers or dispatch for a leaderboard query."""

    keep_alive_header: str = ""
    """``Keep-Alive: timeout=S``, formatted once."""

    def __post_init__(self) -> None:
        self.keep_alive_header = f"Keep-Alive: timeout={self.idle_timeout:g}\r\n"

    @property
    def open(self) -> int:
        """Plain HTTP connections open now (not yet upgraded)."""
        return len(self.channels)

    def over_budget(self) -> bool:
        return self.websockets() + len(self.channels) > self.max_connections

    def opened(self, channel: HttpChannel) -> None:
        self.channels.add(channel)
        # Idle keep-alive connections make room: one client holding many cannot lock
        # anyone out. The longest idle goes first.
        while self.idle and self.over_budget():
            oldest = next(iter(self.idle))
            oldest.close()

    def gone(self, channel: HttpChannel) -> None:
        self.channels.discard(channel)
        self.idle.pop(channel, None)

    def shut(self) -> None:
        """Stop keeping connections alive: idle ones close now, busy ones after their answer."""
        self.closing = True
        for channel in list(self.channels):
            if channel.waiting():
                channel.close()

    async def wait_closed(self, timeout: float) -> None:
        """Until every plain HTTP connection is closed; past ``timeout`` the rest are dropped."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.channels and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for channel in list(self.channels):
            channel.conn.transport.abort()
            self.gone(channel)


_UPGRADE = object()
"""Queued in place of a request: hand the connection to websockets once the requests
before it are answered."""
_CLOSED = object()
"""What answering an item gives when the connection takes no more answers."""


class HttpChannel:
    """One connection's plain HTTP: parses its requests, answers them in order."""

    def __init__(self, conn: Connection, http: PlainHttp) -> None:
        self.conn = conn
        self.http = http
        self.reader = StreamReader()
        self.parser: Generator[None, None, Request] | None = None
        """websockets' parser, for a request :func:`parse_head` leaves to it."""
        self.raw = bytearray()
        """The bytes of the request being parsed and after: what websockets gets on an upgrade."""
        self.queue: deque[HttpRequest | Response | object] = deque()
        """Parsed requests (or a refusal, or _UPGRADE) not answered yet, in order."""
        self.answering: asyncio.Task[None] | None = None
        self.requests = 0
        """Requests taken (parsed) on this connection."""
        self.finished = False
        """No more requests are read: the last answer is decided."""
        self.upgrading = False
        """A websocket upgrade waits for the answers before it: bytes are kept for websockets."""
        self.paused = False
        self.peer_eof = False
        self.lost = False
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        """When the next request head must have arrived (None: one is being answered)."""
        self.timer_at = 0.0
        """When ``timer`` fires."""
        self.loop = asyncio.get_running_loop()
        http.opened(self)
        self._wait(http.first_request_timeout)

    # -- the connection's events ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.finished:
            return  # lingering close: what the client still sends is discarded
        self.raw += data
        if self.upgrading:
            return
        self.reader.feed_data(data)
        self._read_requests()

    def eof_received(self) -> bool:
        """True: keep the transport open to answer the requests still queued."""
        self.peer_eof = True
        if self.finished and self.answering is None:
            self.conn.transport.close()
            return False
        if self.queue or self.answering is not None:
            self.finished = True  # answer what was asked, then close
            return True
        return False

    def connection_lost(self) -> None:
        # An answer being computed is left to finish (a POST completes as it would have)
        # and then dropped: the handlers' own waits are bounded.
        self.lost = True
        self._stop_timer()
        self.http.gone(self)

    def waiting(self) -> bool:
        """Between requests (or before the first one): nothing is being answered."""
        return not self.queue and self.answering is None

    def close(self) -> None:
        """Close now (an idle connection evicted, the server stopping)."""
        self.finished = True
        self._stop_timer()
        self.http.gone(self)
        self.conn.transport.close()

    # -- reading -------------------------------------------------------------------------

    def _parse(self) -> Generator[None, None, Request]:
        return Request.parse(self.reader.read_line)

    def _read_requests(self) -> None:
        """Parse every complete request head buffered, up to MAX_PIPELINED queued."""
        while not (self.finished or self.upgrading) and len(self.queue) < MAX_PIPELINED:
            if self.parser is None:
                if self._answered_at_once():
                    continue
                parsed = parse_head(self.reader.buffer)
                if parsed is None:
                    return  # more bytes needed
                if parsed is _SLOW:
                    self.parser = self._parse()
            if self.parser is not None:
                try:
                    next(self.parser)
                    return  # more bytes needed
                except StopIteration as done:
                    r = done.value
                    parsed = HttpRequest.of(r.path, r.headers, r.method, r.protocol)
                except (SecurityError, ValueError, NotImplementedError, UnicodeDecodeError) as exc:
                    self._refuse(exc)
                    return
                except EOFError as exc:  # a line without CRLF (the stream itself goes on)
                    self._refuse(ValueError(str(exc)))
                    return
                self.parser = None
            request: HttpRequest = parsed  # type: ignore[assignment]
            self._taken()
            if wants_websocket(request):
                # websockets reads the upgrade from its first byte (self.raw still
                # starts there) with everything after it; until then reading pauses.
                self.upgrading = True
                self.queue.append(_UPGRADE)
                if not self.paused:
                    self.paused = True
                    self.conn.transport.pause_reading()
            else:
                self._counted()
                self.queue.append(request)
            self._answer_soon()
        if len(self.queue) >= MAX_PIPELINED and not self.paused:
            self.paused = True
            self.conn.transport.pause_reading()

    def _answered_at_once(self) -> bool:
        """Answer the next request now if it is a plain GET (:data:`_PLAIN_GET`) whose
        route answers from the target alone, nothing being ahead of it; else False."""
        at_once, buffer = self.http.at_once, self.reader.buffer
        if at_once is None or not buffer or self.queue or self.answering is not None:
            return False
        if self.conn.paused:  # the client does not read its answers: they wait in turn
            return False
        # Only a whole head within the first MAX_LINE_LENGTH bytes, as parse_head takes
        # the quick way (a head dripping in is not scanned again at every byte).
        end = buffer.find(b"\r\n\r\n", 0, MAX_LINE_LENGTH)
        m = _PLAIN_GET.match(buffer, 0, end + 4) if end >= 0 else None
        if m is None:
            return False
        response = at_once(m[1].decode("ascii"))
        if response is None:
            return False
        del buffer[: m.end()]
        self._taken()
        self._counted()
        if not self._reply(None, response):
            self._between_requests()
        return True

    def _taken(self) -> None:
        """A request was read: the connection is busy, no longer idle."""
        self._busy()
        self.http.idle.pop(self, None)

    def _counted(self) -> None:
        """A plain request was taken out of the bytes: count it against the budget."""
        del self.raw[: len(self.raw) - len(self.reader.buffer)]
        self.requests += 1
        if self.requests >= self.http.max_requests:
            self.finished = True  # the last one this connection answers

    def _refuse(self, exc: Exception) -> None:
        status, code = PARSER_REFUSALS.get(type(exc), (400, E_BAD_REQUEST))
        message = str(exc) if status != 400 else f"not a valid HTTP/1.1 request: {exc}"
        self.queue.append(json_response(self.conn, error_body(code, message), status))  # type: ignore[arg-type]
        self.finished = True
        self._stop_timer()
        self._answer_soon()

    # -- answering -----------------------------------------------------------------------

    def _answer_soon(self) -> None:
        """Answer what is queued: at once, in the call that parsed it, while answers need
        no waiting (most do: no task, no await); else in a task, which keeps the order.
        Nothing it calls re-enters it: the transport reports a close later, not here."""
        if self.answering is not None:
            return  # the task answers it in turn
        while self.queue and not self.lost:
            if self.conn.paused:  # the client does not read its answers: wait for it
                self.answering = self.loop.create_task(self._answer(None))
                return
            pending = self._answer_next()
            if pending is _CLOSED:
                return
            if pending is not None:
                self.answering = self.loop.create_task(self._answer(pending))  # type: ignore[arg-type]
                return
        self._between_requests()

    async def _answer(self, pending: Pending | None) -> None:
        """Answers in turn from ``pending`` on, awaiting what must be awaited."""
        try:
            while True:
                if pending is not None:
                    request, answer = pending
                    try:
                        response, failed = await answer, False
                    except Exception:  # a bug, not bad input: logged, answered in JSON
                        response, failed = self._failed(request), True
                    if self.lost or self._reply(request, response, failed):
                        return
                await self.conn.drain()  # a client that does not read its answers waits
                if self.paused and not self.upgrading and len(self.queue) < MAX_PIPELINED // 2:
                    self.paused = False
                    self.conn.transport.resume_reading()
                    self._read_requests()
                if not self.queue or self.lost:
                    break
                pending = self._answer_next()  # type: ignore[assignment]
                if pending is _CLOSED:
                    return
        finally:
            self.answering = None
        self._between_requests()

    def _answer_next(self) -> Pending | object | None:
        """Answer the next queued item: None once answered, ``_CLOSED`` once the
        connection is done with (upgraded, or closing), else the answer to await."""
        item = self.queue.popleft()
        if item is _UPGRADE:
            self._upgrade()
            return _CLOSED
        if isinstance(item, Response):  # a refusal: answer it and close
            self._send(item, None, close=True)
            return _CLOSED
        request: HttpRequest = item  # type: ignore[assignment]
        try:
            answer = self.http.dispatch(self.conn, request)  # type: ignore[arg-type]
        except Exception:  # a bug, not bad input: logged, answered in JSON
            self._reply(request, self._failed(request), failed=True)
            return _CLOSED
        if not isinstance(answer, Response):
            return request, answer
        return _CLOSED if self._reply(request, answer) else None

    def _failed(self, request: HttpRequest) -> Response:
        log.exception("%s %s failed", request.method, request.route_path)
        return json_response(self.conn, error_body(E_INTERNAL, "internal error"), 500)  # type: ignore[arg-type]

    def _reply(self, request: HttpRequest | None, response: Response, failed: bool = False) -> bool:
        """Send the answer to ``request`` (None: a plain GET answered at once); True
        when the connection closes after it (a failed answer closes it)."""
        close = failed or (self.finished and not self.queue)
        close = close or (request is not None and not _keeps_alive(request)) or self.http.closing
        close = close or self.http.over_budget()
        self._send(response, request, close)
        return close

    def _between_requests(self) -> None:
        if not (self.lost or self.finished or self.upgrading):
            self.http.idle[self] = None
            self._wait(self.http.idle_timeout)

    def _send(self, response: Response, request: HttpRequest | None, close: bool) -> None:
        # Serialized here, the connection headers ours: websockets' refusals say close.
        head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"]
        head += [
            f"{name}: {value}\r\n"
            for name, value in response.headers.raw_items()
            if name.lower() not in _CONNECTION_HEADERS
        ]
        if close:
            head.append("Connection: close\r\n\r\n")
        elif request is not None and request.protocol == "HTTP/1.0":
            head.append(f"Connection: keep-alive\r\n{self.http.keep_alive_header}\r\n")
        else:
            head.append(f"{self.http.keep_alive_header}\r\n")
        data = "".join(head).encode("iso-8859-1")
        if request is None or request.method != "HEAD":
            data += response.body
        self.conn.transport.write(data)
        if close:
            self._linger()

    def _linger(self) -> None:
        """Half-close after the last answer; the client's close (or close_timeout) ends it."""
        self.finished = True
        self._stop_timer()
        self.http.gone(self)
        transport = self.conn.transport
        if self.peer_eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self.paused:
            self.paused = False
            transport.resume_reading()  # to see the client's close
        self.timer = self.loop.call_later(self.http.close_timeout, transport.close)

    def _upgrade(self) -> None:
        self._stop_timer()
        self.http.gone(self)
        if self.paused:
            self.paused = False
            self.conn.transport.resume_reading()
        data, self.raw = bytes(self.raw), bytearray()
        self.upgrading, self.finished = False, True
        self.conn.upgrade(data)
        if self.peer_eof:  # the client sent its upgrade and half-closed: websockets sees both
            self.conn.eof_received()

    # -- timers --------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """A complete request head must arrive within ``seconds``, else the connection
        closes. One timer serves many requests: it is moved only when it fires early."""
        self.deadline = self.loop.time() + seconds
        if self.timer is None or self.timer_at > self.deadline:
            self._stop_timer()
            self.timer = self.loop.call_later(seconds, self._idle_too_long)
            self.timer_at = self.deadline

    def _busy(self) -> None:
        """A request is being answered: no deadline until :meth:`_wait` sets the next."""
        self.deadline = None

    def _idle_too_long(self) -> None:
        self.timer = None
        if self.deadline is None:
            return  # answering: the next _wait arms the timer again
        early = self.deadline - self.loop.time()
        if early > 0:
            self.timer = self.loop.call_later(early, self._idle_too_long)
            self.timer_at = self.deadline
        elif self.waiting():
            self.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def parse_head(buffer: bytearray) -> HttpRequest | object | None:
    """The request whose head starts ``buffer`` (taken out of it), parsed the quick way
    websockets' parser would parse it; None while the head is incomplete; ``_SLOW`` for
    a head longer than one line may be or anything irregular, which websockets' parser
    then reads (and refuses with its own reason). The quick way costs a small part of
    what the parser's generators do per request: the header lines are checked and split
    by two regular expressions over them all (benchmarks/leaderboard.py)."""
    if not buffer:
        return None
    end = buffer.find(b"\r\n\r\n", 0, MAX_LINE_LENGTH)
    if end < 0:
        long_or_bare_lf = len(buffer) >= MAX_LINE_LENGTH or (
            buffer.count(b"\n") != buffer.count(b"\r\n")
        )
        return _SLOW if long_or_bare_lf else None
    head = buffer[: end + 2].decode("iso-8859-1")
    line_end = head.index("\r\n")
    parts = head[:line_end].split(" ", 2)
    fields = head[line_end + 2 :]
    if (
        len(parts) != 3
        or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
        or not parts[0].isascii()
        or not parts[1].isascii()
        or not _FIELDS.fullmatch(fields)
    ):
        return _SLOW
    items = _FIELD.findall(fields)
    if len(items) > MAX_NUM_HEADERS:
        return _SLOW
    headers = ValidHeaders(items)
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return _SLOW
    del buffer[: end + 4]
    return HttpRequest.of(parts[1], headers, parts[0], parts[2])


_CONNECTION_HEADERS = frozenset({"connection", "keep-alive"})


def _keeps_alive(request: Request) -> bool:
    """HTTP/1.1 keeps the connection unless the client says close; HTTP/1.0 closes
    unless it asks for keep-alive."""
    values = request.headers.get_all("Connection")
    if not values:
        return request.protocol != "HTTP/1.0"
    tokens = {t.strip().lower() for v in values for t in v.split(",")}
    if request.protocol == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
