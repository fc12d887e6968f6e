"""The data-channel state machine (PROTOCOL.md §6, §7, §8), sans-I/O.

One :class:`DataChannel` per session plays either role, client or agent. It
takes frames (``receive_frame``), local requests (``send_output``,
``send_size``, ``send_flag``, ``start_handshake``, ``provide_data_key``) and
timer ticks (``tick``), and hands back frames to write (``data_to_send``) and
events for the session (``next_events``). It never touches a socket or a clock
it was not given, so every rule is testable with plain bytes and a fake clock.

Resumable by construction: a reconnect only calls :meth:`connection_lost` and
:meth:`connection_made`; sequence numbers, unacked frames, the reorder buffer
and the keys stay.
"""

from __future__ import annotations

import base64
import enum
import hmac
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.cipher import AGENT, CLIENT, Cipher
from ssmshell.protocol.errors import (
    CipherError,
    HandshakeError,
    MalformedMessage,
    PayloadError,
    ProtocolError,
)
from ssmshell.protocol.payloads import (
    ACTION_KMS_ENCRYPTION,
    ACTION_SESSION_TYPE,
    KMS_CUSTOMER_MESSAGE,
    Acknowledge,
    ActionStatus,
    ChannelClosed,
    EncChallenge,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    KMSEncryptionParameters,
    PayloadType,
    ProcessedClientAction,
    SessionType,
    SessionTypeParameters,
    Size,
    decode_exit_code,
    decode_flag,
    encode_flag,
    kms_action_result,
)

#: Reported on the wire instead of the package version (§11.3): four numeric
#: parts above 1.2.331.0, the newest official client the team tested against.
CLIENT_VERSION = "1.2.677.0"
#: What the emulated agent reports (§11.2: > 3.1.1511.0 means smux without keepalive).
AGENT_VERSION = "3.3.1142.0"

# §6.5, §14.
INITIAL_RTT = 0.100
INITIAL_RTO = 0.200
MAX_RTO = 1.0
CLOCK_GRANULARITY = 0.010
RTT_ALPHA = 1 / 8
RTTVAR_BETA = 1 / 4
RESEND_INTERVAL = 0.100
STREAM_DATA_PAYLOAD_SIZE = 1024
DEFAULT_WINDOW = 1024
DEFAULT_INCOMING_CAPACITY = 10_000
AGENT_HANDSHAKE_TIMEOUT = 15.0  # §7.6
CLIENT_HANDSHAKE_TIMEOUT = 60.0  # §7.6: the plugin has none; we fail clearly
CHALLENGE_SIZE = 64  # §8.5
RANDOM_CHALLENGE_SIZE = 16  # §8.6

_HANDSHAKE_TYPES = frozenset({
    PayloadType.HANDSHAKE_REQUEST, PayloadType.HANDSHAKE_RESPONSE,
    PayloadType.HANDSHAKE_COMPLETE, PayloadType.ENC_CHALLENGE_REQUEST,
    PayloadType.ENC_CHALLENGE_RESPONSE,
})


_ACKNOWLEDGE_TYPE = m.type_field(m.ACKNOWLEDGE)


class Role(str, enum.Enum):
    """Which end of the data channel this object plays."""

    CLIENT = CLIENT
    AGENT = AGENT


class State(enum.Enum):
    """Handshake/session state (§7)."""

    IDLE = "IDLE"  #: nothing agreed yet (client: waiting for the agent's first message)
    HANDSHAKE = "HANDSHAKE"  #: request sent/received, waiting for the peer
    DATA_KEY = "DATA_KEY"  #: waiting for the session layer's KMS call
    CHALLENGE = "CHALLENGE"  #: encryption challenge in flight
    OPEN = "OPEN"  #: the session-type handler runs; user data flows
    CLOSED = "CLOSED"  #: channel_closed seen
    ERROR = "ERROR"  #: a fatal protocol error happened; nothing more is sent


class _Result(enum.Enum):
    CONSUMED = 1
    NOT_READY = 2  #: neither ack nor consume: the peer retransmits later (§6.4)


@dataclass(slots=True)
class _Outgoing:
    frame: bytes
    last_sent: float
    resends: int = 0


