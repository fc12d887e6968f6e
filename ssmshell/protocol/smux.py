"""smux protocol version 1 (xtaci/smux), sans-I/O, both roles (PROTOCOL.md §10.4, §14.3).

Port sessions in multiplexed mode carry one smux byte stream inside the data
channel's Output payloads. Every frame starts with an 8-byte header whose
multi-byte fields are **little-endian**::

    ver(1)=1  cmd(1)  length(2, LE)  stream id(4, LE)  data(length, PSH only)

cmd: 0 SYN (open), 1 FIN (close), 2 PSH (data), 3 NOP (keepalive). Command 4
(UPD) exists only in smux v2 and, like any other command or another version,
is a protocol error here that ends the smux session.

:class:`SmuxSession` plays either role. The client opens streams with odd ids
3, 5, 7, …; the server (the agent, or the local emulator) accepts them. The
session never touches a socket or a clock: bytes go in through
:meth:`SmuxSession.receive_data` (any cut of the peer's byte stream), bytes to
write come out of :meth:`SmuxSession.data_to_send`, and time only moves when
the caller passes ``now`` (seconds, any monotonic origin).

Streams are closed as a whole, the way the reference relays use smux v1: a
local :meth:`SmuxSession.close_stream` sends FIN and forgets the stream, and a
FIN from the peer reports :class:`StreamClosed` and forgets it too (the peer's
smux already dropped the stream when it sent FIN, so no FIN goes back).

Error model: a malformed frame raises :class:`~ssmshell.protocol.errors.SmuxError`
and kills the session, as does the keepalive timeout (raised from
:meth:`SmuxSession.tick`). On a dead session ``open_stream``, ``send``,
``receive_data`` and ``tick`` raise ``SmuxError`` again, ``close_stream`` is a
no-op and ``data_to_send`` returns ``b""``, so clean-up paths need no guard.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ssmshell.protocol.errors import SmuxError

#: The only protocol version spoken (§10.4).
VERSION = 1
CMD_SYN = 0
CMD_FIN = 1
CMD_PSH = 2
CMD_NOP = 3
#: smux v2's window update; invalid in v1, named only to recognise it in errors.
CMD_UPD = 4
#: ver, cmd, length, stream id; little-endian, no padding.
HEADER = struct.Struct("<BBHI")
HEADER_SIZE = HEADER.size
#: MaxFrameSize (§14.3): the largest PSH this side sends; larger writes are split.
MAX_FRAME_SIZE = 32768
#: KeepAliveInterval (§14.3): a NOP this often when keepalive is on.
KEEPALIVE_INTERVAL = 10.0
#: KeepAliveTimeout (§14.3): no frame for this long kills the session when keepalive is on.
KEEPALIVE_TIMEOUT = 30.0
#: The first id a client opens; later ones go up by 2 (§10.4).
FIRST_CLIENT_STREAM_ID = 3

#: What the byte-taking functions accept.
BytesLike = bytes | bytearray | memoryview

_MAX_STREAM_ID = 0xFFFFFFFF
_MAX_LENGTH = 0xFFFF
# Consumed input is dropped from the reassembly buffer once it is this large
# (or at once when everything was consumed), never on every frame.
_COMPACT_AT = 65536
_COMMAND_NAMES = {CMD_SYN: "SYN", CMD_FIN: "FIN", CMD_PSH: "PSH", CMD_NOP: "NOP",
                  CMD_UPD: "UPD"}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded smux v1 frame.

    Attributes:
        cmd: ``CMD_SYN``, ``CMD_FIN``, ``CMD_PSH`` or ``CMD_NOP``.
        stream_id: the stream the frame belongs to (0 for NOPs).
        data: the data of a PSH; always empty for the other commands.
    """

    cmd: int
    stream_id: int
    data: bytes = field(default=b"", repr=False)


def encode_frame(cmd: int, stream_id: int, data: BytesLike = b"", *,
                 version: int = VERSION) -> bytes:
    """Encode one smux frame.

    Any command and version that fit the header can be encoded, so tests and
    the emulator can also build invalid frames. Only PSH data is read back by
    a v1 receiver: for SYN, FIN and NOP the reference implementation ignores
    the length field and reads no data, so do not give those commands data.

    Args:
        cmd: the command byte (``CMD_SYN``, ``CMD_FIN``, ``CMD_PSH``, ``CMD_NOP``).
        stream_id: the stream id, 0 to 2**32-1.
        data: the frame's data, at most 65535 bytes (a PSH normally carries at
            most ``MAX_FRAME_SIZE``; :meth:`SmuxSession.send` splits for you).
        version: the version byte; 1 unless a test wants a bad frame.

    Returns:
        The header followed by ``data``.

    Raises:
        SmuxError: a field does not fit the header.
    """
    if not 0 <= cmd <= 0xFF or not 0 <= version <= 0xFF:
        raise SmuxError(f"smux cmd {cmd} / version {version} does not fit in a byte")
    if not 0 <= stream_id <= _MAX_STREAM_ID:
        raise SmuxError(f"smux stream id {stream_id} out of range")
    body = bytes(data)
    if len(body) > _MAX_LENGTH:
        raise SmuxError(f"smux frame data of {len(body)} bytes is longer than 65535")
    return HEADER.pack(version, cmd, len(body), stream_id) + body


