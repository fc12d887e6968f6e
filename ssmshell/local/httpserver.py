"""A minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) for the local endpoints.

Enough for boto3 and the AWS CLI, which send small JSON or form bodies with a
Content-Length; no chunked request bodies, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_BODY = 16 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            413: "Payload Too Large", 500: "Internal Server Error"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, target, _version = line.decode("latin-1").split()
    except ValueError:
        raise ValueError("bad request line") from None
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length < 0 or length > MAX_BODY:
        raise ValueError("bad content length")
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body)


class HttpServer:
    """A listening server; :meth:`close` also ends idle keep-alive connections."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[object, ...]:
        assert self.server is not None
        return tuple(self.server.sockets)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.connections:
            await asyncio.gather(*self.connections, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


async def serve(handler: Handler, host: str, port: int) -> HttpServer:
    """Start serving ``handler`` on ``host:port``."""
    http = HttpServer()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        http.connections.add(task)
        task.add_done_callback(http.connections.discard)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except (ValueError, asyncio.IncompleteReadError):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                if request is None:
                    return
                try:
                    response = await handler(request)
                except Exception:  # a handler bug: answer 500, keep serving
                    response = Response(500, b'{"__type":"InternalFailure","message":""}',
                                        {"Content-Type": "application/x-amz-json-1.1"})
                close = request.headers.get("connection", "").lower() == "close"
                head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}",
                        f"Content-Length: {len(response.body)}",
                        "x-amzn-RequestId: 00000000-0000-4000-8000-000000000000"]
                head += [f"{k}: {v}" for k, v in response.headers.items()]
                if close:
                    head.append("Connection: close")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    http.server = await asyncio.start_server(connection, host, port)
    return http
