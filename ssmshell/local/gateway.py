"""The websocket gateway: plays MGS between the client and the agent emulator (§3, §12, §15).

``ws://127.0.0.1:PORT/v1/data-channel/<sessionId>?role=publish_subscribe``. The
first frame must be a text OpenDataChannel carrying a valid single-use token;
anything else closes the socket. A resumed client (new token from
ResumeSession) is attached to the same agent session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from ssmshell.channel import binary_handler_connection
from ssmshell.local.agent import AgentOptions, AgentSession, DecryptFn
from ssmshell.local.faults import Faults
from ssmshell.protocol.errors import PayloadError
from ssmshell.protocol.payloads import OpenDataChannel

log = logging.getLogger("ssmshell.local.gateway")

_PATH = re.compile(r"^/v1/data-channel/([A-Za-z0-9._:-]+)(?:\?.*)?$")
OPEN_TIMEOUT = 10.0
POLICY_VIOLATION = 1008


class Gateway:
    """Accepts client websockets and runs one :class:`AgentSession` per session.

    Args:
        registry: the session registry (``get``, ``consume_token``, ``terminate``,
            ``add_terminate_listener``).
        decrypt: the local KMS Decrypt for the agents.
        options: agent behaviour.
        faults_for: returns the :class:`Faults` of a session id.
    """

    def __init__(self, registry: Any, decrypt: DecryptFn, options: AgentOptions | None = None,
                 faults_for: Callable[[str], Faults] | None = None) -> None:
        self.registry = registry
        self.decrypt = decrypt
        self.options = options or AgentOptions()
        self.faults_for = faults_for or (lambda sid: Faults())
        self.sessions: dict[str, AgentSession] = {}
        self.rejected = 0
        self._server: Any = None
        self.port = 0
        self.host = "127.0.0.1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        registry.add_terminate_listener(self._on_terminate)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()

        self._server = await serve(
            self._handler, host, port, compression=None, max_size=None,
            ping_interval=None, max_queue=64, server_header=None,
            create_connection=binary_handler_connection("server"))
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stream_url(self, session_id: str) -> str:
        """The StreamUrl StartSession / ExecuteCommand / ResumeSession hand out."""
        return (f"ws://{self.host}:{self.port}/v1/data-channel/{session_id}"
                f"?role=publish_subscribe")

    async def close(self) -> None:
        """End every session and stop listening."""
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.terminate()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)

    async def suspend(self) -> None:
        """A network outage: stop listening and drop every websocket without a close
        frame (sessions live on; :meth:`start` on the same port ends the outage)."""
        if self._server is None:
            return
        for ws in list(self._server.connections):
            ws.transport.abort()
        self._server.close(close_connections=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 3)
        self._server = None

    def _on_terminate(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.finished.is_set() or self._loop is None:
            return
        # The API may be called on another thread (tests poking at the registry).
        self._loop.call_soon_threadsafe(lambda: self._spawn(session.terminate()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handler(self, ws: Any) -> None:
        match = _PATH.match(ws.request.path)
        if match is None:
            await ws.close(POLICY_VIOLATION, "unknown path")
            return
        session_id = match.group(1)
        try:
            first = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT)
        except Exception:
            await ws.close(POLICY_VIOLATION, "OpenDataChannel expected")
            return
        if not isinstance(first, str):
            self.rejected += 1
            await ws.close(POLICY_VIOLATION, "OpenDataChannel must be a text frame")
            return
        try:
            opener = OpenDataChannel.from_text(first)
        except PayloadError:
            self.rejected += 1
            await ws.close(POLICY_VIOLATION, "malformed OpenDataChannel")
            return
        if not self.registry.consume_token(session_id, opener.token_value):
            self.rejected += 1
            log.info("rejected a token for session %s", session_id)  # never the token
            await ws.close(POLICY_VIOLATION, "invalid or expired token")
            return
        session = self.sessions.get(session_id)
        if session is None:
            record = self.registry.get(session_id)
            session = AgentSession(record, decrypt=self.decrypt, options=self.options,
                                   faults=self.faults_for(session_id), on_done=self._done)
            self.sessions[session_id] = session
        await session.attach(ws)

    def _done(self, session_id: str) -> None:
        with contextlib.suppress(Exception):
            self.registry.terminate(session_id)