def decode_frame(buffer: BytesLike, offset: int = 0) -> tuple[Frame, int] | None:
    """Decode the frame that starts at ``offset`` of ``buffer``, if it is complete.

    The header is validated as soon as its 8 bytes are there, even when the
    data of a PSH is still missing.

    Args:
        buffer: bytes of the peer's smux stream.
        offset: where the frame starts.

    Returns:
        ``(frame, end)`` where ``end`` is the offset just after the frame, or
        None when ``buffer`` does not yet hold the whole frame.

    Raises:
        SmuxError: the version is not 1, or the command is not SYN, FIN, PSH
            or NOP (UPD, command 4, included).
    """
    available = len(buffer) - offset
    if available < HEADER_SIZE:
        return None
    version, cmd, length, stream_id = HEADER.unpack_from(buffer, offset)
    if version != VERSION:
        raise SmuxError(f"smux frame of version {version}; only version {VERSION} is spoken")
    if cmd > CMD_NOP:
        name = _COMMAND_NAMES.get(cmd, "unknown")
        raise SmuxError(f"invalid smux v1 command {cmd} ({name})")
    start = offset + HEADER_SIZE
    if cmd != CMD_PSH or length == 0:
        # Only PSH carries data; like xtaci/smux, the length of others is not read.
        return Frame(cmd, stream_id), start
    if available < HEADER_SIZE + length:
        return None
    with memoryview(buffer) as view:
        data = view[start:start + length].tobytes()
    return Frame(cmd, stream_id, data), start + length


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """Server role: the peer opened ``stream_id`` (SYN)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """Data the peer sent on ``stream_id`` (one PSH, never empty)."""

    stream_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer closed ``stream_id`` (FIN); the stream is forgotten."""

    stream_id: int


SmuxEvent = StreamOpened | StreamData | StreamClosed


