"""smux protocol version 1 (xtaci/smux), sans-I/O, both roles (PROTOCOL.md §10.4, §14.3).

Port sessions in multiplexed mode carry one smux byte stream inside the
data channel's Output payloads. Frames have an 8-byte **little-endian**
header::

    ver(1)=1  cmd(1)  length(2, LE)  stream id(4, LE)  data(length)

cmd: 0 SYN (open), 1 FIN (close), 2 PSH (data), 3 NOP (keepalive). The client
opens odd ids from 3; the server (the agent) accepts them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ssmshell.protocol.errors import SmuxError

VERSION = 1
CMD_SYN = 0
CMD_FIN = 1
CMD_PSH = 2
CMD_NOP = 3
HEADER = struct.Struct("<BBHI")
MAX_FRAME_SIZE = 32768  # §14.3 MaxFrameSize
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_TIMEOUT = 30.0


def encode_frame(cmd: int, stream_id: int, data: bytes = b"") -> bytes:
    """One smux v1 frame.

    Raises:
        SmuxError: ``data`` longer than a frame can carry.
    """
    if len(data) > 0xFFFF:
        raise SmuxError("smux frame data longer than 65535 bytes")
    return HEADER.pack(VERSION, cmd, len(data), stream_id) + data


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """Server role: the peer opened ``stream_id`` (SYN)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """Data for ``stream_id`` (PSH)."""

    stream_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer closed ``stream_id`` (FIN)."""

    stream_id: int


SmuxEvent = StreamOpened | StreamData | StreamClosed


class SmuxSession:
    """One smux v1 session.

    Args:
        client: True to play the client (opens streams), False for the server.
        keepalive: send NOP every 10 s and consider the session dead after 30 s
            without any frame (§10.4: only with old peers).
        now: the current time in seconds (the clock is the caller's).
    """

    def __init__(self, *, client: bool, keepalive: bool = False, now: float = 0.0) -> None:
        self.client = client
        self.keepalive = keepalive
        self._next_id = 1  # increased by 2 before use: 3, 5, 7, … (§10.4)
        self._streams: set[int] = set()
        self._buffer = bytearray()
        self._offset = 0
        self._out: list[bytes] = []
        self._last_received = now
        self._last_sent_nop = now
        self.dead: str | None = None

    @property
    def open_streams(self) -> frozenset[int]:
        """Ids of the streams currently open."""
        return frozenset(self._streams)

    def _check(self) -> None:
        if self.dead is not None:
            raise SmuxError(self.dead)

    def open_stream(self) -> int:
        """Client role: open a new stream (queues SYN).

        Returns:
            The new stream id.
        """
        self._check()
        if not self.client:
            raise SmuxError("only the client opens smux streams")
        self._next_id += 2
        stream_id = self._next_id
        self._streams.add(stream_id)
        self._out.append(encode_frame(CMD_SYN, stream_id))
        return stream_id

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` on ``stream_id`` as PSH frames of at most 32768 bytes."""
        self._check()
        if stream_id not in self._streams:
            return
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME_SIZE):
            self._out.append(encode_frame(CMD_PSH, stream_id,
                                          bytes(view[start:start + MAX_FRAME_SIZE])))

    def close_stream(self, stream_id: int) -> None:
        """Queue FIN for ``stream_id`` and forget it (idempotent)."""
        self._check()
        if stream_id in self._streams:
            self._streams.discard(stream_id)
            self._out.append(encode_frame(CMD_FIN, stream_id))

    def data_to_send(self) -> bytes:
        """Everything queued, as one byte string."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def tick(self, now: float) -> None:
        """Keepalive: NOP every 10 s; no frame for 30 s kills the session.

        Raises:
            SmuxError: the keepalive timeout expired.
        """
        self._check()
        if not self.keepalive:
            return
        if now - self._last_received >= KEEPALIVE_TIMEOUT:
            self.dead = "smux keepalive timeout: no frame for 30 s"
            raise SmuxError(self.dead)
        if now - self._last_sent_nop >= KEEPALIVE_INTERVAL:
            self._last_sent_nop = now
            self._out.append(encode_frame(CMD_NOP, 0))

    def receive_data(self, data: bytes, now: float | None = None) -> list[SmuxEvent]:
        """Feed bytes of the peer's stream (any cut); returns the events they complete.

        Raises:
            SmuxError: a frame with another version or an unknown command; the
                session is dead afterwards.
        """
        self._check()
        self._buffer += data
        events: list[SmuxEvent] = []
        buf = self._buffer
        pos = self._offset
        try:
            while len(buf) - pos >= HEADER.size:
                ver, cmd, length, stream_id = HEADER.unpack_from(buf, pos)
                if ver != VERSION:
                    raise SmuxError(f"smux version {ver} (only version 1 is spoken)")
                if cmd > CMD_NOP:
                    raise SmuxError(f"invalid smux command {cmd}")
                if len(buf) - pos < HEADER.size + length:
                    break
                body = bytes(buf[pos + HEADER.size:pos + HEADER.size + length])
                pos += HEADER.size + length
                if now is not None:
                    self._last_received = now
                self._on_frame(cmd, stream_id, body, events)
        except SmuxError as exc:
            self.dead = str(exc)
            raise
        finally:
            # Compact once the consumed prefix is large, not on every frame.
            if pos > 65536 or pos == len(buf):
                del buf[:pos]
                pos = 0
            self._offset = pos
        return events

    def note_activity(self, now: float) -> None:
        """Record that the peer was heard from (for the keepalive timeout)."""
        self._last_received = now

    def _on_frame(self, cmd: int, stream_id: int, body: bytes, events: list[SmuxEvent]) -> None:
        if cmd == CMD_NOP:
            return
        if cmd == CMD_SYN:
            if stream_id in self._streams or self.client:
                return  # duplicate SYN ignored; a server never opens streams here
            self._streams.add(stream_id)
            events.append(StreamOpened(stream_id))
        elif cmd == CMD_PSH:
            if body and stream_id in self._streams:
                events.append(StreamData(stream_id, body))
        elif cmd == CMD_FIN and stream_id in self._streams:
            self._streams.discard(stream_id)
            events.append(StreamClosed(stream_id))
