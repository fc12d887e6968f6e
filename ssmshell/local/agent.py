"""The agent emulator: one agent-role DataChannel per session, and its plugin (§15).

The session outlives websockets: the client may drop and resume (§12) and the
plugin keeps running, its output waiting in the unacked window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ssmshell.channel import WRITE_HIGH, DeadlineTimer, write_frames
from ssmshell.local.faults import Faults, FaultyLink
from ssmshell.local.plugin import Plugin
from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import ChannelClosed, PayloadType, SessionType
from ssmshell.protocol.state import AGENT_VERSION, DataChannel, Role, State

log = logging.getLogger("ssmshell.local.agent")

PREPARE_TO_CLOSE = 2.0  # §14.2 PrepareToCloseChannel: wait ≤ 2 s for acks at the end
#: How long the acks of a keystroke wait for its echo when the echo was not readable
#: right after the keystroke was written (seconds); the echo then leaves first.
ECHO_WAIT = 0.001
#: Gives up the CPU to another runnable process (POSIX; absent on Windows).
_yield_cpu: Callable[[], None] | None = getattr(os, "sched_yield", None)


@dataclass
class AgentOptions:
    """How the emulated agent behaves.

    Attributes:
        pacing: seconds between 1024-byte reads (the real agent's ~1 ms; 0 = off).
        initial_read_delay: seconds before the first PTY read (§9.1: 1 s).
        window: unacked output messages before the producers stop reading.
        strict_digest: check digests of client frames (the real agent does not).
        require_kms_challenge: refuse clients that do not acknowledge the random
            challenge (§8.6, the agent's ``RequireKMSChallengeResponse``).
        short_channel_closed: send channel_closed with HeaderLength 112 and
            NUL padding, as reported of the real service (§4.2.1).
        shell: the program for shell sessions (default ``$SHELL`` or /bin/sh).
        agent_version: AgentVersion in the HandshakeRequest.
        max_payload: largest Output payload the agent sends.
    """

    pacing: float = 0.001
    initial_read_delay: float = 1.0
    window: int = 2000
    strict_digest: bool = False
    require_kms_challenge: bool = False
    short_channel_closed: bool = False
    shell: str | None = None
    agent_version: str = AGENT_VERSION
    max_payload: int = 1024


class KmsDecryptError(Exception):
    """What the local KMS raises through :data:`DecryptFn`; ``str()`` is safe to show."""


#: ``decrypt(blob, context, key_id) -> plaintext`` (raises on failure).
DecryptFn = Callable[[bytes, dict[str, str], str], bytes]


class AgentSession:
    """The agent's half of one session.

    Args:
        record: the registry's session record (session_id, target, session_type,
            properties, command, separate_output_stream, prefixes, kms_key_id).
        decrypt: the local KMS Decrypt.
        options: :class:`AgentOptions`.
        faults: :class:`Faults` for this session.
        on_done: called with the session id when the session has ended.
    """

    def __init__(self, record: Any, *, decrypt: DecryptFn, options: AgentOptions,
                 faults: Faults | None = None,
                 on_done: Callable[[str], None] | None = None) -> None:
        self.record = record
        self.session_id: str = record.session_id
        self.options = options
        self.faults = faults or Faults()
        self._decrypt = decrypt
        self._on_done = on_done or (lambda sid: None)
        self.dc = DataChannel(
            Role.AGENT, session_id=self.session_id, target_id=record.target,
            agent_version=options.agent_version, window=options.window,
            max_payload=options.max_payload, max_resends=None,
            verify_digest=options.strict_digest,
            require_kms_challenge=options.require_kms_challenge)
        self.dc.accepting = False  # "not ready" until the plugin says so (§9.1)
        self.dc.connection_lost()  # until the first websocket attaches
        self.rng = random.Random(self.faults.seed)
        self.plugin: Plugin | None = None
        self.ws: Any = None
        self._out_link: FaultyLink | None = None
        self._in_link: FaultyLink | None = None
        self._lock = asyncio.Lock()
        self._writable = asyncio.Event()
        self._writable.set()
        self._wake = asyncio.Event()
        self._started = False
        self._plugin_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timer = DeadlineTimer(self.dc, self._on_timer)
        self._ready_at = 0.0
        self.finished = asyncio.Event()  # ending: draining, then channel_closed
        self.ended = asyncio.Event()  # channel_closed sent (or nobody to send it to)
        self.close_reason: str | None = None
        self.connections = 0
        self.frames_to_client = 0
        self._highest_delivered = -1
        self._highest_received = -1
        self.fresh_output = 0
        self.fresh_input = 0
        self._frozen: set[Any] = set()
        #: None outside :meth:`_receive_now`; in it, whether output has left (and the
        #: CPU been given up) while the message is handled.
        self._sent_in_receive: bool | None = None
        #: Acks waiting for an echo (:data:`ECHO_WAIT`), and whether input that echoes
        #: was handed to the plugin in the message being handled.
        self._acks_held: asyncio.TimerHandle | None = None
        self._echo_due = False

    # ------------------------------------------------------------------ AgentIO

    @property
    def pacing(self) -> float:
        return self.options.pacing

    def send(self, data: bytes, payload_type: int = PayloadType.OUTPUT) -> None:
        if self.dc.state is State.OPEN:
            self.dc.send_output(data, payload_type)
            # The output before the acks still queued: the real agent reads the PTY in a
            # goroutine of its own, and an echo there never waits for an ack being made.
            if not self._flush_now(acks=False):
                self._kick()
            elif self._sent_in_receive is False:  # an echo read in the keystroke's turn
                self._sent_in_receive = True
                self._give_way()  # the ack follows in _receive_now
            elif self._acks_held is not None:  # a late echo: its keystroke's ack waited
                self._give_way()
                self._release_acks()

    def send_exit_code(self, code: int) -> None:
        if self.dc.state is State.OPEN:
            self.dc.send_exit_code(code)
            self._kick()

    def send_flag(self, flag: int) -> None:
        if self.dc.state is State.OPEN:
            self.dc.send_flag(flag)
            self._kick()

    @property
    def writable(self) -> bool:
        return self.dc.writable or self.finished.is_set()

    async def wait_writable(self) -> None:
        while not self.dc.writable and not self.finished.is_set():
            self._writable.clear()
            await self._writable.wait()

    def set_ready(self, ready: bool) -> None:
        if not ready:
            self.dc.set_accepting(False)
            return
        delay = self._ready_at - time.monotonic()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.set_ready, True)
            return
        if not self.dc.accepting:
            self.dc.set_accepting(True)
            self._dispatch(self.dc.next_events())
            self._kick()

    # ------------------------------------------------------------------ websockets

    async def attach(self, ws: Any) -> None:
        """Serve one websocket of the client until it closes or the session ends.

        A client may come back (ResumeSession) while the session drains at its
        end: it then gets the unacked output and the channel_closed."""
        if self.ended.is_set():
            await ws.close(1000, "session ended")
            return
        old = self.ws
        if old is not None:
            old.transport.abort()  # no close handshake with a peer that may be dead
        self.ws = ws
        self.connections += 1
        frames_this_connection = 0
        fresh_this_connection = 0

        async def deliver(frame: bytes) -> None:
            nonlocal frames_this_connection, fresh_this_connection
            if self.ws is not ws or ws in self._frozen:
                return
            await ws.send(frame)
            frames_this_connection += 1
            self.frames_to_client += 1
            f = self.faults
            if f.cut_every is not None or f.cut_at or f.freeze_after is not None:
                # Counted in fresh output messages, so that every connection makes
                # progress however large the resend burst after a reconnect is.
                seq = int.from_bytes(frame[48:56], "big") if len(frame) > 56 else -1
                if m.peek_type(frame) == m.OUTPUT_STREAM_DATA and \
                        seq > self._highest_delivered:
                    self._highest_delivered = seq
                    fresh_this_connection += 1
                    self.fresh_output += 1
                    if (fresh_this_connection == f.cut_every
                            or self.fresh_output - 1 in f.cut_at):
                        ws.transport.abort()
                        self._frozen.add(ws)  # nothing more counts as delivered on it
                    elif self.fresh_output == f.freeze_after:
                        self._frozen.add(ws)
                        ws.transport.pause_reading()
                return
            await self._maybe_cut(ws, frames_this_connection)

        self._out_link = FaultyLink(self.faults, deliver, self.rng)
        # Like the real agent, the emulator does not check digests of client frames
        # unless strict_digest is on; corrupting them would then corrupt the stream
        # itself (no real link does that: TLS), so corruption goes agent→client only.
        in_faults = self.faults if self.options.strict_digest else replace(
            self.faults, corrupt_digest=0.0)
        self._in_link = FaultyLink(in_faults, self._receive, self.rng)
        if not self._started:
            self._start()
        else:
            self.dc.connection_made()
        await self._flush()
        if self._direct:  # as the real agent: each message handled as it is read
            ws.on_binary = lambda frame: self._receive_now(ws, frame)
        try:
            async for frame in ws:  # all of them, or with on_binary only text ones
                if isinstance(frame, str):
                    continue
                if self.faults.cut_at_input and self._cut_for_input(frame):
                    ws.transport.abort()
                    break
                await self._in_link.send(frame)
        except Exception as exc:  # abrupt close
            log.debug("client websocket dropped: %s", type(exc).__name__)
        finally:
            if self.ws is ws:
                self.ws = None
                self.dc.connection_lost()

    def _cut_for_input(self, frame: bytes) -> bool:
        """Whether this client frame is a new input message the faults cut at (the
        frame is then lost with the connection, as on a real network)."""
        seq = int.from_bytes(frame[48:56], "big") if len(frame) > 56 else -1
        if m.peek_type(frame) != m.INPUT_STREAM_DATA or seq <= self._highest_received:
            return False
        self._highest_received = seq
        self.fresh_input += 1
        return self.fresh_input - 1 in self.faults.cut_at_input

    async def _maybe_cut(self, ws: Any, count: int) -> None:
        f = self.faults
        if f.bye_after is not None and count == f.bye_after and self.connections == 1:
            await ws.close(1000, "Bye")  # the hourly close: no channel_closed
        elif f.cut_after is not None and count == f.cut_after and self.connections == 1:
            ws.transport.abort()

    # ------------------------------------------------------------------ session

    def _start(self) -> None:
        self._started = True
        self._ready_at = time.monotonic() + self.faults.ready_delay
        self.dc.connection_made()
        record = self.record
        self.dc.start_handshake(record.session_type, record.properties, record.kms_key_id)
        if self.faults.hostile == "unknown_action":
            self._add_unknown_action()
        self._dispatch(self.dc.next_events())
        self._tasks = [asyncio.create_task(self._writer())]

    # ------------------------------------------------------------------ hostile peer

    def _add_unknown_action(self) -> None:
        """Rewrite the queued HandshakeRequest to require an action no client knows."""
        import json

        entry = self.dc._unacked.get(0)
        if entry is None:
            return
        msg = m.decode(entry.frame)
        request = json.loads(msg.payload)
        request["RequestedClientActions"].append(
            {"ActionType": "QuantumTeleport", "ActionParameters": {"Mode": "now"}})
        msg = replace(msg, payload=json.dumps(request).encode(), payload_digest=b"")
        entry.frame = msg.encode()
        self.dc._outbox = [entry.frame]

    async def _be_hostile(self) -> None:
        """After the handshake: break the protocol the way ``faults.hostile`` says."""
        kind = self.faults.hostile
        await asyncio.sleep(0.3)
        ws = self.ws
        if ws is None:
            return
        if kind == "garbage":
            for _ in range(300):
                await ws.send(os.urandom(self.rng.randrange(1, 400)))
        elif kind == "oversized":
            await ws.send(b"\0" * (64 << 20))
        elif kind == "downgrade":
            cipher, self.dc.cipher = self.dc.cipher, None
            self.dc.send_output(b"plaintext after KMS was agreed\r\n")
            self.dc.cipher = cipher
            self._kick()

    def _receive_now(self, ws: Any, frame: bytes) -> None:
        """:meth:`_receive` for a link without faults, called from the socket's
        ``data_received``; a full destination pauses the socket's reading instead."""
        if self.ws is not ws:  # (acks still count while finish() drains)
            return
        if self._in_link is not None:
            self._in_link.stats["frames"] += 1
        try:
            self.dc.receive_frame(frame)
        except ProtocolError as exc:
            ws.on_binary = None
            self._spawn(self.finish(str(exc)))
            return
        self._sent_in_receive, self._echo_due = False, False
        try:
            self._dispatch(self.dc.next_events())
            hold = self._echo_due and not self._sent_in_receive
        finally:
            self._sent_in_receive = None
        if hold:  # the echo is on its way through the PTY: it goes first, then the ack
            if self._acks_held is None:
                self._acks_held = asyncio.get_running_loop().call_later(
                    ECHO_WAIT, self._release_acks)
        elif not self._flush_now():
            self._kick()
        room = getattr(self.plugin, "input_room", None)
        if room is not None and not room():  # a slow destination: TCP back-pressure (§10.4)
            ws.transport.pause_reading()
            self._spawn(self._resume_reading(ws))

    async def _resume_reading(self, ws: Any) -> None:
        room = getattr(self.plugin, "wait_input_room", None)
        if room is not None:
            with contextlib.suppress(Exception):
                await room()
        with contextlib.suppress(Exception):
            ws.transport.resume_reading()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _receive(self, frame: bytes) -> None:
        try:
            self.dc.receive_frame(frame)
        except ProtocolError as exc:
            await self.finish(str(exc))
            return
        self._dispatch(self.dc.next_events())
        if not self._flush_now():
            await self._flush()
        # A slow destination stops this reader (TCP back-pressure to the client),
        # as the real agent's smux receive buffer does (§10.4).
        room = getattr(self.plugin, "wait_input_room", None)
        if room is not None:
            await room()

    @staticmethod
    def _give_way() -> None:
        """After a keystroke's echo is written, before its ack: the real agent runs on
        another host; this one shares the client's CPUs, and a client woken on this CPU
        would wait while this agent ends its turn (pacing, the ack). It reads its echo
        first."""
        if _yield_cpu is not None:
            _yield_cpu()

    def _release_acks(self) -> None:
        """Send the acks held for an echo (:data:`ECHO_WAIT`)."""
        if self._acks_held is not None:
            self._acks_held.cancel()
            self._acks_held = None
        if not self._flush_now():
            self._kick()

    def _dispatch(self, events: list[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.StreamData):  # first: a keystroke's way to the PTY
                if self.plugin is not None:
                    self.plugin.on_input(event.data)
                    self._echo_due = self.plugin.echoes
            elif isinstance(event, ev.SessionStarted):
                self._plugin_task = asyncio.create_task(self._run_plugin())
                if self.faults.hostile in ("garbage", "oversized", "downgrade"):
                    self._tasks.append(asyncio.create_task(self._be_hostile()))
            elif isinstance(event, ev.SizeChanged):
                if self.plugin is not None:
                    self.plugin.on_size(event.cols, event.rows)
            elif isinstance(event, ev.FlagReceived):
                if self.plugin is not None:
                    self.plugin.on_flag(event.flag)
            elif isinstance(event, ev.DataKeyToDecrypt):
                self._answer_decrypt(event)
            elif isinstance(event, ev.HandshakeFailed):
                asyncio.get_running_loop().create_task(self.finish(event.reason))
            elif isinstance(event, ev.FrameDropped):
                log.debug("agent dropped a frame: %s", event.reason)

    def _answer_decrypt(self, event: ev.DataKeyToDecrypt) -> None:
        try:
            if self.faults.kms_decrypt_fail:
                raise KmsDecryptError("InvalidCiphertextException: ")
            if self.faults.hostile == "bad_challenge":
                # A data key the client does not have: its challenge cannot be opened.
                self.dc.provide_data_key(os.urandom(64))
                self._dispatch(self.dc.next_events())
                return
            plaintext = self._decrypt(event.ciphertext_blob, event.encryption_context,
                                      event.kms_key_id)
        except Exception as exc:
            self.dc.reject_data_key(str(exc) or type(exc).__name__)
            self._dispatch(self.dc.next_events())
            return
        self.dc.provide_data_key(plaintext)
        self._dispatch(self.dc.next_events())

    def _make_plugin(self) -> Plugin:
        from ssmshell.local.noninteractive import NonInteractivePlugin
        from ssmshell.local.shell import ShellPlugin

        record = self.record
        kind = record.session_type
        if kind == SessionType.PORT:
            from ssmshell.local.port import PortPlugin

            return PortPlugin(self, record.properties or {}, client_version=self.dc.client_version,
                              agent_version=self.options.agent_version)
        if kind == SessionType.NON_INTERACTIVE_COMMANDS:
            return NonInteractivePlugin(
                self, self._argv(record.command), separate=bool(record.separate_output_stream),
                stdout_prefix=getattr(record, "stdout_prefix", "") or "",
                stderr_prefix=getattr(record, "stderr_prefix", "") or "")
        if kind == SessionType.INTERACTIVE_COMMANDS and record.command:
            argv = self._argv(record.command)
        else:
            argv = [self.options.shell or os.environ.get("SHELL") or "/bin/sh"]
        return ShellPlugin(self, argv, initial_delay=self.options.initial_read_delay)

    def _argv(self, command: str | None) -> list[str]:
        command = command or ""
        if self.record.target.startswith("ecs:"):
            # §9.2: in container mode the command is split shell-style and run directly.
            return shlex.split(command) or ["/bin/sh"]
        return ["/bin/sh", "-c", command]

    async def _run_plugin(self) -> None:
        try:
            self.plugin = self._make_plugin()
            reason = await self.plugin.run()
        except Exception as exc:  # a plugin bug must still end the session cleanly
            log.exception("plugin failed")
            reason = f"plugin failed: {exc}"
        await self.finish(reason)

    async def finish(self, reason: str = "") -> None:
        """End the session: drain ≤ 2 s, send channel_closed, close the websocket (§9.6)."""
        if self.finished.is_set():
            return
        self.finished.set()
        self._writable.set()
        self.close_reason = reason
        if self.plugin is not None:
            with contextlib.suppress(Exception):
                await self.plugin.stop()
        # The real agent drains for 2 s; a link that loses frames on purpose (tests)
        # needs longer, or the end of the stream would be lost to the fault injection.
        drain = PREPARE_TO_CLOSE * (15 if self.faults.breaks_links else 1)
        deadline = time.monotonic() + drain
        while (self.dc.unacked or self.dc.pending) and time.monotonic() < deadline \
                and self.dc.state is State.OPEN:
            await self._flush()
            await asyncio.sleep(0.01)
        if self._out_link is not None:
            with contextlib.suppress(Exception):
                await self._out_link.flush()
        await self._send_channel_closed(reason)
        self.ended.set()
        self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        self._on_done(self.session_id)

    async def terminate(self) -> None:
        """TerminateSession: cancel the plugin and end the session (§13)."""
        if self.plugin is not None:
            await self.plugin.stop()
        await self.finish("")

    async def _send_channel_closed(self, reason: str) -> None:
        ws = self.ws
        if ws is None:
            return
        payload = ChannelClosed(
            message_id=str(uuid.uuid4()), created_date=str(int(time.time() * 1000)),
            destination_id=self.record.target, session_id=self.session_id, output=reason,
        ).to_bytes()
        short = self.options.short_channel_closed
        frame = m.Message(
            m.CHANNEL_CLOSED, 0, 0, m.random_id(), 0, payload, int(time.time() * 1000),
            header_length=m.SHORT_HEADER_LENGTH if short else m.HEADER_LENGTH,
        ).encode(nul_padded=short)
        with contextlib.suppress(Exception):
            async with self._lock:
                await ws.send(frame)
            await ws.close(1000, "session ended")

    # ------------------------------------------------------------------ plumbing

    def _kick(self) -> None:
        self._wake.set()

    def _flush_now(self, acks: bool = True) -> bool:
        """Write the queued frames at once, as the real agent does, when nothing sits
        between the data channel and the socket: no faults on the link, no flush in
        progress, room in the socket's buffer. False: :meth:`_flush` must do it.
        ``acks=False`` leaves acknowledges for a later flush."""
        ws, link = self.ws, self._out_link
        if ws is None or link is None or self._lock.locked() or not self._direct \
                or ws in self._frozen or ws.transport.get_write_buffer_size() > WRITE_HIGH:
            return False
        frames = self.dc.data_to_send(acks=acks)
        write_frames(ws, frames)
        link.stats["frames"] += len(frames)
        self.frames_to_client += len(frames)
        if self.dc.writable:
            self._writable.set()
        self._arm()
        return True

    @property
    def _direct(self) -> bool:
        """No faults between the data channel and the socket: frames go straight through."""
        return not (self.faults.breaks_links or self.faults.hostile)

    async def _flush(self) -> None:
        async with self._lock:
            frames = self.dc.data_to_send()
            link = self._out_link
            if link is not None:
                for frame in frames:
                    try:
                        await link.send(frame)
                    except Exception:
                        break  # the reader notices; unacked frames are resent later
        if self.dc.writable:
            self._writable.set()
        self._arm()

    async def _writer(self) -> None:
        """Flushes whatever the plugins queued (they call :meth:`send` synchronously)."""
        while True:  # runs through finish()'s drain; finish() cancels it
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    def _arm(self) -> None:
        if not self.ended.is_set():
            self._timer.arm()

    def _on_timer(self) -> None:
        """The resend scheduler (§6.5) and the handshake timeouts (§7.6)."""
        self.dc.tick()
        self._dispatch(self.dc.next_events())
        if not self._flush_now():
            self._kick()
            self._arm()  # the writer's flush re-arms too; a handshake timeout needs it now