class SmuxSession:
    """One smux v1 session, client or server role.

    Keepalive (§10.4) is off by default, as with agents newer than
    3.1.1511.0. When on, :meth:`tick` queues a NOP every 10 s and raises
    :class:`SmuxError` once no frame has arrived for 30 s. A frame counts as
    arrived once its header is in; the time of arrival is the ``now`` given
    to :meth:`receive_data`, or, without one, the ``now`` of the next
    :meth:`tick` (later than the real arrival, so the timeout can come late
    by one tick interval but never early). NOPs from the peer are accepted
    and ignored whether keepalive is on or not.

    Args:
        client: True to play the client (opens streams 3, 5, 7, …), False to
            play the server (accepts streams the peer opens).
        keepalive: send NOPs and enforce the receive timeout.
        now: the current time in seconds; keepalive timers start here.
    """

    def __init__(self, *, client: bool, keepalive: bool = False, now: float = 0.0) -> None:
        self._client = client
        self._keepalive = keepalive
        self._next_id = FIRST_CLIENT_STREAM_ID - 2  # increased by 2 before use
        self._streams: set[int] = set()
        self._inbuf = bytearray()
        self._inpos = 0
        self._outbuf = bytearray()
        self._last_heard = now
        self._heard_since_tick = False
        self._last_nop = now
        self._error: str | None = None

    # ------------------------------------------------------------------ state

    @property
    def client(self) -> bool:
        """True in the client role."""
        return self._client

    @property
    def keepalive(self) -> bool:
        """True when NOPs are sent and the 30 s receive timeout applies."""
        return self._keepalive

    @property
    def open_streams(self) -> frozenset[int]:
        """Ids of the streams that are open (empty once the session is dead)."""
        return frozenset(self._streams)

    @property
    def error(self) -> str | None:
        """Why the session died, or None while it is alive."""
        return self._error

    def _check_alive(self) -> None:
        if self._error is not None:
            raise SmuxError(f"smux session is dead: {self._error}")

    def _die(self, reason: str) -> None:
        self._error = reason
        self._streams.clear()
        self._inbuf = bytearray()
        self._inpos = 0
        self._outbuf = bytearray()

    # ------------------------------------------------------------------ local requests

    def open_stream(self) -> int:
        """Client role: open a new stream; queues its SYN.

        Returns:
            The new stream id: 3 for the first stream, then 5, 7, …

        Raises:
            SmuxError: the session is dead, this is the server role, or the
                stream ids are used up (the session stays usable for the
                streams it has).
        """
        self._check_alive()
        if not self._client:
            raise SmuxError("only the smux client opens streams")
        stream_id = self._next_id + 2
        if stream_id > _MAX_STREAM_ID:
            raise SmuxError("smux stream ids exhausted; open a new session")
        self._next_id = stream_id
        self._streams.add(stream_id)
        self._outbuf += HEADER.pack(VERSION, CMD_SYN, 0, stream_id)
        return stream_id

    def send(self, stream_id: int, data: BytesLike) -> None:
        """Queue ``data`` on ``stream_id`` as PSH frames of at most 32768 bytes.

        Data for a stream that is not open (never opened, or already closed by
        either side) is dropped silently: a relay may still be sending when the
        peer's FIN arrives. Empty data queues nothing.

        Args:
            stream_id: an open stream.
            data: the bytes to send, any length.

        Raises:
            SmuxError: the session is dead.
        """
        self._check_alive()
        if stream_id not in self._streams or not data:
            return
        out = self._outbuf
        with memoryview(data) as raw, raw.cast("B") as view:
            total = len(view)
            for start in range(0, total, MAX_FRAME_SIZE):
                with view[start:start + MAX_FRAME_SIZE] as chunk:
                    out += HEADER.pack(VERSION, CMD_PSH, len(chunk), stream_id)
                    out += chunk

    def close_stream(self, stream_id: int) -> None:
        """Close ``stream_id``: queue its FIN and forget it.

        Idempotent: closing a stream that is not open (already closed by
        either side, or never opened) does nothing, and so does closing
        anything on a dead session.

        Args:
            stream_id: the stream to close.
        """
        if self._error is not None or stream_id not in self._streams:
            return
        self._streams.discard(stream_id)
        self._outbuf += HEADER.pack(VERSION, CMD_FIN, 0, stream_id)

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer.

        Returns:
            Every queued frame, in order, as one byte string (``b""`` if
            nothing is queued or the session is dead). Any cut of it may be
            sent; the peer reassembles.
        """
        if not self._outbuf:
            return b""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def tick(self, now: float) -> None:
        """Advance the keepalive timers; call it every few seconds when keepalive is on.

        Without keepalive it only checks that the session is alive.

        Args:
            now: the current time in seconds, on the clock given to the constructor.

        Raises:
            SmuxError: the session is dead, or no frame arrived during the
                last 30 s (the session is dead afterwards).
        """
        self._check_alive()
        if not self._keepalive:
            return
        if self._heard_since_tick:
            self._heard_since_tick = False
            self._last_heard = max(self._last_heard, now)
        if now - self._last_heard >= KEEPALIVE_TIMEOUT:
            reason = f"smux keepalive timeout: no frame for {KEEPALIVE_TIMEOUT:g} s"
            self._die(reason)
            raise SmuxError(reason)
        if now - self._last_nop >= KEEPALIVE_INTERVAL:
            self._last_nop = now
            self._outbuf += HEADER.pack(VERSION, CMD_NOP, 0, 0)

    # ------------------------------------------------------------------ peer input

    def receive_data(self, data: BytesLike, now: float | None = None) -> list[SmuxEvent]:
        """Feed bytes of the peer's smux stream, cut anywhere.

        Partial frames wait in a reassembly buffer for the next call. NOPs,
        empty PSHs, frames for streams that are not open, duplicate SYNs and,
        in the client role, any SYN are ignored.

        Args:
            data: the next bytes of the peer's stream.
            now: when they arrived, for the keepalive timeout; None to let the
                next :meth:`tick` stand for the arrival time.

        Returns:
            The events of the frames completed by ``data``, in order.

        Raises:
            SmuxError: the session is dead, or a frame has another version or
                an invalid command. The session is dead afterwards and the
                events of earlier frames in the same call are lost with it.
        """
        self._check_alive()
        buf = self._inbuf
        buf += data
        pos = self._inpos
        events: list[SmuxEvent] = []
        streams = self._streams
        heard = False
        try:
            while True:
                decoded = decode_frame(buf, pos)
                if decoded is None:
                    break
                frame, pos = decoded
                heard = True
                cmd = frame.cmd
                stream_id = frame.stream_id
                if cmd == CMD_PSH:
                    if frame.data and stream_id in streams:
                        events.append(StreamData(stream_id, frame.data))
                elif cmd == CMD_SYN:
                    if not self._client and stream_id not in streams:
                        streams.add(stream_id)
                        events.append(StreamOpened(stream_id))
                elif cmd == CMD_FIN and stream_id in streams:
                    streams.discard(stream_id)
                    events.append(StreamClosed(stream_id))
                # Anything else (NOP, FIN or SYN to ignore) is activity only.
        except SmuxError as exc:
            self._die(str(exc))
            raise
        # A header whose data is still arriving counts as activity, as in xtaci/smux.
        if heard or len(buf) - pos >= HEADER_SIZE:
            if now is None:
                self._heard_since_tick = True
            else:
                self._last_heard = max(self._last_heard, now)
        if pos == len(buf):
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT:
            del buf[:pos]
            pos = 0
        self._inpos = pos
        return events
