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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import OpenDataChannel
from ssmshell.protocol.state import CLIENT_VERSION, RESEND_INTERVAL, DataChannel, Role, State

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
        self._ws: Any = None
        self._events: asyncio.Queue[ev.Event | BaseException] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._writable = asyncio.Event()
        self._writable.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.closed_reason: str | None = None
        self.resumes = 0
        self._bad_frames = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open the websocket, send OpenDataChannel and start the reader and timer.

        Raises:
            ConnectError: the websocket cannot be reached within ``open_timeout``.
        """
        await self._connect(self.stream_url, self._token)
        self._token = ""
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._timer())]

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
            ), self.options.open_timeout + 1)
        except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
            raise ConnectError(f"cannot reach the data channel at {_host(url)}: "
                               f"{_why(exc)}") from None
        except Exception as exc:  # websockets' InvalidHandshake family, InvalidURI
            raise ConnectError(f"websocket refused at {_host(url)}: {_why(exc)}") from None
        opener = OpenDataChannel(
            request_id=str(uuid.uuid4()), token_value=token, client_id=CLIENT_ID,
            client_version=CLIENT_VERSION)
        await self._ws.send(opener.to_text())
        if self.options.debug:
            log.debug("websocket open to %s, OpenDataChannel sent", _host(url))

    async def close(self) -> None:
        """Stop the tasks and close the websocket with a normal close (§3.5)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 1.0)

    async def events(self) -> AsyncIterator[ev.Event]:
        """The protocol events for the session, in order.

        The iteration ends after :class:`~ssmshell.protocol.events.ChannelClosed`.

        Raises:
            ChannelError: a fatal error (handshake failed, resume gave up, …).
        """
        while True:
            item = await self._events.get()
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
        await self._flush()

    async def send_size(self, cols: int, rows: int) -> None:
        """Send a terminal size (§9.4)."""
        self._check()
        self.dc.send_size(cols, rows)
        await self._flush()

    async def send_flag(self, flag: int) -> None:
        """Send a Flag (§4.5)."""
        self._check()
        self.dc.send_flag(flag)
        await self._flush()

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

    async def _flush(self) -> None:
        async with self._send_lock:
            frames = self.dc.data_to_send()
            ws = self._ws
            if ws is None:
                return
            for frame in frames:
                if self.options.debug:
                    _log_header("send", frame)
                try:
                    await ws.send(frame)
                except Exception:  # the reader notices the drop and resumes
                    return
        if self.dc.writable:
            self._writable.set()
        else:
            self._writable.clear()

    # ------------------------------------------------------------------ tasks

    async def _reader(self) -> None:
        try:
            while True:
                try:
                    async for frame in self._ws:
                        if isinstance(frame, str):
                            log.debug("unexpected text frame ignored")  # §3.3
                            continue
                        if self.options.debug:
                            _log_header("recv", frame)
                        await self._receive(frame)
                        # A slow consumer (a local reader that does not read) stops us
                        # reading the websocket: back-pressure through TCP to the agent,
                        # instead of acking and queueing without bound.
                        while self._events.qsize() > MAX_QUEUED_EVENTS:
                            await asyncio.sleep(STALL_POLL)
                        if self.dc.state is State.CLOSED:
                            return
                except ProtocolError:
                    raise
                except Exception as exc:  # ConnectionClosed and friends
                    log.debug("websocket dropped: %s", type(exc).__name__)
                    sent = getattr(exc, "sent", None)
                    if getattr(sent, "code", None) == 1009:
                        raise ProtocolError(f"the peer sent a websocket message larger than "
                                            f"{MAX_FRAME} bytes") from None
                if self._closing or self.dc.state in (State.CLOSED, State.ERROR):
                    return
                await self._reconnect()
        except ChannelError as exc:
            await self._events.put(exc)
        except ProtocolError as exc:
            await self._events.put(ChannelError(str(exc)))

    async def _receive(self, frame: bytes) -> None:
        self.dc.receive_frame(frame)
        events = self.dc.next_events()
        if not any(isinstance(e, ev.FrameDropped) for e in events):
            self._bad_frames = 0
        for event in events:
            if isinstance(event, ev.DataKeyRequested):
                await self._answer_data_key(event)
            elif isinstance(event, ev.FrameDropped):
                log.debug("frame dropped: %s", event.reason)
                self._bad_frames += 1
                if self._bad_frames >= MAX_BAD_FRAMES:
                    raise ProtocolError(f"the peer sent {self._bad_frames} undecodable frames "
                                        f"in a row (last: {event.reason})")
                continue
            elif isinstance(event, ev.HandshakeFailed):
                await self._flush()
                raise ChannelError(f"handshake failed: {event.reason}")
            else:
                if isinstance(event, ev.ChannelClosed):
                    self.closed_reason = event.output
                await self._events.put(event)
        # Let the session write what arrived (an echo, say) before the acks go out:
        # it is what a user waits for; the ack can follow a moment later.
        await asyncio.sleep(0)
        await self._flush()

    async def _answer_data_key(self, event: ev.DataKeyRequested) -> None:
        await self._flush()  # the ack goes out before the (slow) KMS call, §7.3
        if self._data_key is None:
            self.dc.reject_data_key("no KMS access configured")
            await self._flush()
            raise ChannelError("the session requires KMS encryption but no KMS client is set")
        try:
            plaintext, blob = await self._data_key(event.kms_key_id, event.encryption_context)
        except ChannelError as exc:
            self.dc.reject_data_key(str(exc))
            await self._flush()
            raise
        self.dc.provide_data_key(plaintext, blob)

    async def _timer(self) -> None:
        """The resend scheduler (§6.5) and the handshake timeout (§7.6)."""
        while True:
            deadline = self.dc.next_deadline()
            delay = RESEND_INTERVAL if deadline is None else max(
                0.0, min(RESEND_INTERVAL, deadline - time.monotonic()))
            await asyncio.sleep(delay + 0.001)
            self.dc.tick()
            if self.dc.state is State.ERROR:
                await self._events.put(ChannelError(self.dc.error or "data channel failed"))
                return
            for event in self.dc.next_events():
                if isinstance(event, ev.HandshakeFailed):
                    await self._events.put(ChannelError(f"handshake failed: {event.reason}"))
                    return
            await self._flush()

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
                await self._flush()
                self._status("")
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0) * (0.75 + random.random() * 0.5)
        raise ChannelError(f"could not resume the session: {last}")


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
