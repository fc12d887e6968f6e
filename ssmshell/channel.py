"""The asyncio side of one data channel: a websocket around a client-role DataChannel.

This layer is deliberately thin (DESIGN.md): it opens the websocket, sends
OpenDataChannel (§3.2), feeds frames into the protocol core, writes what the
core returns in order, runs its timers, answers KMS requests through an
injected coroutine, and reconnects through ResumeSession (§12) when the
socket drops. It knows nothing about boto3, click or terminals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import OpenDataChannel
from ssmshell.protocol.state import CLIENT_VERSION, DataChannel, Role, State

log = logging.getLogger("ssmshell.channel")

#: One ClientId per process, reused on every (re)connect (§3.2).
CLIENT_ID = str(uuid.uuid4())


class ChannelError(Exception):
    """The data channel cannot go on; the message is one line, safe to show.

    ``exit_code`` lets a layer above carry its own status through the channel
    (e.g. a failed KMS call); None means "decide from the type".
    """

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConnectError(ChannelError):
    """The websocket could not be opened."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a resume callback returns: a fresh token and, optionally, a new StreamUrl."""

    token: str | None = field(repr=False)
    stream_url: str | None = None


#: Resume callback: ``await resume()`` calls ssm:ResumeSession; a None token means
#: the session is gone (§2.4).
ResumeFn = Callable[[], Awaitable[Resumed]]
#: Data-key callback: ``await data_key(key_id, context)`` -> (plaintext, ciphertext_blob).
DataKeyFn = Callable[[str, dict[str, str]], Awaitable[tuple[bytes, bytes]]]


#: Largest websocket message accepted. Real frames are a 120-byte header plus at most
#: a few KiB of payload; anything this big is a hostile or broken peer (close 1009).
MAX_FRAME = 1 << 20
#: Events queued for the session beyond which the websocket is not read.
MAX_QUEUED_EVENTS = 256
#: How often a sender re-checks a stalled peer (seconds).
STALL_POLL = 0.005
#: Consecutive undecodable frames after which the peer is taken to be broken.
MAX_BAD_FRAMES = 64
#: Bytes waiting in the socket's write buffer beyond which senders wait.
WRITE_HIGH = 256 * 1024
#: The protocol core's timers run this long after their deadline (its checks are strict).
TIMER_SLACK = 0.001
#: Acknowledges are handled this long after they arrive, together: the agent acks a
#: keystroke just before its echo arrives, and the echo should not wait behind it.
ACK_DELAY = 0.001

#: A sink for stream data: writes what it can without waiting and returns the rest.
Sink = Callable[[ev.StreamData], bytes]


@dataclass(slots=True)
class ChannelOptions:
    """Tunables of :class:`Channel`; the defaults suit interactive use."""

    open_timeout: float = 10.0
    ping_interval: float | None = 20.0  # §3.4: MGS answers pings; well below idle timeouts
    ping_timeout: float | None = 20.0
    resume_budget: float = 300.0  # total seconds spent trying to resume before giving up
    window: int = 1024
    kms_challenge: bool = True
    handshake_timeout: float = 60.0
    debug: bool = False


