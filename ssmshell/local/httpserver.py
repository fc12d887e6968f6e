"""A small asyncio HTTP/1.1 server for the local AWS endpoints.

Enough for boto3 and the AWS CLI: persistent connections (HTTP/1.1 keep-alive
by default, HTTP/1.0 only with ``Connection: keep-alive``), ``Connection:
close`` honoured in both directions, ``Content-Length`` and chunked request
bodies, ``Expect: 100-continue``. No TLS, no pipelining guarantees beyond
answering requests in order, no response streaming.

The handler is an ``async`` callable taking a :class:`Request` and returning a
:class:`Response`; an exception in it becomes a 500 and is logged (without
the request, which may carry credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("ssmshell.local.http")

MAX_BODY = 16 * 1024 * 1024
MAX_LINE = 16 * 1024
MAX_HEADERS = 100
#: Keep-alive connections idle this long are closed (botocore reconnects transparently).
IDLE_TIMEOUT = 120.0

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}


class HttpError(Exception):
    """A request that cannot be parsed; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Request:
    """One parsed request.

    Attributes:
        method: ``POST``, ``GET``, …
        target: the request target as sent (path and query).
        headers: lower-case names; repeated headers joined with ``, ``.
        body: the whole body.
        version: ``HTTP/1.1`` or ``HTTP/1.0``.
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    version: str = "HTTP/1.1"

    @property
    def path(self) -> str:
        """The path part of the target."""
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        """The query string parameters (last value wins)."""
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    @property
    def wants_close(self) -> bool:
        """Whether the client asked for the connection to end after this request."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


@dataclass
class Response:
    """What a handler returns; ``Content-Length`` and ``Date`` are added by the server."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, "line too long") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise HttpError(400, "truncated request") from None
        return b""
    if len(line) > MAX_LINE:
        raise HttpError(431, "line too long")
    return line


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await _readline(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise HttpError(400, "bad chunk size") from None
        if size < 0 or len(body) + size > MAX_BODY:
            raise HttpError(413, "body too large")
        if size == 0:
            while (await _readline(reader)).strip():  # trailers
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        if (await reader.readexactly(2)) != b"\r\n":
            raise HttpError(400, "bad chunk terminator")


async def read_request(reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter | None = None) -> Request | None:
    """Read one request from ``reader``.

    Args:
        reader: the connection.
        writer: where to send ``100 Continue`` if the client expects it.

    Returns:
        The request, or None on a clean end of stream before a request line.

    Raises:
        HttpError: a malformed or oversized request.
        asyncio.IncompleteReadError: the peer went away mid-body.
    """
    line = await _readline(reader)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests (RFC 9112 §2.2)
        line = await _readline(reader)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    count = 0
    while True:
        raw = await _readline(reader)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise HttpError(400, "truncated headers")
        count += 1
        if count > MAX_HEADERS:
            raise HttpError(431, "too many headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise HttpError(400, "bad header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if writer is not None and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        raw_length = headers.get("content-length", "0") or "0"
        if not raw_length.isdigit():
            raise HttpError(400, "bad Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise HttpError(413, "body too large")
        body = await reader.readexactly(length) if length else b""
    return Request(method.upper(), target, headers, body, version)


def _encode(response: Response, close: bool) -> bytes:
    reason = _REASONS.get(response.status, "Unknown")
    head = [f"HTTP/1.1 {response.status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(response.body)}"]
    head += [f"{k}: {v}" for k, v in response.headers.items()
             if k.lower() not in ("content-length", "connection", "date")]
    head.append("Connection: close" if close else "Connection: keep-alive")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


class HttpServer:
    """An HTTP/1.1 server on one asyncio loop.

    Args:
        handler: ``async handler(request) -> response``.
        idle_timeout: seconds a keep-alive connection may sit idle.
    """

    def __init__(self, handler: Handler, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self._handler = handler
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def connection_count(self) -> int:
        """Open client connections (tests check nothing leaks)."""
        return len(self._connections)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port).

        Returns:
            The bound port.
        """
        self._server = await asyncio.start_server(self._connection, host, port,
                                                  limit=MAX_LINE * 2)
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and end every connection, idle or busy."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader, writer),
                                                 self._idle_timeout)
            except HttpError as exc:
                writer.write(_encode(Response(exc.status, b""), close=True))
                await writer.drain()
                return
            if request is None:
                return
            try:
                response = await self._handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                response = Response(500, b'{"__type":"InternalFailure"}',
                                    {"Content-Type": "application/x-amz-json-1.1"})
            close = request.wants_close or any(
                k.lower() == "connection" and v.lower() == "close"
                for k, v in response.headers.items())
            writer.write(_encode(response, close))
            await writer.drain()
            if close:
                return
