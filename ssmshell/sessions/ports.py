"""Port forwarding sessions (§10): smux v1 multiplexing, or basic mode for old agents.

The local side listens on TCP (or a unix socket); each accepted connection is
one smux stream (mux mode) or, in basic mode, the single connection of the
session at a time. Mode follows the plugin's rule exactly (§10.2), so that
client and agent always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ssmshell.channel import Channel, ChannelError
from ssmshell.errors import Exit
from ssmshell.protocol import events as ev
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import Flag, PayloadType
from ssmshell.protocol.smux import SmuxSession, StreamClosed, StreamData
from ssmshell.protocol.versions import (
    SMUX_KEEPALIVE_DISABLED_AFTER,
    TCP_MULTIPLEXING_AFTER,
    TERMINATE_SESSION_FLAG_AFTER,
    plugin_greater,
)

log = logging.getLogger("ssmshell.ports")

LOCAL_PORT_FORWARDING = "LocalPortForwarding"
READ_SIZE = 32 * 1024  # one smux PSH frame at most (MaxFrameSize, §14.3)
KEEPALIVE_INTERVAL = 10.0
#: Bytes a local connection may have waiting to be written before the session stops
#: taking events from the channel until they are written (smux MaxReceiveBuffer,
#: §10.4): a slow local reader then holds the session, as with the plugin's smux.
HIGH_WATER = 4 * 1024 * 1024
#: ... and the backlog at which it goes on.
LOW_WATER = 1024 * 1024
#: What stops a local connection's relay (the channel or the smux session is gone).
_RELAY_ERRORS = (OSError, ChannelError, ProtocolError)


@dataclass(frozen=True)
class Listen:
    """Where to listen locally: TCP ``host:port`` (port 0 = any) or a unix socket path."""

    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None

    def describe(self, bound_port: int | None = None) -> str:
        if self.unix_path:
            return self.unix_path
        return f"{self.host}:{bound_port if bound_port is not None else self.port}"


class PortSession:
    """One forward: a local listener bridged to one port session.

    Args:
        channel: an unopened :class:`Channel` of a Port session.
        listen: the local side.
        notice: one line to the user's stderr.
        on_ready: called with the bound address once listening.
    """

    def __init__(self, channel: Channel, listen: Listen, *,
                 notice: Callable[[str], None] | None = None,
                 on_ready: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.listen = listen
        self.notice = notice or (lambda line: None)
        self.on_ready = on_ready or (lambda where: None)
        self.agent_version = ""
        self.mux = False
        self.connections = 0
        self.failed_connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._smux: SmuxSession | None = None
        self._streams: dict[int, asyncio.StreamWriter] = {}
        self._received: set[int] = set()
        self._connect_errors = 0
        self._basic_writer: asyncio.StreamWriter | None = None
        self._basic_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound: str | None = None
        self.close_reason: str | None = None

    async def run(self) -> int:
        """Forward until the session ends or is cancelled.

        Returns:
            0, or 1 when the agent closed the session with an error text (the
            destination cannot be resolved, is forbidden, …; see :attr:`close_reason`).

        Raises:
            ChannelError: the data channel failed, or the agent broke smux.
        """
        await self.channel.open()
        try:
            async for event in self.channel.events():
                await self._on_event(event)
        finally:
            await self._shutdown()
        return Exit.ERROR if self.close_reason else 0

    async def terminate(self) -> None:
        """End the session from our side: Flag TerminateSession for agents that know it
        (§10.3); the caller calls the TerminateSession API as well."""
        if plugin_greater(self.agent_version, TERMINATE_SESSION_FLAG_AFTER):
            with contextlib.suppress(Exception):
                await self.channel.send_flag(Flag.TERMINATE_SESSION)
                await self.channel.drain(1.0)

    async def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionStarted):
            await self._start(event)
        elif isinstance(event, ev.StreamData) and event.payload_type == PayloadType.OUTPUT:
            if self.mux:
                await self._mux_receive(event.data)
            elif self._basic_writer is not None:
                await _write_local(self._basic_writer, event.data)
        elif isinstance(event, ev.FlagReceived) and event.flag == Flag.CONNECT_TO_PORT_ERROR:
            # §10.4: the agent could not dial; the stream's FIN follows.
            self._connect_errors += 1
        elif isinstance(event, ev.ChannelClosed):
            self.close_reason = event.output
            if event.output:
                self.notice(f"port session closed: {event.output}")

    async def _start(self, event: ev.SessionStarted) -> None:
        props = event.properties or {}
        self.agent_version = event.agent_version
        if event.session_type != "Port":
            raise ChannelError(f"expected a Port session, the agent started {event.session_type}")
        lpf = props.get("type") == LOCAL_PORT_FORWARDING
        # §10.2: exactly the plugin's rule, so that both ends pick the same mode.
        self.mux = lpf and plugin_greater(event.agent_version, TCP_MULTIPLEXING_AFTER)
        if self.mux:
            keepalive = not plugin_greater(event.agent_version, SMUX_KEEPALIVE_DISABLED_AFTER)
            loop = asyncio.get_running_loop()
            self._smux = SmuxSession(client=True, keepalive=keepalive, now=loop.time())
            if keepalive:
                self._spawn(self._keepalive())
        else:
            # Basic mode: output for a connection that does not exist yet waits (no ack).
            self.channel.set_accepting(False)
        handler = self._accept_mux if self.mux else self._accept_basic
        if self.listen.unix_path:
            self._server = await asyncio.start_unix_server(handler, self.listen.unix_path)
            self.bound = self.listen.unix_path
        else:
            self._server = await asyncio.start_server(handler, self.listen.host,
                                                      self.listen.port)
            port = self._server.sockets[0].getsockname()[1]
            self.bound = self.listen.describe(port)
        self.on_ready(self.bound)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ mux mode

    async def _accept_mux(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        assert self._smux is not None
        self.connections += 1
        _limit(writer)
        try:
            stream_id = self._smux.open_stream()
        except ProtocolError:  # the smux session is dead (the channel is ending)
            writer.close()
            return
        self._streams[stream_id] = writer
        try:
            await self._mux_flush()
            while stream_id in self._streams:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self._smux.send(stream_id, data)
                await self._mux_flush()
        except _RELAY_ERRORS:
            pass
        finally:
            self._received.discard(stream_id)
            if self._streams.pop(stream_id, None) is not None:
                self._smux.close_stream(stream_id)
                with contextlib.suppress(Exception):
                    await self._mux_flush()
            writer.close()

    async def _mux_receive(self, data: bytes) -> None:
        assert self._smux is not None
        try:
            events = self._smux.receive_data(data)
        except ProtocolError as exc:  # SmuxError: the agent broke smux; the session is dead
            raise ChannelError(f"smux protocol error from the agent: {exc}",
                               Exit.PROTOCOL) from None
        for event in events:
            if isinstance(event, StreamData):
                writer = self._streams.get(event.stream_id)
                if writer is not None:
                    self._received.add(event.stream_id)
                    await _write_local(writer, event.data)
            elif isinstance(event, StreamClosed):
                writer = self._streams.pop(event.stream_id, None)
                received = event.stream_id in self._received
                self._received.discard(event.stream_id)
                if writer is not None:
                    if self._connect_errors and not received:
                        self._connect_errors -= 1
                        self.failed_connections += 1
                        self.notice(f"connection {event.stream_id} to the destination port "
                                    "failed (ConnectToPortError); other connections go on")
                    writer.close()
        out = self._smux.data_to_send()
        if out:
            self._spawn(self._send_quietly(out))

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(*_RELAY_ERRORS):
            await self.channel.send_output(data)

    async def _mux_flush(self) -> None:
        assert self._smux is not None
        out = self._smux.data_to_send()
        if out:
            await self.channel.send_output(out)

    async def _keepalive(self) -> None:
        assert self._smux is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(*_RELAY_ERRORS):
            while True:
                await asyncio.sleep(KEEPALIVE_INTERVAL)
                self._smux.tick(loop.time())
                await self._mux_flush()

    # ------------------------------------------------------------------ basic mode

    async def _accept_basic(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        async with self._basic_lock:  # §10.3: one connection at a time
            self.connections += 1
            _limit(writer)
            self._basic_writer = writer
            self.channel.set_accepting(True)
            try:
                while True:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    await self.channel.send_output(data)
            except _RELAY_ERRORS:
                pass
            finally:
                self.channel.set_accepting(False)
                self._basic_writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await self.channel.send_flag(Flag.DISCONNECT_TO_PORT)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._streams.values()):
            writer.close()
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()


def _limit(writer: asyncio.StreamWriter) -> None:
    """Let a local connection buffer up to HIGH_WATER before ``drain()`` waits."""
    with contextlib.suppress(Exception):
        writer.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)


async def _write_local(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write to a local connection; past HIGH_WATER unwritten bytes, wait until its reader
    is down to LOW_WATER (a connection that is gone does not wait)."""
    writer.write(data)
    if writer.transport.get_write_buffer_size() > HIGH_WATER:
        with contextlib.suppress(Exception):
            await writer.drain()