class Channel:
    """A client data channel on one websocket, resumable.

    Frames are handled as they come off the socket (in the websocket's
    ``data_received``) and written as soon as the protocol core makes them, so a
    keystroke or its echo crosses no task switch: on a machine where waking up is
    dear, every hop shows in the echo latency (docs/PERFORMANCE.md). What has to
    wait goes through a task instead, in order: the KMS call of the handshake
    (frames that arrive meanwhile wait in an inbox), and stream data while the
    session is still busy with earlier events.

    Args:
        stream_url: StreamUrl from StartSession / ExecuteCommand, used as is.
        token: the single-use TokenValue (never logged).
        session_id: the SessionId (KMS context, messages).
        target_id: the agent's target string (§2.3), for the KMS context.
        data_key: coroutine doing kms:GenerateDataKey, or None if KMS is unavailable.
        resume: coroutine doing ssm:ResumeSession, or None to not reconnect.
        options: :class:`ChannelOptions`.
    """

    def __init__(
        self,
        stream_url: str,
        token: str,
        *,
        session_id: str,
        target_id: str,
        data_key: DataKeyFn | None = None,
        resume: ResumeFn | None = None,
        options: ChannelOptions | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        self.stream_url = stream_url
        self._token = token
        self.session_id = session_id
        self.options = options or ChannelOptions()
        self._data_key = data_key
        self._resume = resume
        self._status = status or (lambda line: None)
        self.dc = DataChannel(
            Role.CLIENT, session_id=session_id, target_id=target_id,
            window=self.options.window, kms_challenge=self.options.kms_challenge,
            handshake_timeout=self.options.handshake_timeout,
        )
        #: Where stream data goes when the session is idle (see :meth:`events`).
        self.sink: Sink | None = None
        self._ws: Any = None
        self._events: asyncio.Queue[ev.Event | BaseException] = asyncio.Queue()
        self._consumer_waiting = False
        self._inbox: deque[bytes] = deque()
        self._acks: list[bytes] = []
        self._acks_timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._reading_paused = False
        self._failed = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer = DeadlineTimer(self.dc, self._on_timer)
        self._closing = False
        self.closed_reason: str | None = None
        self.resumes = 0
        self._bad_frames = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open the websocket, send OpenDataChannel and start the reader.

        Raises:
            ConnectError: the websocket cannot be reached within ``open_timeout``.
        """
        await self._connect(self.stream_url, self._token)
        self._token = ""
        self._tasks = [asyncio.create_task(self._reader())]
        self._timer.arm()

    async def _connect(self, url: str, token: str) -> None:
        from websockets.asyncio.client import connect

        try:
            self._ws = await asyncio.wait_for(connect(
                url,
                compression=None,  # §3.1: the plugin never negotiates deflate
                open_timeout=self.options.open_timeout,
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_timeout,
                max_size=MAX_FRAME,
                max_queue=64,
                user_agent_header=None,
                create_connection=binary_handler_connection(),
            ), self.options.open_timeout + 1)
        except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
            raise ConnectError(f"cannot reach the data channel at {_host(url)}: "
                               f"{_why(exc)}") from None
        except Exception as exc:  # websockets' InvalidHandshake family, InvalidURI
            raise ConnectError(f"websocket refused at {_host(url)}: {_why(exc)}") from None
        self._ws.on_binary = self._on_frame
        self._reading_paused = False
        opener = OpenDataChannel(
            request_id=str(uuid.uuid4()), token_value=token, client_id=CLIENT_ID,
            client_version=CLIENT_VERSION)
        await self._ws.send(opener.to_text())
        if self.options.debug:
            log.debug("websocket open to %s, OpenDataChannel sent", _host(url))

    async def close(self) -> None:
        """Stop the tasks and close the websocket with a normal close (§3.5)."""
        self._closing = True
        self._timer.cancel()
        if self._acks_timer is not None:
            self._acks_timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            self._ws.on_binary = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 1.0)

    async def events(self) -> AsyncIterator[ev.Event]:
        """The protocol events for the session, in order.

        While the caller waits here with nothing queued, :class:`StreamData` goes
        to :attr:`sink` (when set) instead of through this iterator.
        The iteration ends after :class:`~ssmshell.protocol.events.ChannelClosed`.

        Raises:
            ChannelError: a fatal error (handshake failed, resume gave up, …).
        """
        while True:
            self._consumer_waiting = True
            try:
                item = await self._events.get()
            finally:
                self._consumer_waiting = False
            if self._reading_paused and self._events.qsize() <= MAX_QUEUED_EVENTS // 2:
                self._set_reading(True)
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, ev.ChannelClosed):
                return

    # ------------------------------------------------------------------ sending

    async def send_output(self, data: bytes) -> None:
        """Send user bytes, waiting while the unacked window is full or the peer has
        stopped taking data (back-pressure)."""
        await self._writable.wait()
        while self.dc.peer_stalled and self.dc.connected:
            await asyncio.sleep(STALL_POLL)
        self._check()
        self.dc.send_output(data)
        self._flush()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):  # a drop: the reader resumes
                await ws.drain()

    def send_output_now(self, data: bytes) -> bool:
        """Send user bytes at once if nothing needs waiting for; False if the caller
        must use :meth:`send_output` instead (the channel not open, window full, peer
        stalled, no socket, a full socket buffer)."""
        ws, dc = self._ws, self.dc
        if ws is None or dc.state is not State.OPEN or not self._writable.is_set() or \
                dc.peer_stalled or ws.transport.get_write_buffer_size() > WRITE_HIGH:
            return False
        dc.send_output(data)
        self._flush()
        return True

    async def send_size(self, cols: int, rows: int) -> None:
        """Send a terminal size (§9.4)."""
        self._check()
        self.dc.send_size(cols, rows)
        self._flush()

    async def send_flag(self, flag: int) -> None:
        """Send a Flag (§4.5)."""
        self._check()
        self.dc.send_flag(flag)
        self._flush()

    def set_accepting(self, accepting: bool) -> None:
        """Gate in-order data (§6.4 "not ready"): while closed nothing is acked, so the
        agent retransmits later. Opening delivers what the reorder buffer holds."""
        self.dc.set_accepting(accepting)
        for event in self.dc.next_events():
            self._events.put_nowait(event)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything sent was acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.dc.unacked or self.dc.pending:
            if time.monotonic() >= deadline or self.dc.state in (State.CLOSED, State.ERROR):
                return False
            await asyncio.sleep(0.01)
        return True

    def _check(self) -> None:
        if self.dc.state is State.ERROR:
            raise ChannelError(self.dc.error or "data channel failed")

    def _flush(self) -> None:
        """Write what the protocol core has queued, now. The socket buffers what it
        cannot take; bulk senders then wait in :meth:`send_output`."""
        frames = self.dc.data_to_send()
        ws = self._ws
        if frames and ws is not None:
            if self.options.debug:
                for frame in frames:
                    _log_header("send", frame)
            write_frames(ws, frames)  # closing or closed: the reader notices and resumes
        if self.dc.writable:
            self._writable.set()
        else:
            self._writable.clear()
        if not self._closing:
            self._timer.arm()

    def _on_timer(self) -> None:
        self.dc.tick()
        if self.dc.state is State.ERROR:
            self._fail(ChannelError(self.dc.error or "data channel failed"))
            return
        for event in self.dc.next_events():
            if isinstance(event, ev.HandshakeFailed):
                self._fail(ChannelError(f"handshake failed: {event.reason}"))
                return
        self._flush()

    # ------------------------------------------------------------------ receiving

    def _on_frame(self, frame: bytes) -> None:
        """A binary websocket message, straight from the socket's ``data_received``."""
        if m.is_acknowledge(frame):
            # Nothing waits for an ack but the resend timer (RTO ≥ 10 ms) and the window.
            self._acks.append(frame)
            if self._acks_timer is None:
                self._acks_timer = asyncio.get_running_loop().call_later(
                    ACK_DELAY, self._on_acks)
        else:
            self._take(frame)

    def _on_acks(self) -> None:
        self._acks_timer = None
        acks, self._acks = self._acks, []
        for frame in acks:
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        """Handle ``frame`` now, or after the frames waiting for a KMS call."""
        if self._busy or self._inbox:
            self._inbox.append(frame)
        else:
            self._handle(frame)

    def _handle(self, frame: bytes) -> None:
        if self._failed or self.dc.state is State.CLOSED:
            return
        if self.options.debug:
            _log_header("recv", frame)
        try:
            self.dc.receive_frame(frame)
            self._dispatch(self.dc.next_events())
        except ProtocolError as exc:
            self._fail(ChannelError(str(exc)))
        except ChannelError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug; it must not reach the websocket's data_received
            log.debug("frame handling failed", exc_info=True)
            self._fail(ChannelError(f"internal error: {type(exc).__name__}: {_why(exc)}"))
        self._flush()

    def _dispatch(self, events: list[ev.Event]) -> None:
        if self._bad_frames and not any(isinstance(e, ev.FrameDropped) for e in events):
            self._bad_frames = 0
        for index, event in enumerate(events):
            if isinstance(event, ev.StreamData):
                self._deliver(event)
            elif isinstance(event, ev.DataKeyRequested):
                self._busy = True  # frames wait in the inbox until the KMS call is done
                self._tasks.append(asyncio.get_running_loop().create_task(
                    self._answer_data_key(event, events[index + 1:])))
                return
            elif isinstance(event, ev.FrameDropped):
                log.debug("frame dropped: %s", event.reason)
                self._bad_frames += 1
                if self._bad_frames >= MAX_BAD_FRAMES:
                    raise ProtocolError(f"the peer sent {self._bad_frames} undecodable frames "
                                        f"in a row (last: {event.reason})")
            elif isinstance(event, ev.HandshakeFailed):
                self._flush()
                raise ChannelError(f"handshake failed: {event.reason}")
            else:
                if isinstance(event, ev.ChannelClosed):
                    self.closed_reason = event.output
                self._events.put_nowait(event)
        if not self._reading_paused and self._events.qsize() > MAX_QUEUED_EVENTS:
            # A slow consumer (a local reader that does not read) stops us reading the
            # websocket: back-pressure through TCP to the agent, instead of acking
            # and queueing without bound.
            self._set_reading(False)

    def _deliver(self, event: ev.StreamData) -> None:
        """Stream data to the sink when the session is idle (nothing can overtake it),
        else through the event queue."""
        if self.sink is not None and self._consumer_waiting and self._events.empty():
            rest = self.sink(event)
            if not rest:
                return
            event = ev.StreamData(event.payload_type, rest)
        self._events.put_nowait(event)

    def _set_reading(self, reading: bool) -> None:
        self._reading_paused = not reading
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                if reading:
                    ws.transport.resume_reading()
                else:
                    ws.transport.pause_reading()

    def _fail(self, exc: ChannelError) -> None:
        if not self._failed:
            self._failed = True
            self._events.put_nowait(exc)

    async def _answer_data_key(self, event: ev.DataKeyRequested, rest: list[ev.Event]) -> None:
        try:
            if self._data_key is None:
                self.dc.reject_data_key("no KMS access configured")
                self._flush()
                raise ChannelError(
                    "the session requires KMS encryption but no KMS client is set")
            try:
                plaintext, blob = await self._data_key(event.kms_key_id,
                                                       event.encryption_context)
            except ChannelError as exc:
                self.dc.reject_data_key(str(exc))
                self._flush()
                raise
            self.dc.provide_data_key(plaintext, blob)
            self._dispatch(rest + self.dc.next_events())
        except ProtocolError as exc:
            self._fail(ChannelError(str(exc)))
        except ChannelError as exc:
            self._fail(exc)
        finally:
            self._busy = False
        self._flush()
        while self._inbox and not self._busy:
            self._handle(self._inbox.popleft())

    # ------------------------------------------------------------------ tasks

    async def _reader(self) -> None:
        """Waits for the websocket to drop, and resumes. Binary messages are handled
        in :meth:`_on_frame`; only text (and fragmented) ones come through here."""
        try:
            while True:
                try:
                    async for frame in self._ws:
                        if isinstance(frame, str):
                            log.debug("unexpected text frame ignored")  # §3.3
                            continue
                        self._on_frame(frame)
                except Exception as exc:  # ConnectionClosed and friends
                    log.debug("websocket dropped: %s", type(exc).__name__)
                    sent = getattr(exc, "sent", None)
                    if getattr(sent, "code", None) == 1009:
                        raise ProtocolError(f"the peer sent a websocket message larger than "
                                            f"{MAX_FRAME} bytes") from None
                if self._closing or self._failed or \
                        self.dc.state in (State.CLOSED, State.ERROR):
                    return
                await self._reconnect()
        except ChannelError as exc:
            self._fail(exc)
        except ProtocolError as exc:
            self._fail(ChannelError(str(exc)))

    async def _reconnect(self) -> None:
        """Resume the session on a new websocket (§12), within ``resume_budget`` seconds."""
        self.dc.connection_lost()
        self._ws = None
        if self._resume is None:
            raise ChannelError("the connection to the session was lost")
        deadline = time.monotonic() + self.options.resume_budget
        delay = 0.1 + random.random() * 0.1
        attempt = 0
        last = "connection lost"
        while time.monotonic() < deadline:
            attempt += 1
            self._status(f"connection lost, resuming session (attempt {attempt})…")
            try:
                resumed = await self._resume()
                if not resumed.token:
                    raise ChannelError(f"Session: {self.session_id} timed out.")
                await self._connect(resumed.stream_url or self.stream_url, resumed.token)
            except ChannelError as exc:
                if not isinstance(exc, ConnectError):
                    raise
                last = str(exc)
            else:
                self.resumes += 1
                self.dc.connection_made()
                self._flush()
                if self._events.qsize() > MAX_QUEUED_EVENTS:
                    self._set_reading(False)
                self._status("")
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0) * (0.75 + random.random() * 0.5)
        raise ChannelError(f"could not resume the session: {last}")


