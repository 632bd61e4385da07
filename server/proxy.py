"""Forward one HTTP request to another node of the cluster and relay its answer.

A request for a match that runs on another node (create placed there, reserve, start,
end, rewind) is answered by that node: any node is a front door. HTTP/1.1, one request
per connection (as every node answers), bounded in time and size.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["FORWARDED_HEADER", "ProxyError", "forward", "http_base"]

FORWARDED_HEADER = "X-Matchreplay-Forwarded"
"""Set on a forwarded request: the node that gets it answers itself, never forwards
again (no loops)."""
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def http_base(ws_url: str) -> str:
    """``ws://host:port/ws`` -> ``http://host:port``: a node's HTTP API."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


class ProxyError(Exception):
    """The other node did not answer (gone, or too slow)."""


async def forward(base: str, request: Request, timeout: float = 10.0) -> Response:
    """Send ``request`` to the node at ``base`` (``http://host:port``). Requests carry
    their parameters in the query string (docs/protocol.md section 8): no body."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"{request.method} {request.path} HTTP/1.1"]
    lines.append(f"Host: {parts.netloc}")
    for name, value in request.headers.raw_items():
        if name.lower() not in _HOP_BY_HOP:
            lines.append(f"{name}: {value}")
    lines += [f"{FORWARDED_HEADER}: 1", "Connection: close", "Content-Length: 0"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(head)
                await writer.drain()
                return await _read_response(reader)
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        raise ProxyError(f"node {base} did not answer: {exc}") from None


async def _read_response(reader: asyncio.StreamReader) -> Response:
    status_line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    _version, code, *reason = status_line.split(" ", 2)
    headers = Headers()
    while True:
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        if name.strip().lower() not in _HOP_BY_HOP:
            headers[name.strip()] = value.strip()
    body = await reader.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES:
        raise ValueError("answer too large")
    headers["Content-Length"] = str(len(body))
    status = int(code)
    return Response(status, reason[0] if reason else HTTPStatus(status).phrase, headers, body)