class DataChannel:
    """Sequencing, acks, retransmission, reordering, handshake and encryption of one session.

    Args:
        role: :attr:`Role.CLIENT` or :attr:`Role.AGENT`.
        session_id: the SessionId (KMS encryption context, §8.2).
        target_id: the agent's target string (§2.3), ``i-…`` or ``ecs:…``.
        clock: monotonic seconds; drives RTT/RTO and timeouts.
        wall_clock_ms: milliseconds since the epoch for CreatedDate.
        random_bytes: randomness for challenges and nonces.
        new_uuid: MessageId source (default: random version 4 ids).
        client_version: the ClientVersion we send (client) — never the package version.
        agent_version: the AgentVersion we send (agent).
        window: most unacked stream messages in flight; beyond it data waits
            unsequenced (back-pressure, §6.6) instead of evicting anything.
        max_payload: largest plaintext payload per message (§6.8: 1024).
        incoming_capacity: out-of-order messages kept (§6.6).
        max_resends: give up after this many resends of one message (None = never).
        verify_digest: check PayloadDigest on receive (the client must, §4.3).
        kms_challenge: client: acknowledge the random KMS challenge (§8.6).
        require_kms_challenge: agent: refuse clients that do not acknowledge it.
        handshake_timeout: seconds per handshake wait before failing (§7.6).
    """

    def __init__(
        self,
        role: Role,
        *,
        session_id: str = "",
        target_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        random_bytes: Callable[[int], bytes] | None = None,
        new_uuid: Callable[[], uuid.UUID] | None = None,
        client_version: str = CLIENT_VERSION,
        agent_version: str = AGENT_VERSION,
        window: int = DEFAULT_WINDOW,
        max_payload: int = STREAM_DATA_PAYLOAD_SIZE,
        incoming_capacity: int = DEFAULT_INCOMING_CAPACITY,
        max_resends: int | None = 3000,
        verify_digest: bool | None = None,
        kms_challenge: bool = True,
        require_kms_challenge: bool = False,
        handshake_timeout: float | None = None,
    ) -> None:
        import os

        self.role = role
        self.session_id = session_id
        self.target_id = target_id
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        self._random = random_bytes or os.urandom
        #: MessageIds in wire order.
        self._new_id: Callable[[], bytes] = m.random_ids().__next__ if new_uuid is None \
            else (lambda: m.wire_id(new_uuid()))
        self._stream_type = m.type_field(
            m.INPUT_STREAM_DATA if role is Role.CLIENT else m.OUTPUT_STREAM_DATA)
        self.client_version = client_version if role is Role.CLIENT else ""
        self.agent_version = agent_version if role is Role.AGENT else ""
        self.window = window
        self.max_payload = max_payload
        self.incoming_capacity = incoming_capacity
        self.max_resends = max_resends
        self.verify_digest = role is Role.CLIENT if verify_digest is None else verify_digest
        self.kms_challenge = kms_challenge
        self.require_kms_challenge = require_kms_challenge
        self.handshake_timeout = handshake_timeout or (
            CLIENT_HANDSHAKE_TIMEOUT if role is Role.CLIENT else AGENT_HANDSHAKE_TIMEOUT)

        self.state = State.IDLE
        self.session_type: str | None = None
        self.properties: dict[str, Any] | None = None
        self.cipher: Cipher | None = None
        #: False = the session handler is not ready: in-order data is neither
        #: acked nor consumed, so the peer retransmits it later (§6.4, §19.5).
        self.accepting = True
        self.paused = False
        self.connected = True
        self.error: str | None = None

        self._out_seq = 0
        self._expected = 0
        self._unacked: dict[int, _Outgoing] = {}
        self._incoming: dict[int, m.Message] = {}
        self._pending: deque[tuple[int, bytes]] = deque()
        #: Frames to send, in order. An acknowledge is queued as the Message it acks and
        #: made in :meth:`data_to_send`, after the session has handled the events: what
        #: the peer waits for (a keystroke's echo written, say) does not wait for the
        #: ack's MessageId, JSON, digest and packing.
        self._outbox: list[bytes | m.Message] = []
        self._events: list[ev.Event] = []
        #: Agent: HandshakeComplete is due once the receive loop has acked the message
        #: that completed the handshake (as the real agent's handshake routine sends it).
        self._complete_after_ack = False
        self.rtt = INITIAL_RTT
        self.rttvar = 0.0
        self.rto = INITIAL_RTO

        # handshake bookkeeping
        self._handshake_deadline: float | None = None
        self._handshake_started = 0.0
        self._kms_key_id: str | None = None
        self._kms_challenge_offered: str | None = None
        self._challenge_plain: bytes | None = None
        self._challenge_acked = False
        self._customer_message = ""
        self._processed: list[ProcessedClientAction] = []

        self._data_sent_bytes = 0
        self._data_received_bytes = 0

        self._handlers: dict[int, Callable[[m.Message, bytes], _Result]] = (
            self._client_handlers() if role is Role.CLIENT else self._agent_handlers())

    def __repr__(self) -> str:
        return (f"DataChannel(role={self.role.value}, state={self.state.value}, "
                f"out_seq={self._out_seq}, expected={self._expected}, "
                f"unacked={len(self._unacked)})")

    # ------------------------------------------------------------------ outputs

    def data_to_send(self, *, acks: bool = True) -> list[bytes]:
        """Frames to write to the websocket, in order; the list is handed over.

        Args:
            acks: False hands over the other frames and keeps the acknowledges for
                the next call: a sender with output ready can write it before it
                spends time on acks (nothing waits on an ack but a resend timer).
        """
        out, self._outbox = self._outbox, []
        if not acks:
            self._outbox = [frame for frame in out if not isinstance(frame, bytes)]
            return [frame for frame in out if isinstance(frame, bytes)]
        return [frame if isinstance(frame, bytes) else self._ack_frame(frame) for frame in out]

    def next_events(self) -> list[ev.Event]:
        """Events for the session since the last call, in order."""
        out, self._events = self._events, []
        return out

    @property
    def writable(self) -> bool:
        """Whether the session should keep reading its inputs (back-pressure, §6.6)."""
        return not self._pending and len(self._unacked) < self.window

    @property
    def peer_stalled(self) -> bool:
        """Whether the peer stopped taking our data: the oldest unacked message had to be
        resent. Later messages may still be acked into the peer's reorder buffer, so the
        window alone does not stop a sender; if that buffer fills, every dropped
        message is resent one timeout at a time. Senders should wait while this holds."""
        if not self._unacked:
            return False
        return next(iter(self._unacked.values())).resends > 0

    @property
    def unacked(self) -> int:
        """Number of sent stream messages not yet acknowledged."""
        return len(self._unacked)

    @property
    def pending(self) -> int:
        """Number of queued messages not yet sequenced (handshake or window wait)."""
        return len(self._pending)

    @property
    def next_sequence_number(self) -> int:
        """The sequence number our next stream message will carry."""
        return self._out_seq

    @property
    def expected_sequence_number(self) -> int:
        """The peer's next in-order sequence number."""
        return self._expected

    @property
    def bytes_sent(self) -> int:
        """Plaintext user bytes queued for sending so far (Output/StdErr)."""
        return self._data_sent_bytes

    @property
    def bytes_received(self) -> int:
        """Plaintext user bytes delivered in order so far."""
        return self._data_received_bytes

    # ------------------------------------------------------------------ local requests

    def send_output(self, data: bytes, payload_type: int = PayloadType.OUTPUT) -> None:
        """Queue user bytes, cut into messages of at most ``max_payload`` bytes.

        Before the session is open (handshake running) the bytes wait, so no
        user data ever precedes HandshakeComplete (§7.7).

        Args:
            data: the bytes; empty data sends nothing (the agent never sends
                empty stream messages, §6.1).
            payload_type: Output (1), or for the agent StdErr (11).

        Raises:
            ProtocolError: the channel is closed or failed.
        """
        size = self.max_payload
        if self.state is State.OPEN and not self._pending and not self.paused and \
                0 < len(data) <= size and len(self._unacked) < self.window:
            self._data_sent_bytes += len(data)
            self._send_stream(payload_type, data)  # a keystroke: straight out
            return
        self._check_usable()
        self._data_sent_bytes += len(data)
        for start in range(0, len(data), size):
            self._pending.append((payload_type, data[start:start + size]))
        self._flush_pending()

    def send_size(self, cols: int, rows: int) -> None:
        """Queue a Size message (client role, §9.4); sent once the session is open."""
        self._check_usable()
        self._pending.append((PayloadType.SIZE, Size(cols, rows).to_bytes()))
        self._flush_pending()

    def send_flag(self, flag: int) -> None:
        """Queue a Flag message (§4.5); flags are sequenced but never encrypted."""
        self._check_usable()
        self._pending.append((PayloadType.FLAG, encode_flag(flag)))
        self._flush_pending()

    def send_exit_code(self, code: int) -> None:
        """Agent role: queue the ``EXIT_CODE: n`` message (§9.3)."""
        self._check_usable()
        self._pending.append((PayloadType.EXIT_CODE, b"EXIT_CODE: %d" % code))
        self._flush_pending()

    def start_handshake(
        self,
        session_type: str,
        properties: dict[str, Any] | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        """Agent role: open the session, with a handshake when §7.1 says so.

        Port sessions never encrypt; shell types without a KMS key skip the
        handshake entirely and are open at once.

        Args:
            session_type: one of :class:`SessionType`'s values.
            properties: the document properties (Port only, §2.7).
            kms_key_id: the KMS key from the session preferences, if any.
        """
        if self.role is not Role.AGENT:
            raise ProtocolError("only the agent starts the handshake")
        self.session_type = session_type
        self.properties = properties if session_type == SessionType.PORT else None
        if session_type == SessionType.PORT:
            kms_key_id = None  # §7.1: the agent disables KMS for Port
        needs_handshake = kms_key_id is not None or session_type in (
            SessionType.PORT, SessionType.NON_INTERACTIVE_COMMANDS)
        if not needs_handshake:
            self._open(handshake=False)
            return
        self._kms_key_id = kms_key_id
        challenge = None
        if kms_key_id is not None:
            challenge = base64.b64encode(self._random(RANDOM_CHALLENGE_SIZE)).decode()
            self._kms_challenge_offered = challenge
        request = HandshakeRequest.build(
            self.agent_version, session_type, self.properties, kms_key_id, challenge)
        self.state = State.HANDSHAKE
        self._handshake_started = self._clock()
        self._handshake_deadline = self._handshake_started + self.handshake_timeout
        self._send_stream(PayloadType.HANDSHAKE_REQUEST, request.to_bytes())

    def provide_data_key(self, plaintext: bytes, ciphertext_blob: bytes = b"") -> None:
        """Hand over the KMS result asked for by :class:`~ssmshell.protocol.events.DataKeyRequested`
        (client: GenerateDataKey's Plaintext and CiphertextBlob) or by
        :class:`~ssmshell.protocol.events.DataKeyToDecrypt` (agent: Decrypt's Plaintext).

        Raises:
            ProtocolError: no data key was asked for.
            CipherError: the key is not 64 bytes.
        """
        if self.state is not State.DATA_KEY:
            raise ProtocolError("no data key was requested")
        cipher = Cipher(plaintext, self.role.value)
        if self.role is Role.CLIENT:
            # §8.5: the client encrypts as soon as its KMS action succeeded.
            self.cipher = cipher
            kms = ProcessedClientAction(
                ACTION_KMS_ENCRYPTION, ActionStatus.SUCCESS,
                kms_action_result(base64.b64encode(ciphertext_blob).decode(),
                                  self._challenge_acked))
            self._send_handshake_response([kms])
            self.state = State.HANDSHAKE
        else:
            self.cipher = cipher
            self._challenge_plain = self._random(CHALLENGE_SIZE)
            blob = cipher.encrypt(self._challenge_plain)
            self.state = State.CHALLENGE
            self._handshake_deadline = self._clock() + self.handshake_timeout
            self._send_stream(PayloadType.ENC_CHALLENGE_REQUEST,
                              EncChallenge(base64.b64encode(blob).decode()).to_bytes())

    def reject_data_key(self, reason: str) -> None:
        """The KMS call failed.

        Client: answer the KMSEncryption action as Failed (the agent then ends
        the session, §7.3). Agent: fail the handshake with ``Fetching data key
        failed: <reason>`` (§7.6).
        """
        if self.state is not State.DATA_KEY:
            raise ProtocolError("no data key was requested")
        if self.role is Role.CLIENT:
            self._send_handshake_response([ProcessedClientAction(
                ACTION_KMS_ENCRYPTION, ActionStatus.FAILED, None, reason)])
            self._fail(f"KMS data key: {reason}", handshake=True)
        else:
            self._fail(f"Fetching data key failed: {reason}", handshake=True)

    # ------------------------------------------------------------------ transport

    def connection_lost(self) -> None:
        """The websocket went away: stop sending and resending until it is back (§12)."""
        self.connected = False

    def connection_made(self) -> None:
        """A (new) websocket is up. Everything unacked is resent at once (§12.2), which
        is safe since receivers re-ack duplicates and beats waiting a tick per message."""
        self.connected = True
        self.paused = False
        now = self._clock()
        for entry in self._unacked.values():
            entry.last_sent = now
            self._outbox.append(entry.frame)
        self._flush_pending()

    def tick(self) -> None:
        """Run the timers: retransmission of the oldest unacked message (§6.5) and
        the handshake timeout (§7.6). Call it at :meth:`next_deadline` (or at least
        every :data:`RESEND_INTERVAL`)."""
        if self.state in (State.CLOSED, State.ERROR):
            return
        now = self._clock()
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            if self.role is Role.AGENT:
                reason = ("Timed out waiting for encryption challenge."
                          if self.state is State.CHALLENGE else
                          "Handshake timed out. Please ensure that you have the latest "
                          "version of the session manager plugin.")
            else:
                reason = "timed out waiting for the agent's handshake"
            self._fail(reason, handshake=True)
            return
        if not self._unacked or not self.connected or self.paused:
            return
        seq, head = next(iter(self._unacked.items()))
        if now - head.last_sent > self.rto:
            if self.max_resends is not None and head.resends >= self.max_resends:
                self._fail(f"gave up after {head.resends} resends of message {seq}")
                return
            head.resends += 1
            head.last_sent = now
            self._outbox.append(head.frame)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (a clock value), or None for no timer."""
        deadlines = []
        if self._handshake_deadline is not None:
            deadlines.append(self._handshake_deadline)
        if self._unacked and self.connected and not self.paused:
            head = next(iter(self._unacked.values()))
            deadlines.append(head.last_sent + self.rto)
        return min(deadlines) if deadlines else None

    def set_accepting(self, accepting: bool) -> None:
        """Open or close the gate for in-order data; opening it re-processes the
        reorder buffer (messages that were acked but not yet delivered)."""
        self.accepting = accepting
        if accepting:
            self._drain_incoming()

    # ------------------------------------------------------------------ receiving

    def receive_frame(self, frame: bytes) -> None:
        """Process one binary websocket frame from the peer.

        Invalid frames are dropped without an ack (§4.3) and reported as
        :class:`~ssmshell.protocol.events.FrameDropped`.

        Raises:
            ProtocolError: a fatal error (undecryptable data, a failed
                handshake); the channel is then in :attr:`State.ERROR`.
        """
        if self.state is State.ERROR:
            raise ProtocolError(self.error or "channel failed")
        try:
            msg = m.decode(frame, verify_digest=self.verify_digest)
        except MalformedMessage as exc:
            self._events.append(ev.FrameDropped(str(exc)))
            return
        kind = msg.message_type
        if kind == m.ACKNOWLEDGE:
            self.paused = False
            self._on_acknowledge(msg)
            self._flush_pending()  # §6.7: an ack ends a pause; send what waited
        elif kind == (m.OUTPUT_STREAM_DATA if self.role is Role.CLIENT else m.INPUT_STREAM_DATA):
            self.paused = False
            if self.state is not State.CLOSED:
                self._on_stream_message(msg)
            self._flush_pending()  # §6.7: so does any inbound stream message
        elif kind == m.CHANNEL_CLOSED:
            self._on_channel_closed(msg)
        elif kind == m.PAUSE_PUBLICATION:
            self.paused = True
        elif kind == m.START_PUBLICATION:
            self.paused = False
            self._flush_pending()
        else:
            self._events.append(ev.FrameDropped(f"ignored message type {kind!r}"))

    def _on_acknowledge(self, msg: m.Message) -> None:
        try:
            ack = Acknowledge.from_bytes(msg.payload)
        except PayloadError as exc:
            self._events.append(ev.FrameDropped(str(exc)))
            return
        entry = self._unacked.pop(ack.acknowledged_message_sequence_number, None)
        if entry is None:
            return  # §6.3: acks for unknown numbers are ignored
        sample = self._clock() - entry.last_sent
        # §6.5, in this order: RTTVAR uses the old RTT.
        self.rttvar = (1 - RTTVAR_BETA) * self.rttvar + RTTVAR_BETA * abs(self.rtt - sample)
        self.rtt = (1 - RTT_ALPHA) * self.rtt + RTT_ALPHA * sample
        self.rto = min(MAX_RTO, self.rtt + max(CLOCK_GRANULARITY, 4 * self.rttvar))
        self._flush_pending()

    def _on_channel_closed(self, msg: m.Message) -> None:
        try:
            closed = ChannelClosed.from_bytes(msg.payload)
            output, session_id = closed.output, closed.session_id
        except PayloadError:
            output, session_id = "", self.session_id
        self.state = State.CLOSED
        self._handshake_deadline = None
        self._events.append(ev.ChannelClosed(session_id or self.session_id, output))

    def _on_stream_message(self, msg: m.Message) -> None:
        seq = msg.sequence_number
        if seq == self._expected:
            if self._process(msg) is _Result.CONSUMED:
                self._expected += 1
                self._drain_incoming()
        elif seq > self._expected:
            if seq in self._incoming or len(self._incoming) < self.incoming_capacity:
                self._incoming[seq] = msg  # a second copy overwrites the first (§6.4)
                self._ack(msg)
            else:
                self._events.append(ev.FrameDropped(f"reorder buffer full, dropped {seq}"))
        else:
            self._ack(msg)  # §6.4: re-ack duplicates (the plugin's bug is not copied)

    def _drain_incoming(self) -> None:
        while self._expected in self._incoming and self.state not in (State.ERROR, State.CLOSED):
            msg = self._incoming[self._expected]
            if self._process(msg, buffered=True) is not _Result.CONSUMED:
                return  # stays buffered, retried on the next drain (§6.4)
            del self._incoming[self._expected]
            self._expected += 1

    def _process(self, msg: m.Message, buffered: bool = False) -> _Result:
        """Dispatch one in-order stream message and ack it when consumed."""
        payload_type = msg.payload_type
        handler = self._handlers.get(payload_type)
        if handler is None:
            # Unknown payload types are consumed (acked) so the stream moves on.
            if not buffered:
                self._ack(msg)
            self._events.append(ev.FrameDropped(f"ignored payload type {payload_type}"))
            return _Result.CONSUMED
        if (not self.accepting and self.state is State.OPEN
                and payload_type not in _HANDSHAKE_TYPES):
            return _Result.NOT_READY
        # The client acks handshake payloads before processing them, so that the
        # agent does not retransmit while a slow KMS call runs (§7.3).
        ack_first = self.role is Role.CLIENT and payload_type in _HANDSHAKE_TYPES
        if ack_first and not buffered:
            self._ack(msg)
        payload = msg.payload
        if self.cipher is not None and self.cipher.decrypts(payload_type):
            try:
                payload = self.cipher.decrypt(payload)
            except CipherError as exc:
                if self.role is Role.CLIENT:
                    # §8.4: fatal; also what stops a downgrade to plaintext after KMS.
                    self._fail(f"cannot decrypt agent data: {exc}")
                    raise ProtocolError(self.error or "decryption failed") from exc
                self._events.append(ev.FrameDropped(f"cannot decrypt client data: {exc}"))
                return _Result.NOT_READY
        try:
            result = handler(msg, payload)
        except (PayloadError, HandshakeError, CipherError) as exc:
            if payload_type in _HANDSHAKE_TYPES:
                self._fail(str(exc), handshake=True)
                raise ProtocolError(self.error or str(exc)) from exc
            if self.role is Role.CLIENT:
                # The agent's way (no ack) would stall the stream for good; fail clearly.
                self._fail(f"malformed payload from the agent: {exc}")
                raise ProtocolError(self.error or str(exc)) from exc
            self._events.append(ev.FrameDropped(str(exc)))
            return _Result.NOT_READY
        if result is _Result.CONSUMED and not ack_first and not buffered:
            self._ack(msg)
        if self._complete_after_ack:
            self._complete_after_ack = False
            self._send_complete()
        return result

    # ------------------------------------------------------------------ client handlers

    def _client_handlers(self) -> dict[int, Callable[[m.Message, bytes], _Result]]:
        return {
            PayloadType.HANDSHAKE_REQUEST: self._client_on_handshake_request,
            PayloadType.ENC_CHALLENGE_REQUEST: self._client_on_challenge_request,
            PayloadType.HANDSHAKE_COMPLETE: self._client_on_handshake_complete,
            PayloadType.OUTPUT: self._on_data,
            PayloadType.STDERR: self._on_data,
            PayloadType.EXIT_CODE: self._client_on_exit_code,
            PayloadType.FLAG: self._on_flag,
        }

    def _client_on_handshake_request(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.IDLE:
            raise HandshakeError("HandshakeRequest after the session started")
        request = HandshakeRequest.from_bytes(payload)
        self.agent_version = request.agent_version
        self._handshake_started = self._clock()
        self._handshake_deadline = self._handshake_started + self.handshake_timeout
        processed: list[ProcessedClientAction] = []
        kms: KMSEncryptionParameters | None = None
        for action in request.requested_client_actions:
            if action.action_type == ACTION_SESSION_TYPE:
                params = SessionTypeParameters.from_json(action.action_parameters)
                if params.session_type in {t.value for t in SessionType}:
                    self.session_type = params.session_type
                    self.properties = params.properties
                    processed.append(ProcessedClientAction(ACTION_SESSION_TYPE,
                                                           ActionStatus.SUCCESS))
                else:
                    processed.append(ProcessedClientAction(
                        ACTION_SESSION_TYPE, ActionStatus.FAILED, None,
                        f"Failed to process action SessionType: Unknown session type "
                        f"{params.session_type}"))
            elif action.action_type == ACTION_KMS_ENCRYPTION:
                kms = KMSEncryptionParameters.from_json(action.action_parameters)
            else:
                # Answer honestly: Unsupported (3). The agent ends the session (§7.3).
                processed.append(ProcessedClientAction(
                    action.action_type, ActionStatus.UNSUPPORTED, None,
                    f"Unsupported action {action.action_type}"))
        if any(a.action_status != ActionStatus.SUCCESS for a in processed):
            self._send_handshake_response(processed)
            failed = next(a for a in processed if a.action_status != ActionStatus.SUCCESS)
            self._fail(failed.error, handshake=True)
            return _Result.CONSUMED
        self._processed = processed
        if kms is None:
            self._send_handshake_response([])
            self.state = State.HANDSHAKE
            return _Result.CONSUMED
        self._kms_key_id = kms.kms_key_id
        context = {"aws:ssm:SessionId": self.session_id, "aws:ssm:TargetId": self.target_id}
        if kms.challenge and self.kms_challenge:
            context["aws:ssm:RandomChallenge"] = kms.challenge
            self._challenge_acked = True
        self.state = State.DATA_KEY
        self._events.append(ev.DataKeyRequested(kms.kms_key_id, context))
        return _Result.CONSUMED

    def _send_handshake_response(self, extra: list[ProcessedClientAction]) -> None:
        actions = [*self._processed, *extra]
        response = HandshakeResponse(self.client_version, tuple(actions))
        self._send_stream(PayloadType.HANDSHAKE_RESPONSE, response.to_bytes())

    def _client_on_challenge_request(self, msg: m.Message, payload: bytes) -> _Result:
        if self.cipher is None or self.state is not State.HANDSHAKE:
            raise HandshakeError("encryption challenge without an agreed data key")
        try:
            blob = base64.b64decode(EncChallenge.from_bytes(payload).challenge, validate=True)
        except ValueError as exc:
            raise HandshakeError("encryption challenge is not base64") from exc
        try:
            plain = self.cipher.decrypt(blob)
        except CipherError as exc:
            raise HandshakeError(f"cannot open the agent's encryption challenge ({exc}): the "
                                 "agent holds a different data key") from exc
        answer = base64.b64encode(self.cipher.encrypt(plain)).decode()
        self._send_stream(PayloadType.ENC_CHALLENGE_RESPONSE, EncChallenge(answer).to_bytes())
        return _Result.CONSUMED

    def _client_on_handshake_complete(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.HANDSHAKE:
            raise HandshakeError("HandshakeComplete out of turn")
        complete = HandshakeComplete.from_bytes(payload)
        self._customer_message = complete.customer_message
        self._open(handshake=True)
        return _Result.CONSUMED

    def _client_on_exit_code(self, msg: m.Message, payload: bytes) -> _Result:
        self._events.append(ev.ExitCode(decode_exit_code(payload)))
        return _Result.CONSUMED

    # ------------------------------------------------------------------ agent handlers

    def _agent_handlers(self) -> dict[int, Callable[[m.Message, bytes], _Result]]:
        return {
            PayloadType.HANDSHAKE_RESPONSE: self._agent_on_handshake_response,
            PayloadType.ENC_CHALLENGE_RESPONSE: self._agent_on_challenge_response,
            PayloadType.OUTPUT: self._on_data,
            PayloadType.SIZE: self._agent_on_size,
            PayloadType.FLAG: self._on_flag,
        }

    def _agent_on_handshake_response(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.HANDSHAKE or self._challenge_plain is not None:
            return _Result.CONSUMED  # a late duplicate-by-content: nothing to do
        response = HandshakeResponse.from_bytes(payload)
        self.client_version = response.client_version
        kms_result: Any = None
        for action in response.processed_client_actions:
            if action.action_status != ActionStatus.SUCCESS:
                raise HandshakeError(
                    f"{action.action_type} failed on client with status "
                    f"{action.action_status} error: {action.error}")
            if action.action_type == ACTION_KMS_ENCRYPTION:
                kms_result = action.action_result
        if self._kms_key_id is None:
            # The real agent's receive loop acks the response and hands it to the
            # handshake routine, which then sends HandshakeComplete: the ack goes
            # first. (The official plugin's mux port session crashes its listener if
            # anything arrives between HandshakeComplete and its streams being set.)
            self._complete_after_ack = True
            return _Result.CONSUMED
        if not isinstance(kms_result, dict) or not isinstance(
                kms_result.get("KMSCipherTextKey"), str):
            raise HandshakeError("KMSEncryption result missing from HandshakeResponse")
        acknowledged = kms_result.get("ChallengeAcknowledgement") is True
        if self.require_kms_challenge and not acknowledged:
            raise HandshakeError("client does not support required encryption context "
                                 "random challenge")
        try:
            blob = base64.b64decode(kms_result["KMSCipherTextKey"], validate=True)
        except ValueError as exc:
            raise HandshakeError("KMSCipherTextKey is not base64") from exc
        context = {"aws:ssm:SessionId": self.session_id, "aws:ssm:TargetId": self.target_id}
        if acknowledged and self._kms_challenge_offered:
            context["aws:ssm:RandomChallenge"] = self._kms_challenge_offered
        self.state = State.DATA_KEY
        self._events.append(ev.DataKeyToDecrypt(self._kms_key_id, blob, context))
        return _Result.CONSUMED

    def _agent_on_challenge_response(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.CHALLENGE or self.cipher is None:
            return _Result.CONSUMED
        try:
            blob = base64.b64decode(EncChallenge.from_bytes(payload).challenge, validate=True)
            answer = self.cipher.decrypt(blob)
        except (ValueError, CipherError, PayloadError):
            answer = b""
        if self._challenge_plain is None or not hmac.compare_digest(answer,
                                                                    self._challenge_plain):
            # §7.6: not acked; the 15 s timer fails the handshake.
            self._events.append(ev.FrameDropped("wrong encryption challenge answer"))
            return _Result.NOT_READY
        self._customer_message = KMS_CUSTOMER_MESSAGE
        self._complete_after_ack = True  # sent after the ack, as above
        return _Result.CONSUMED

    def _send_complete(self) -> None:
        elapsed_ns = int((self._clock() - self._handshake_started) * 1e9)
        message = self._customer_message
        self._send_stream(PayloadType.HANDSHAKE_COMPLETE,
                          HandshakeComplete(elapsed_ns, message).to_bytes())
        self._open(handshake=True)

    def _agent_on_size(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.OPEN:
            return _Result.CONSUMED  # §7.7: acked and discarded during the handshake
        size = Size.from_bytes(payload)
        self._events.append(ev.SizeChanged(size.cols, size.rows))
        return _Result.CONSUMED

    # ------------------------------------------------------------------ shared handlers

    def _on_data(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.OPEN:
            if self.role is Role.AGENT:
                return _Result.CONSUMED  # §7.7, §20.2: acked and dropped
            if self.state is State.IDLE and msg.payload_type == PayloadType.OUTPUT:
                # No handshake: the first Output means a shell session (§7.1).
                self.session_type = SessionType.STANDARD_STREAM.value
                self._open(handshake=False)
        if payload:
            self._data_received_bytes += len(payload)
            self._events.append(ev.StreamData(msg.payload_type, payload))
        return _Result.CONSUMED

    def _on_flag(self, msg: m.Message, payload: bytes) -> _Result:
        if self.state is not State.OPEN:
            return _Result.CONSUMED
        self._events.append(ev.FlagReceived(decode_flag(payload)))
        return _Result.CONSUMED

    # ------------------------------------------------------------------ internals

    def _open(self, *, handshake: bool) -> None:
        self.state = State.OPEN
        self._handshake_deadline = None
        self._events.append(ev.SessionStarted(
            session_type=self.session_type or SessionType.STANDARD_STREAM.value,
            properties=self.properties,
            agent_version=self.agent_version,
            client_version=self.client_version,
            customer_message=self._customer_message,
            encrypted=self.cipher is not None,
            handshake=handshake,
        ))
        self._flush_pending()

    def _fail(self, reason: str, *, handshake: bool = False) -> None:
        self.error = reason
        self.state = State.ERROR
        self._handshake_deadline = None
        self._pending.clear()
        if handshake:
            self._events.append(ev.HandshakeFailed(reason))

    def _check_usable(self) -> None:
        if self.state in (State.ERROR, State.CLOSED):
            raise ProtocolError(f"data channel is {self.state.value.lower()}")

    def _flush_pending(self) -> None:
        # Paused (§6.7): new data is not sequenced; what is in flight stays.
        if self.state is not State.OPEN or self.paused:
            return
        while self._pending and len(self._unacked) < self.window:
            payload_type, payload = self._pending.popleft()
            self._send_stream(payload_type, payload)

    def _send_stream(self, payload_type: int, payload: bytes) -> None:
        """Assign the next sequence number, encrypt if §8.5 says so, and send (§6.2)."""
        if self.cipher is not None and self.cipher.encrypts(payload_type):
            payload = self.cipher.encrypt(payload)
        seq = self._out_seq
        flags = m.FLAG_SYN if seq == 0 and self.role is Role.AGENT else 0
        frame = m.frame(self._stream_type, seq, flags, self._new_id(), payload_type, payload,
                        self._wall_clock_ms())
        self._out_seq += 1
        self._unacked[seq] = _Outgoing(frame, self._clock())
        if self.connected:
            self._outbox.append(frame)

    def _ack(self, msg: m.Message) -> None:
        if self.connected:
            self._outbox.append(msg)

    def _ack_frame(self, msg: m.Message) -> bytes:
        payload = Acknowledge(msg.message_type, msg.message_id_text,
                              msg.sequence_number).to_bytes()
        return m.frame(_ACKNOWLEDGE_TYPE, 0, m.FLAGS_ACK, self._new_id(), PayloadType.NONE,
                       payload, self._wall_clock_ms())

