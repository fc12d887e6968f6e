"""Port sessions on the agent side: basic and smux-server modes (§10).

Mode (§10.2, §11.1): ``type == "LocalPortForwarding"`` and ClientVersion ≥
1.1.70 → smux v1 server; otherwise basic (one connection at a time; without
the type it is the SSH flavour, which ends when the destination closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Coroutine
from typing import Any

from ssmshell.local.plugin import AgentIO, Plugin
from ssmshell.protocol.payloads import Flag
from ssmshell.protocol.smux import SmuxSession, StreamClosed, StreamData, StreamOpened
from ssmshell.protocol.versions import (
    MUX_KEEPALIVE_DISABLED_AFTER_CLIENT,
    MUX_SUPPORTED_CLIENT_VERSION,
    TCP_MULTIPLEXING_AFTER,
    agent_compare,
    plugin_greater,
)

LOCAL_PORT_FORWARDING = "LocalPortForwarding"
READ_SIZE = 1024
SMUX_READ_SIZE = 32 * 1024
#: The agent's text when basic mode cannot dial (channel_closed Output).
CONNECT_FAILED = "Unable to connect to specified port"
#: Bytes waiting for a slow destination before :meth:`PortPlugin.wait_input_room`
#: holds the agent's reader (smux MaxReceiveBuffer, §10.4) ...
HIGH_WATER = 4 * 1024 * 1024
#: ... until the backlog is down to this.
LOW_WATER = 1024 * 1024
#: §10.2: the agent's default deny list (the VPC's own addresses are not emulated).
DENIED_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.169.253", "169.254.169.123", "169.254.169.250",
    "169.254.169.251", "fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123", "fd00:ec2::240"))


class PortPlugin(Plugin):
    """Forwards to ``host:portNumber`` (``localhost`` when ``host`` is empty)."""

    def __init__(self, io: AgentIO, properties: dict[str, str], *, client_version: str,
                 agent_version: str = "3.3.1142.0") -> None:
        super().__init__(io)
        self.host = properties.get("host") or "localhost"
        self.port = int(properties.get("portNumber") or 0)
        self.lpf = properties.get("type") == LOCAL_PORT_FORWARDING
        # An agent older than smux (3.0.196.0) has only basic mode, whatever the client.
        self.mux = (self.lpf and plugin_greater(agent_version, TCP_MULTIPLEXING_AFTER)
                    and agent_compare(client_version, MUX_SUPPORTED_CLIENT_VERSION) >= 0)
        self.keepalive = agent_compare(client_version, MUX_KEEPALIVE_DISABLED_AFTER_CLIENT) <= 0
        self._done: asyncio.Future[str] | None = None
        self._addresses: list[tuple[str, int]] = []
        # basic mode
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._inbound: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0  # bytes in _inbound
        # mux mode
        self._smux: SmuxSession | None = None
        self._streams: dict[int, asyncio.StreamWriter] = {}
        self._early: dict[int, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"Unable to resolve {self.host}: {exc}"
        for info in infos:
            address = str(info[4][0])
            if ipaddress.ip_address(address.split("%")[0]) in DENIED_ADDRESSES:
                return f"Forwarding to IP address {self.host} is forbidden."
            self._addresses.append((address, self.port))
        if self.mux:
            self._smux = SmuxSession(client=False, keepalive=self.keepalive,
                                     now=loop.time())
            self._spawn(self._smux_timer())
        else:
            # §10.1: basic mode (either flavour) dials at once, so that a server that
            # speaks first is heard before the client sends anything; a failure fails
            # the session (the agent's InitializeSession).
            try:
                await self._basic_dial()
            except OSError as exc:
                return f"{CONNECT_FAILED}: {exc}"
            self._spawn(self._basic_writer())
        # Input that arrives before this is not acked, so the client resends it (§7.7).
        self.io.set_ready(True)
        try:
            return await self._done
        finally:
            await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, reason: str = "") -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(reason)

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: OSError = OSError(f"cannot connect to {self.host}:{self.port}")
        for address in self._addresses:  # dial the resolved addresses in order (§10.2)
            try:
                reader, writer = await asyncio.open_connection(address[0], address[1])
            except OSError as exc:
                last = exc
                continue
            writer.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
            return reader, writer
        raise last

    # ------------------------------------------------------------------ back-pressure

    def input_room(self) -> bool:
        """Whether the client may send more now (no destination over HIGH_WATER)."""
        return self.input_backlog() <= HIGH_WATER

    def input_backlog(self) -> int:
        """Bytes of client input not yet written to a destination (the largest backlog of
        one destination, or the basic-mode queue)."""
        sizes = [w.transport.get_write_buffer_size() for w in self._streams.values()
                 if not w.transport.is_closing()]
        if self._conn is not None:
            sizes.append(self._conn[1].transport.get_write_buffer_size())
        return max([self._queued, *sizes])

    async def wait_input_room(self) -> None:
        """Return once the client may send more: no destination is more than HIGH_WATER
        behind (then wait for LOW_WATER). The agent's websocket reader awaits this after
        each input message, so a slow destination stops it reading, as the real agent's
        smux (MaxReceiveBuffer, §10.4) does: the client's sends then back up through TCP.
        """
        if self.input_room():
            return
        while self.input_backlog() > LOW_WATER and not (self._done is None or self._done.done()):
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ flags

    def on_flag(self, flag: int) -> None:
        if flag == Flag.TERMINATE_SESSION:
            self._end("")  # cancelled by the client (§13)
        elif flag == Flag.DISCONNECT_TO_PORT and not self.mux:
            if self.lpf:
                self._basic_close()  # re-dialled on the next Output (§10.3)
            else:
                self._end("the client disconnected from the port")

    def on_input(self, data: bytes) -> None:
        if self.mux:
            self._mux_input(data)
        else:
            self._inbound.put_nowait(data)
            self._queued += len(data)

    # ------------------------------------------------------------------ basic mode

    async def _basic_dial(self) -> None:
        reader, writer = await self._dial()
        self._conn = (reader, writer)
        self._spawn(self._basic_reader(reader, writer))

    async def _basic_writer(self) -> None:
        while True:
            data = await self._inbound.get()
            if data is None:
                return
            self._queued -= len(data)
            if self._conn is None:
                try:
                    await self._basic_dial()  # re-dial after DisconnectToPort or EOF (§10.3)
                except OSError as exc:
                    self._end(f"{CONNECT_FAILED}: {exc}")  # the agent fails the session
                    return
            assert self._conn is not None
            writer = self._conn[1]
            writer.write(data)
            with contextlib.suppress(OSError):
                await writer.drain()

    async def _basic_reader(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.io.wait_writable()
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self.io.send(data)
                if self.io.pacing:
                    await asyncio.sleep(self.io.pacing)
        except OSError:
            if not self.lpf:
                self._end("the connection to the destination failed")
                return
        if self._conn is not None and self._conn[1] is writer:
            self._basic_close()
        if not self.lpf:
            self._end("")  # SSH flavour: destination EOF ends the session successfully

    def _basic_close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    # ------------------------------------------------------------------ mux mode

    def _mux_input(self, data: bytes) -> None:
        assert self._smux is not None
        try:
            events = self._smux.receive_data(data)
        except Exception as exc:  # SmuxError: the smux session is dead
            self._end(f"smux protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, StreamOpened):
                self._early[event.stream_id] = []
                self._spawn(self._mux_open(event.stream_id))
            elif isinstance(event, StreamData):
                writer = self._streams.get(event.stream_id)
                if writer is not None:
                    writer.write(event.data)
                elif event.stream_id in self._early:
                    self._early[event.stream_id].append(event.data)
            elif isinstance(event, StreamClosed):
                self._early.pop(event.stream_id, None)
                closing = self._streams.pop(event.stream_id, None)
                if closing is not None:
                    closing.close()
        self._mux_flush()

    def _mux_flush(self) -> None:
        assert self._smux is not None
        out = self._smux.data_to_send()
        if out:
            self.io.send(out)

    async def _mux_open(self, stream_id: int) -> None:
        assert self._smux is not None
        try:
            reader, writer = await self._dial()
        except OSError:
            # §10.4: ConnectToPortError as its own message, then FIN the stream.
            self._early.pop(stream_id, None)
            self.io.send_flag(Flag.CONNECT_TO_PORT_ERROR)
            self._smux.close_stream(stream_id)
            self._mux_flush()
            return
        if stream_id not in self._early:  # the client closed it meanwhile
            writer.close()
            return
        for chunk in self._early.pop(stream_id):
            writer.write(chunk)
        self._streams[stream_id] = writer
        try:
            while True:
                await self.io.wait_writable()
                # With the real agent's pacing: one 1 KiB message (smux header
                # included) per read, then a pause (§6.8); without it, big reads.
                pacing = self.io.pacing
                data = await reader.read(READ_SIZE - 8 if pacing else SMUX_READ_SIZE)
                if not data:
                    break
                if stream_id not in self._streams:
                    return
                self._smux.send(stream_id, data)
                self._mux_flush()
                if pacing:
                    await asyncio.sleep(pacing)
        except OSError:
            pass
        # The reference relays close the whole stream when either direction ends.
        if self._streams.pop(stream_id, None) is not None:
            writer.close()
            self._smux.close_stream(stream_id)
            self._mux_flush()

    async def _smux_timer(self) -> None:
        assert self._smux is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            try:
                self._smux.tick(loop.time())
            except Exception as exc:
                self._end(f"smux session timed out: {exc}")
                return
            self._mux_flush()

    async def stop(self) -> None:
        self._end("")
        self._inbound.put_nowait(None)
        self._basic_close()
        for writer in self._streams.values():
            writer.close()
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()