class DeadlineTimer:
    """Runs ``callback`` just after a data channel's next deadline (§6.5 resend, §7.6
    handshake timeout), and not at all while it has none: nothing wakes an idle
    session, and no periodic tick lands in the middle of a keystroke's echo.

    Args:
        dc: the data channel whose :meth:`~DataChannel.next_deadline` it follows
            (its clock must be the event loop's, ``time.monotonic``).
        callback: runs the channel's :meth:`~DataChannel.tick` and sends what it made.
    """

    def __init__(self, dc: DataChannel, callback: Callable[[], None]) -> None:
        self._dc = dc
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        """Whether a deadline is scheduled."""
        return self._handle is not None

    def arm(self) -> None:
        """Follow the next deadline; call it after anything that may have moved it."""
        deadline = self._dc.next_deadline()
        if self._handle is not None:
            if deadline is not None and self._handle.when() <= deadline + TIMER_SLACK:
                return  # it fires no later, and re-arms then
            self.cancel()
        if deadline is not None:
            self._handle = asyncio.get_running_loop().call_at(deadline + TIMER_SLACK,
                                                              self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._callback()


def write_frames(ws: Any, frames: list[bytes]) -> None:
    """Write binary frames to a websockets connection now, without waiting: the socket
    buffers what it cannot take. On a closing connection they are dropped; the data
    channel resends what is not acked."""
    try:
        for frame in frames:
            ws.protocol.send_binary(frame)
        ws.send_data()
    except Exception:
        log.debug("frames not written: the websocket is closing")


_CONNECTIONS: dict[str, Any] = {}


#: Bytes one socket read may take: what asyncio's own reads take.
READ_BUFFER = 256 * 1024


def binary_handler_connection(side: str = "client") -> Any:
    """websockets' ``ClientConnection`` (or, for ``side="server"``, ``ServerConnection``)
    handing each binary message to its ``on_binary`` attribute, when set, as soon as it
    is parsed: no queue, no task switch. ``create_connection`` is websockets' hook for
    such subclasses; text and fragmented messages still go through ``recv``.

    It is also an :class:`asyncio.BufferedProtocol`: the transport reads into one
    buffer of the connection's own, where a plain protocol has every read allocate
    ``READ_BUFFER`` bytes afresh (an ``mmap``, ``mremap`` and ``munmap`` each time,
    about 60 µs of a keystroke's echo on a cold CPU; bench/cold.py). Through
    TLS too: asyncio's SSL layer decrypts straight into the buffer."""
    if side not in _CONNECTIONS:
        from websockets.frames import Frame, Opcode

        base: Any
        if side == "client":
            from websockets.asyncio.client import ClientConnection as base
        else:
            from websockets.asyncio.server import ServerConnection as base

        class _Connection(base, asyncio.BufferedProtocol):  # type: ignore[misc]
            on_binary: Callable[[bytes], None] | None = None
            _buffer: memoryview | None = None

            def get_buffer(self, sizehint: int) -> memoryview:
                if self._buffer is None:
                    self._buffer = memoryview(bytearray(READ_BUFFER))
                return self._buffer

            def buffer_updated(self, nbytes: int) -> None:
                assert self._buffer is not None
                self.data_received(bytes(self._buffer[:nbytes]))

            def process_event(self, event: Any) -> None:
                handler = self.on_binary
                if handler is not None and isinstance(event, Frame) and \
                        event.opcode is Opcode.BINARY and event.fin:
                    handler(bytes(event.data))
                else:
                    super().process_event(event)

        _CONNECTIONS[side] = _Connection
    return _CONNECTIONS[side]


def _host(url: str) -> str:
    """The host:port of a URL, for messages (never the query string)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc or url.split("?")[0]


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _log_header(direction: str, frame: bytes) -> None:
    """--debug: headers only, never payloads or tokens (§16.22)."""
    try:
        msg = m.decode(frame, verify_digest=False)
    except ProtocolError as exc:
        log.debug("%s undecodable frame (%d bytes): %s", direction, len(frame), exc)
        return
    log.debug("%s %s seq=%d flags=%d payload_type=%d length=%d", direction, msg.message_type,
              msg.sequence_number, msg.flags, msg.payload_type, len(msg.payload))
