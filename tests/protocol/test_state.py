"""Tests of the sans-I/O data-channel state machine (PROTOCOL.md §4.3, §5, §6, §7, §8, §12).

Every test drives :class:`DataChannel` with a fake clock, counter-based MessageIds
and fixed randomness, so frames, sequence numbers and timings are asserted exactly.
The property tests at the end wire a client and an agent through a lossy,
reordering, duplicating, corrupting in-memory link.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.cipher import Cipher
from ssmshell.protocol.errors import CipherError, MalformedMessage, ProtocolError
from ssmshell.protocol.payloads import (
    KMS_CUSTOMER_MESSAGE,
    Acknowledge,
    ActionStatus,
    ChannelClosed,
    EncChallenge,
    Flag,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    PayloadType,
    ProcessedClientAction,
    RequestedClientAction,
    SessionType,
    encode_flag,
)
from ssmshell.protocol.state import (
    AGENT_VERSION,
    CLIENT_VERSION,
    DataChannel,
    Role,
    State,
)

WALL = 1_700_000_000_000
SESSION = "sess-0123456789abcdef0"
TARGET = "i-0123456789abcdef0"
KMS_KEY_ID = "alias/ssm-sessions"
DATA_KEY = bytes(range(64))
BLOB = b"\x01\x02\x03kms-ciphertext-blob"
CONTEXT = {"aws:ssm:SessionId": SESSION, "aws:ssm:TargetId": TARGET}
OUT = m.OUTPUT_STREAM_DATA
IN = m.INPUT_STREAM_DATA


# --------------------------------------------------------------------------- helpers


class Clock:
    """A fake monotonic clock in seconds."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ids:
    """MessageIds 1, 2, 3, ... under a prefix, so every frame's id is predictable."""

    def __init__(self, prefix: int) -> None:
        self.prefix = prefix
        self.count = 0

    def __call__(self) -> uuid.UUID:
        self.count += 1
        return self.get(self.count)

    def get(self, n: int) -> uuid.UUID:
        return uuid.UUID(int=(self.prefix << 96) | n)


class Rand:
    """Deterministic "random" bytes: 0, 1, 2, ... continuing across calls."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        out = bytes((self.n + i) % 256 for i in range(size))
        self.n += size
        return out


@dataclass
class Peer:
    """A DataChannel plus the fakes that drive it."""

    dc: DataChannel
    clock: Clock
    ids: Ids
    rand: Rand

    def out(self) -> list[bytes]:
        return self.dc.data_to_send()

    def events(self) -> list[ev.Event]:
        return self.dc.next_events()

    def flush(self) -> None:
        self.dc.data_to_send()
        self.dc.next_events()


def make(role: Role, clock: Clock | None = None, **kw: Any) -> Peer:
    clock = clock or Clock()
    ids = Ids(0xC if role is Role.CLIENT else 0xA)
    rand = Rand()
    dc = DataChannel(role, session_id=SESSION, target_id=TARGET, clock=clock,
                     wall_clock_ms=lambda: WALL, random_bytes=rand, new_uuid=ids, **kw)
    return Peer(dc, clock, ids, rand)


def pid(seq: int) -> uuid.UUID:
    """MessageId of a frame the test sends as the peer."""
    return uuid.UUID(int=(0xE << 96) | (seq & 0xFFFF_FFFF))


def frame(kind: str, seq: int, payload: bytes, ptype: int = PayloadType.OUTPUT, *,
          mid: uuid.UUID | None = None, flags: int = 0) -> bytes:
    return m.Message(kind, seq, flags, m.wire_id(mid or pid(seq)), ptype, payload, WALL).encode()


def to(dc_or_peer: DataChannel | Peer, seq: int, payload: bytes,
       ptype: int = PayloadType.OUTPUT, **kw: Any) -> bytes:
    """A stream frame from the peer of ``dc``: output_stream_data to a client, input to an agent."""
    dc = dc_or_peer.dc if isinstance(dc_or_peer, Peer) else dc_or_peer
    return frame(OUT if dc.role is Role.CLIENT else IN, seq, payload, ptype, **kw)


def ack_frame(seq: int, acked_type: str = IN, mid: uuid.UUID | None = None) -> bytes:
    """The peer's ack of our message ``seq``."""
    payload = Acknowledge(acked_type, str(pid(seq)), seq).to_bytes()
    mid = mid or uuid.UUID(int=(0xAC << 96) | (seq & 0xFFFF_FFFF))
    return m.Message(m.ACKNOWLEDGE, 0, m.FLAGS_ACK, m.wire_id(mid), PayloadType.NONE, payload,
                     WALL).encode()


def expected_ack(ack_id: uuid.UUID, acked_type: str, acked_id: uuid.UUID, seq: int) -> bytes:
    """The exact bytes of the ack a DataChannel must send (§5.2, §4.2.6 flags 3)."""
    payload = Acknowledge(acked_type, str(acked_id), seq).to_bytes()
    return m.Message(m.ACKNOWLEDGE, 0, 3, m.wire_id(ack_id), 0, payload, WALL).encode()


def expected_data(mid: uuid.UUID, kind: str, seq: int, ptype: int, payload: bytes,
                  flags: int = 0) -> bytes:
    return m.Message(kind, seq, flags, m.wire_id(mid), ptype, payload, WALL).encode()


def service_frame(kind: str, payload: bytes = b"", **kw: Any) -> bytes:
    """channel_closed / start_publication / pause_publication as the service sends them."""
    service_id = m.wire_id(uuid.UUID(int=0x5E << 96))
    return m.Message(kind, 0, 0, service_id, 0, payload, WALL, **kw).encode()


def acked_seqs(frames: list[bytes]) -> list[int]:
    out = []
    for f in frames:
        msg = m.decode(f)
        assert msg.message_type == m.ACKNOWLEDGE, msg.message_type
        out.append(Acknowledge.from_bytes(msg.payload).acknowledged_message_sequence_number)
    return out


def summary(frames: list[bytes]) -> list[tuple[Any, ...]]:
    """("ack", acked seq) or (type, seq, payload type) per frame."""
    out: list[tuple[Any, ...]] = []
    for f in frames:
        msg = m.decode(f)
        if msg.message_type == m.ACKNOWLEDGE:
            ack = Acknowledge.from_bytes(msg.payload)
            out.append(("ack", ack.acknowledged_message_sequence_number))
        else:
            out.append((msg.message_type, msg.sequence_number, msg.payload_type))
    return out


def data_events(events: list[ev.Event]) -> list[tuple[int, bytes]]:
    return [(e.payload_type, e.data) for e in events if isinstance(e, ev.StreamData)]


def opened(role: Role, **kw: Any) -> Peer:
    """An OPEN channel with nothing queued: the client after the agent's first Output
    (no handshake, peer seq 0 consumed), the agent after a no-handshake shell start."""
    p = make(role, **kw)
    if role is Role.CLIENT:
        p.dc.receive_frame(to(p, 0, b"$ "))
    else:
        p.dc.start_handshake(SessionType.STANDARD_STREAM.value)
    assert p.dc.state is State.OPEN
    p.flush()
    return p


def pump(client: Peer, agent: Peer, *, client_key: bytes = DATA_KEY,
         agent_key: bytes = DATA_KEY, log: list[tuple[str, m.Message]] | None = None,
         rounds: int = 50) -> tuple[list[ev.Event], list[ev.Event]]:
    """Move frames both ways and answer KMS events until nothing moves."""
    c_events: list[ev.Event] = []
    a_events: list[ev.Event] = []
    for _ in range(rounds):
        moved = False
        for f in client.out():
            moved = True
            if log is not None:
                log.append(("c>a", m.decode(f)))
            agent.dc.receive_frame(f)
        for f in agent.out():
            moved = True
            if log is not None:
                log.append(("a>c", m.decode(f)))
            client.dc.receive_frame(f)
        for e in client.events():
            c_events.append(e)
            if isinstance(e, ev.DataKeyRequested):
                moved = True
                client.dc.provide_data_key(client_key, BLOB)
        for e in agent.events():
            a_events.append(e)
            if isinstance(e, ev.DataKeyToDecrypt):
                moved = True
                assert e.ciphertext_blob == BLOB
                agent.dc.provide_data_key(agent_key)
        if not moved:
            return c_events, a_events
    raise AssertionError("pump did not settle")


def log_summary(log: list[tuple[str, m.Message]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for direction, msg in log:
        if msg.message_type == m.ACKNOWLEDGE:
            ack = Acknowledge.from_bytes(msg.payload)
            out.append((direction, "ack", ack.acknowledged_message_sequence_number))
        else:
            out.append((direction, msg.sequence_number, PayloadType(msg.payload_type).name))
    return out


# =========================================================================== 1. delivery


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_in_order_delivery_acks_each_message_with_exact_frames(role: Role) -> None:
    p = opened(role)
    base = p.dc.expected_sequence_number
    kind = OUT if role is Role.CLIENT else IN
    id_before = p.ids.count
    for i, data in enumerate([b"one", b"two", b"three"]):
        p.dc.receive_frame(to(p, base + i, data))
    assert data_events(p.events()) == [(1, b"one"), (1, b"two"), (1, b"three")]
    assert p.out() == [
        expected_ack(p.ids.get(id_before + 1 + i), kind, pid(base + i), base + i)
        for i in range(3)
    ]
    assert p.dc.expected_sequence_number == base + 3
    assert p.dc.bytes_received == len(b"onetwothree") + (2 if role is Role.CLIENT else 0)


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_data_to_send_without_acks_keeps_them_for_the_next_call(role: Role) -> None:
    p = opened(role)
    base = p.dc.expected_sequence_number
    p.dc.receive_frame(to(p, base, b"typed"))
    p.dc.send_output(b"echo")
    first = summary(p.dc.data_to_send(acks=False))
    assert [row[2] for row in first] == [PayloadType.OUTPUT]  # only the data frame
    assert summary(p.dc.data_to_send(acks=False)) == []
    assert summary(p.dc.data_to_send()) == [("ack", base)]
    assert p.out() == []


def test_client_first_output_without_handshake_opens_shell_session() -> None:
    p = make(Role.CLIENT)
    p.dc.receive_frame(to(p, 0, b"sh-5.2$ ", flags=m.FLAG_SYN))
    events = p.events()
    assert events == [
        ev.SessionStarted(session_type="Standard_Stream", properties=None, agent_version="",
                          client_version=CLIENT_VERSION, customer_message="",
                          encrypted=False, handshake=False),
        ev.StreamData(1, b"sh-5.2$ "),
    ]
    assert p.out() == [expected_ack(p.ids.get(1), OUT, pid(0), 0)]


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_out_of_order_goes_through_reorder_buffer(role: Role) -> None:
    p = opened(role)
    b = p.dc.expected_sequence_number
    kind = OUT if role is Role.CLIENT else IN
    # b+3 and b+1 arrive early: acked at once (§6.4), not delivered.
    p.dc.receive_frame(to(p, b + 3, b"D"))
    p.dc.receive_frame(to(p, b + 1, b"B"))
    assert p.events() == []
    assert p.out() == [expected_ack(p.ids.get(p.ids.count - 1), kind, pid(b + 3), b + 3),
                       expected_ack(p.ids.get(p.ids.count), kind, pid(b + 1), b + 1)]
    assert p.dc.expected_sequence_number == b
    # b fills the first gap: b, b+1 delivered; only b is acked now.
    p.dc.receive_frame(to(p, b, b"A"))
    assert data_events(p.events()) == [(1, b"A"), (1, b"B")]
    assert acked_seqs(p.out()) == [b]
    assert p.dc.expected_sequence_number == b + 2
    # b+2 fills the second: b+2 and the buffered b+3.
    p.dc.receive_frame(to(p, b + 2, b"C"))
    assert data_events(p.events()) == [(1, b"C"), (1, b"D")]
    assert acked_seqs(p.out()) == [b + 2]
    assert p.dc.expected_sequence_number == b + 4


def test_reverse_order_burst_is_delivered_in_order() -> None:
    p = opened(Role.CLIENT)
    b = p.dc.expected_sequence_number
    for seq in reversed(range(b, b + 50)):
        p.dc.receive_frame(to(p, seq, b"%d," % seq))
    assert b"".join(d for _, d in data_events(p.events())) == b"".join(
        b"%d," % s for s in range(b, b + 50))
    assert acked_seqs(p.out()) == list(reversed(range(b, b + 50)))


def test_second_buffered_copy_overwrites_first_and_is_reacked() -> None:
    p = opened(Role.CLIENT)
    b = p.dc.expected_sequence_number
    p.dc.receive_frame(to(p, b + 1, b"first copy"))
    p.dc.receive_frame(to(p, b + 1, b"second copy"))
    assert acked_seqs(p.out()) == [b + 1, b + 1]
    p.dc.receive_frame(to(p, b, b"x"))
    assert data_events(p.events()) == [(1, b"x"), (1, b"second copy")]


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_duplicates_are_reacked_and_delivered_once(role: Role) -> None:
    p = opened(role)
    b = p.dc.expected_sequence_number
    kind = OUT if role is Role.CLIENT else IN
    p.dc.receive_frame(to(p, b, b"a"))
    p.dc.receive_frame(to(p, b + 1, b"b"))
    p.flush()
    before = p.ids.count
    # Late duplicates of already delivered messages (their ack was lost): re-ack each (§6.4).
    p.dc.receive_frame(to(p, b + 1, b"b"))
    p.dc.receive_frame(to(p, b, b"a"))
    p.dc.receive_frame(to(p, b, b"a"))
    assert p.events() == []
    assert p.out() == [
        expected_ack(p.ids.get(before + 1), kind, pid(b + 1), b + 1),
        expected_ack(p.ids.get(before + 2), kind, pid(b), b),
        expected_ack(p.ids.get(before + 3), kind, pid(b), b),
    ]
    assert p.dc.expected_sequence_number == b + 2
    # A duplicate of a buffered (not yet delivered) message: re-acked, still delivered once.
    p.dc.receive_frame(to(p, b + 3, b"d"))
    p.dc.receive_frame(to(p, b + 3, b"d"))
    assert acked_seqs(p.out()) == [b + 3, b + 3]
    p.dc.receive_frame(to(p, b + 2, b"c"))
    p.dc.receive_frame(to(p, b + 3, b"d"))
    assert data_events(p.events()) == [(1, b"c"), (1, b"d")]
    assert acked_seqs(p.out()) == [b + 2, b + 3]


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_acks_are_never_acked(role: Role) -> None:
    p = opened(role)
    p.dc.send_output(b"hello")
    p.out()
    acked_type = IN if role is Role.CLIENT else OUT
    p.dc.receive_frame(ack_frame(0, acked_type))  # known
    p.dc.receive_frame(ack_frame(0, acked_type))  # now unknown
    p.dc.receive_frame(ack_frame(99, acked_type))  # never existed
    assert p.out() == []
    assert p.events() == []
    assert p.dc.unacked == 0


def test_unknown_ack_numbers_are_ignored() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"a")
    p.dc.send_output(b"b")
    p.out()
    p.clock.now = 0.05
    for seq in (2, 7, -1, 2**62):
        p.dc.receive_frame(ack_frame(seq))
    assert p.dc.unacked == 2
    assert (p.dc.rtt, p.dc.rttvar, p.dc.rto) == (0.100, 0.0, 0.200)  # no RTT sample taken
    assert p.events() == [] and p.out() == []
    # A known ack for the second (not the head) removes exactly that entry (§6.3).
    p.dc.receive_frame(ack_frame(1))
    assert p.dc.unacked == 1
    p.clock.now = 0.5
    p.dc.tick()
    assert summary(p.out()) == [(IN, 0, 1)]


def test_malformed_ack_payload_is_dropped() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"a")
    p.out()
    bad = m.Message(m.ACKNOWLEDGE, 0, 3, m.random_id(), 0, b'{"nope":1}', WALL).encode()
    p.dc.receive_frame(bad)
    events = p.events()
    assert len(events) == 1 and isinstance(events[0], ev.FrameDropped)
    assert p.dc.unacked == 1 and p.out() == []


@pytest.mark.parametrize("kind", [m.AGENT_SESSION_STATE, "agent_task_complete", "bogus"])
def test_unknown_message_types_are_ignored_without_ack(kind: str) -> None:
    p = opened(Role.CLIENT)
    p.dc.receive_frame(frame(kind, 1, b"{}"))
    events = p.events()
    assert len(events) == 1 and isinstance(events[0], ev.FrameDropped)
    assert p.out() == []
    assert p.dc.expected_sequence_number == 1


def test_own_direction_stream_type_is_ignored() -> None:
    # A client never receives input_stream_data; treat it as an unknown type.
    p = opened(Role.CLIENT)
    p.dc.receive_frame(frame(IN, 1, b"x"))
    assert [type(e) for e in p.events()] == [ev.FrameDropped]
    assert p.out() == []


def test_unknown_payload_type_is_consumed_and_acked() -> None:
    p = opened(Role.CLIENT)
    p.dc.receive_frame(to(p, 1, b"param", ptype=PayloadType.PARAMETER))
    assert [type(e) for e in p.events()] == [ev.FrameDropped]
    assert acked_seqs(p.out()) == [1]
    assert p.dc.expected_sequence_number == 2


def test_reorder_buffer_full_drops_without_ack() -> None:
    p = opened(Role.CLIENT, incoming_capacity=2)
    p.dc.receive_frame(to(p, 3, b"3"))
    p.dc.receive_frame(to(p, 4, b"4"))
    p.dc.receive_frame(to(p, 5, b"5"))
    assert acked_seqs(p.out()) == [3, 4]
    events = p.events()
    assert [type(e) for e in events] == [ev.FrameDropped]
    # A new copy of an already buffered seq still fits (it overwrites).
    p.dc.receive_frame(to(p, 4, b"4"))
    assert acked_seqs(p.out()) == [4]
    p.dc.receive_frame(to(p, 1, b"1"))
    p.dc.receive_frame(to(p, 2, b"2"))
    assert data_events(p.events()) == [(1, b"1"), (1, b"2"), (1, b"3"), (1, b"4")]
    assert p.dc.expected_sequence_number == 5


def test_outgoing_sequence_numbers_and_flags() -> None:
    client = opened(Role.CLIENT)
    client.dc.send_size(80, 24)
    client.dc.send_output(b"ls\r")
    client.dc.send_flag(Flag.TERMINATE_SESSION)
    n = client.ids.count
    assert client.out() == [
        expected_data(client.ids.get(n - 2), IN, 0, 3, b'{"cols":80,"rows":24}'),
        expected_data(client.ids.get(n - 1), IN, 1, 1, b"ls\r"),
        expected_data(client.ids.get(n), IN, 2, 10, b"\x00\x00\x00\x02"),
    ]
    agent = opened(Role.AGENT)
    agent.dc.send_output(b"out")
    agent.dc.send_output(b"err", PayloadType.STDERR)
    agent.dc.send_exit_code(-1)
    n = agent.ids.count
    # The agent sets SYN on its seq 0 only (§4.2.6).
    assert agent.out() == [
        expected_data(agent.ids.get(n - 2), OUT, 0, 1, b"out", flags=1),
        expected_data(agent.ids.get(n - 1), OUT, 1, 11, b"err"),
        expected_data(agent.ids.get(n), OUT, 2, 12, b"EXIT_CODE: -1"),
    ]
    assert agent.dc.next_sequence_number == 3


def test_send_output_chunks_at_max_payload_and_skips_empty() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"")
    assert p.out() == []
    data = bytes(range(256)) * 10  # 2560 bytes
    p.dc.send_output(data)
    msgs = [m.decode(f) for f in p.out()]
    assert [len(x.payload) for x in msgs] == [1024, 1024, 512]
    assert [x.sequence_number for x in msgs] == [0, 1, 2]
    assert b"".join(x.payload for x in msgs) == data
    small = opened(Role.CLIENT, max_payload=3)
    small.dc.send_output(b"abcdefg")
    assert [m.decode(f).payload for f in small.out()] == [b"abc", b"def", b"g"]


def test_client_dispatches_stderr_exit_code_and_flags() -> None:
    p = opened(Role.CLIENT)
    p.dc.receive_frame(to(p, 1, b"oops", PayloadType.STDERR))
    p.dc.receive_frame(to(p, 2, b"EXIT_CODE: 42", PayloadType.EXIT_CODE))
    p.dc.receive_frame(to(p, 3, encode_flag(Flag.CONNECT_TO_PORT_ERROR), PayloadType.FLAG))
    assert p.events() == [ev.StreamData(11, b"oops"), ev.ExitCode(42),
                          ev.FlagReceived(Flag.CONNECT_TO_PORT_ERROR)]
    assert acked_seqs(p.out()) == [1, 2, 3]


def test_agent_dispatches_size_and_flags() -> None:
    p = opened(Role.AGENT)
    p.dc.receive_frame(to(p, 0, b'{"cols":120,"rows":40}', PayloadType.SIZE))
    p.dc.receive_frame(to(p, 1, encode_flag(Flag.DISCONNECT_TO_PORT), PayloadType.FLAG))
    assert p.events() == [ev.SizeChanged(120, 40), ev.FlagReceived(1)]
    assert acked_seqs(p.out()) == [0, 1]


def test_client_malformed_data_payload_is_fatal() -> None:
    p = opened(Role.CLIENT)
    with pytest.raises(ProtocolError):
        p.dc.receive_frame(to(p, 1, b"EXIT_CODE: x", PayloadType.EXIT_CODE))
    assert p.dc.state is State.ERROR
    assert p.out() == []  # not acked
    with pytest.raises(ProtocolError):
        p.dc.receive_frame(to(p, 1, b"EXIT_CODE: 1", PayloadType.EXIT_CODE))


def test_agent_malformed_size_is_dropped_without_ack() -> None:
    p = opened(Role.AGENT)
    p.dc.receive_frame(to(p, 0, b"not json", PayloadType.SIZE))
    assert [type(e) for e in p.events()] == [ev.FrameDropped]
    assert p.out() == []
    assert p.dc.expected_sequence_number == 0
    assert p.dc.state is State.OPEN


# =========================================================================== 2. retransmission


def test_initial_rto_only_head_resent_with_identical_bytes() -> None:
    p = opened(Role.CLIENT)
    assert (p.dc.rtt, p.dc.rttvar, p.dc.rto) == (0.100, 0.0, 0.200)
    p.dc.send_output(b"zero")
    p.dc.send_output(b"one")
    p.dc.send_output(b"two")
    f0, f1, f2 = p.out()
    assert p.dc.next_deadline() == pytest.approx(0.200)
    for now in (0.05, 0.1, 0.15, 0.2):  # the rule is now - lastSent > RTO, strictly (§6.5)
        p.clock.now = now
        p.dc.tick()
        assert p.out() == [], now
    p.clock.now = 0.2001
    p.dc.tick()
    assert p.out() == [f0]  # the head only, byte for byte (same id, date, digest)
    assert p.dc.unacked == 3
    # lastSent was updated: the next resend is RTO after the resend, not after the first send.
    assert p.dc.next_deadline() == pytest.approx(0.4001)
    p.clock.now = 0.4
    p.dc.tick()
    assert p.out() == []
    p.clock.now = 0.4002
    p.dc.tick()
    assert p.out() == [f0]
    # Head acked at 0.45: sample 0.0498 s from the last resend (agent's variant, no Karn).
    p.clock.now = 0.45
    p.dc.receive_frame(ack_frame(0))
    sample = 0.45 - 0.4002
    assert p.dc.rttvar == pytest.approx(0.25 * abs(0.1 - sample))
    assert p.dc.rtt == pytest.approx(0.875 * 0.1 + 0.125 * sample)
    # seq 1 is now the head and long overdue: resent on the next tick, alone.
    p.dc.tick()
    assert p.out() == [f1]
    p.dc.receive_frame(ack_frame(1))
    p.dc.tick()
    assert p.out() == [f2]
    p.dc.receive_frame(ack_frame(2))
    assert p.dc.unacked == 0
    assert p.dc.next_deadline() is None
    p.clock.now = 10.0
    p.dc.tick()
    assert p.out() == []


def test_rtt_worked_example_from_spec() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"a")
    p.dc.send_output(b"b")
    _, f1 = p.out()
    p.clock.now = 0.050
    p.dc.receive_frame(ack_frame(0))
    assert p.dc.rttvar == pytest.approx(0.0125, abs=1e-12)
    assert p.dc.rtt == pytest.approx(0.09375, abs=1e-12)
    assert p.dc.rto == pytest.approx(0.14375, abs=1e-12)
    # seq 1 (sent at 0) is resent once 143.75 ms have passed, not at 200 ms.
    assert p.dc.next_deadline() == pytest.approx(0.14375)
    p.clock.now = 0.1437
    p.dc.tick()
    assert p.out() == []
    p.clock.now = 0.1438
    p.dc.tick()
    assert p.out() == [f1]


def test_rttvar_uses_the_old_rtt() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"a")
    p.out()
    p.clock.now = 0.050
    p.dc.receive_frame(ack_frame(0))
    p.dc.send_output(b"b")  # sent at 0.05
    p.out()
    p.clock.now = 0.350  # sample 0.3 s
    p.dc.receive_frame(ack_frame(1))
    # By hand: RTTVAR = .75*.0125 + .25*|.09375-.3|; RTT = .875*.09375 + .125*.3.
    assert p.dc.rttvar == pytest.approx(0.0609375, abs=1e-12)
    assert p.dc.rtt == pytest.approx(0.11953125, abs=1e-12)
    assert p.dc.rto == pytest.approx(0.11953125 + 4 * 0.0609375, abs=1e-12)


def test_rto_is_capped_at_one_second() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"slow")
    p.out()
    p.clock.now = 5.0  # no tick in between: one 5 s sample
    p.dc.receive_frame(ack_frame(0))
    assert p.dc.rttvar == pytest.approx(1.225)
    assert p.dc.rtt == pytest.approx(0.7125)
    assert p.dc.rto == 1.0
    p.dc.send_output(b"next")
    (f,) = p.out()
    p.clock.now = 6.0
    p.dc.tick()
    assert p.out() == []
    p.clock.now = 6.001
    p.dc.tick()
    assert p.out() == [f]


def test_rto_floor_is_rtt_plus_clock_granularity() -> None:
    p = opened(Role.CLIENT)
    for i in range(40):  # instant acks: RTT and RTTVAR decay towards 0
        p.dc.send_output(b"x")
        p.out()
        p.dc.receive_frame(ack_frame(i))
    assert 4 * p.dc.rttvar < 0.010
    assert p.dc.rto == pytest.approx(p.dc.rtt + 0.010, abs=1e-12)
    assert p.dc.rto < 0.012


def test_resend_gives_up_after_max_resends() -> None:
    p = opened(Role.CLIENT, max_resends=2)
    p.dc.send_output(b"lost")
    (f,) = p.out()
    p.clock.now = 0.3
    p.dc.tick()
    p.clock.now = 0.6
    p.dc.tick()
    assert p.out() == [f, f]
    p.clock.now = 0.9
    p.dc.tick()
    assert p.out() == []
    assert p.dc.state is State.ERROR
    assert p.dc.error == "gave up after 2 resends of message 0"
    with pytest.raises(ProtocolError):
        p.dc.send_output(b"more")
    with pytest.raises(ProtocolError):
        p.dc.receive_frame(to(p, 1, b"x"))


def test_no_give_up_when_max_resends_is_none() -> None:
    p = opened(Role.AGENT, max_resends=None)
    p.dc.send_output(b"x")
    (f,) = p.out()
    for i in range(1, 5001):
        p.clock.now = i * 0.201
        p.dc.tick()
    assert p.out() == [f] * 5000
    assert p.dc.state is State.OPEN


# =========================================================================== 3. digest


def corrupt_payload(frame_bytes: bytes, index: int = 0) -> bytes:
    b = bytearray(frame_bytes)
    b[120 + index] ^= 0x01
    return bytes(b)


def test_client_drops_bad_digest_without_ack() -> None:
    p = opened(Role.CLIENT)
    good = to(p, 1, b"payload")
    p.dc.receive_frame(corrupt_payload(good))
    events = p.events()
    assert len(events) == 1 and isinstance(events[0], ev.FrameDropped)
    assert "digest" in events[0].reason
    assert p.out() == []
    assert p.dc.expected_sequence_number == 1
    # Out-of-order corrupted frames are not buffered (nor acked) either.
    p.dc.receive_frame(corrupt_payload(to(p, 2, b"later"), 3))
    assert p.out() == []
    p.dc.receive_frame(good)
    assert data_events(p.events()) == [(1, b"payload")]
    assert acked_seqs(p.out()) == [1]


def test_bad_digest_on_ack_is_dropped() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"x")
    p.out()
    p.dc.receive_frame(corrupt_payload(ack_frame(0), 5))
    assert [type(e) for e in p.events()] == [ev.FrameDropped]
    assert p.dc.unacked == 1


def test_agent_does_not_verify_digests_by_default_but_can() -> None:
    lax = opened(Role.AGENT)
    bad = bytearray(to(lax, 0, b"abc"))
    bad[80:112] = b"\x00" * 32  # a wrong digest, payload intact (the JS client's bug, §4.2.8)
    lax.dc.receive_frame(bytes(bad))
    assert data_events(lax.events()) == [(1, b"abc")]
    assert acked_seqs(lax.out()) == [0]
    strict = opened(Role.AGENT, verify_digest=True)
    strict.dc.receive_frame(bytes(bad))
    assert [type(e) for e in strict.events()] == [ev.FrameDropped]
    assert strict.out() == []


def test_empty_payload_digest_is_not_checked() -> None:
    p = make(Role.CLIENT)
    raw = bytearray(to(p, 0, b""))
    raw[80:112] = b"\xff" * 32
    p.dc.receive_frame(bytes(raw))  # §4.3: digest checked only if PayloadLength != 0
    assert acked_seqs(p.out()) == [0]


@pytest.mark.parametrize("mutation", ["short", "zero_date", "length", "header_length"])
def test_invalid_frames_dropped_without_ack(mutation: str) -> None:
    p = opened(Role.CLIENT)
    raw = bytearray(to(p, 1, b"data"))
    if mutation == "short":
        raw = raw[:100]
    elif mutation == "zero_date":
        raw[40:48] = b"\x00" * 8
    elif mutation == "length":
        raw[116:120] = (99).to_bytes(4, "big")
    else:
        raw[0:4] = (300).to_bytes(4, "big")
    p.dc.receive_frame(bytes(raw))
    assert [type(e) for e in p.events()] == [ev.FrameDropped]
    assert p.out() == []
    assert p.dc.expected_sequence_number == 1


# =========================================================================== 4. handshake


def handshake_pair(session_type: str, *, kms: bool, properties: dict[str, Any] | None = None,
                   client_kw: dict[str, Any] | None = None,
                   agent_kw: dict[str, Any] | None = None) -> tuple[Peer, Peer]:
    clock = Clock()
    client = make(Role.CLIENT, clock, **(client_kw or {}))
    agent = make(Role.AGENT, clock, **(agent_kw or {}))
    agent.dc.start_handshake(session_type, properties, KMS_KEY_ID if kms else None)
    return client, agent


@pytest.mark.parametrize("session_type", ["Standard_Stream", "InteractiveCommands"])
def test_shell_types_without_kms_skip_the_handshake(session_type: str) -> None:
    agent = make(Role.AGENT)
    agent.dc.start_handshake(session_type, {"ignored": "yes"})
    assert agent.out() == []
    assert agent.events() == [ev.SessionStarted(
        session_type=session_type, properties=None, agent_version=AGENT_VERSION,
        client_version="", customer_message="", encrypted=False, handshake=False)]
    assert agent.dc.state is State.OPEN
    agent.dc.send_output(b"prompt$ ")
    assert summary(agent.out()) == [(OUT, 0, 1)]


def test_handshake_without_kms_exact_exchange_and_no_early_user_data() -> None:
    props = {"localPortNumber": "0", "portNumber": "80", "type": "LocalPortForwarding"}
    client, agent = handshake_pair("Port", kms=False, properties=props)
    # User data queued on both sides before the handshake is done: nothing may leave.
    client.dc.send_size(80, 24)
    client.dc.send_output(b"early")
    agent.dc.send_output(b"agent early")
    assert not client.dc.writable and client.dc.pending == 2
    (request,) = agent.out()
    req = m.decode(request)
    assert (req.message_type, req.sequence_number, req.flags, req.payload_type) == (
        OUT, 0, 1, PayloadType.HANDSHAKE_REQUEST)
    assert req.message_id == agent.ids.get(1)
    assert req.payload == (
        b'{"AgentVersion":"3.3.1142.0","RequestedClientActions":[{"ActionType":"SessionType",'
        b'"ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"0",'
        b'"portNumber":"80","type":"LocalPortForwarding"}}}]}')
    assert agent.dc.state is State.HANDSHAKE

    client.clock.now = 0.25
    client.dc.receive_frame(request)
    # Ack of the HandshakeRequest first, then HandshakeResponse as the client's seq 0.
    # (An ack's MessageId is drawn when the ack is made, after the response's.)
    ack, response = client.out()
    assert ack == expected_ack(client.ids.get(2), OUT, agent.ids.get(1), 0)
    assert response == expected_data(
        client.ids.get(1), IN, 0, PayloadType.HANDSHAKE_RESPONSE,
        b'{"ClientVersion":"1.2.677.0","ProcessedClientActions":[{"ActionType":"SessionType",'
        b'"ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}')
    assert client.events() == []
    assert client.dc.state is State.HANDSHAKE

    agent.dc.receive_frame(ack)
    agent.dc.receive_frame(response)
    agent_ack, complete, agent_data = agent.out()
    # The real agent's receive loop acks the response before its handshake routine
    # sends HandshakeComplete (which opens the session and sends the queued output).
    # The official plugin's mux port session crashes its listener on any message
    # between HandshakeComplete and its streams being set, so the order matters.
    assert agent_ack == expected_ack(agent.ids.get(4), IN, client.ids.get(1), 0)
    assert complete == expected_data(agent.ids.get(2), OUT, 1, PayloadType.HANDSHAKE_COMPLETE,
                                     b'{"HandshakeTimeToComplete":250000000,"CustomerMessage":""}')
    assert agent_data == expected_data(agent.ids.get(3), OUT, 2, 1, b"agent early")
    assert agent.events() == [ev.SessionStarted(
        session_type="Port", properties=props, agent_version=AGENT_VERSION,
        client_version=CLIENT_VERSION, customer_message="", encrypted=False, handshake=True)]

    client.dc.receive_frame(agent_ack)
    client.dc.receive_frame(complete)
    assert client.events() == [ev.SessionStarted(
        session_type="Port", properties=props, agent_version=AGENT_VERSION,
        client_version=CLIENT_VERSION, customer_message="", encrypted=False, handshake=True)]
    # Ack of HandshakeComplete, then the queued Size (seq 1) and Output (seq 2), §7.7.
    out = client.out()
    assert summary(out) == [("ack", 1), (IN, 1, 3), (IN, 2, 1)]
    assert [m.decode(f).payload for f in out[1:]] == [b'{"cols":80,"rows":24}', b"early"]
    assert client.dc.writable
    client.dc.receive_frame(agent_data)
    assert data_events(client.events()) == [(1, b"agent early")]
    for f in out:
        agent.dc.receive_frame(f)
    assert agent.events() == [ev.SizeChanged(80, 24), ev.StreamData(1, b"early")]
    assert acked_seqs(agent.out()) == [1, 2]


def test_handshake_with_kms_exact_exchange() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.send_size(100, 30)
    client.dc.send_output(b"whoami\r")
    client.dc.send_flag(Flag.TERMINATE_SESSION)
    agent.dc.send_output(b"secret output")
    agent.dc.send_output(b"secret err", PayloadType.STDERR)
    agent.dc.send_exit_code(7)
    log: list[tuple[str, m.Message]] = []
    c_events, a_events = pump(client, agent, log=log)
    assert log_summary(log) == [
        ("a>c", 0, "HANDSHAKE_REQUEST"),
        ("c>a", "ack", 0),  # acked before the KMS call (§7.3)
        ("c>a", 0, "HANDSHAKE_RESPONSE"),
        ("a>c", "ack", 0),  # agent acks after kms:Decrypt was asked for
        ("a>c", 1, "ENC_CHALLENGE_REQUEST"),
        ("c>a", "ack", 1),
        ("c>a", 1, "ENC_CHALLENGE_RESPONSE"),
        ("a>c", "ack", 1),  # before HandshakeComplete, as the real agent's loops do
        ("a>c", 2, "HANDSHAKE_COMPLETE"),
        ("a>c", 3, "OUTPUT"),  # queued output leaves as soon as the session opens
        ("a>c", 4, "STDERR"),
        ("a>c", 5, "EXIT_CODE"),
        ("c>a", "ack", 2),
        ("c>a", 2, "SIZE"),
        ("c>a", 3, "OUTPUT"),
        ("c>a", 4, "FLAG"),
        ("c>a", "ack", 3),
        ("c>a", "ack", 4),
        ("c>a", "ack", 5),
        ("a>c", "ack", 2),
        ("a>c", "ack", 3),
        ("a>c", "ack", 4),
    ]
    msgs = [msg for _, msg in log]
    challenge = base64.b64encode(bytes(range(16))).decode()
    assert json.loads(msgs[0].payload) == {
        "AgentVersion": AGENT_VERSION,
        "RequestedClientActions": [
            {"ActionType": "SessionType",
             "ActionParameters": {"SessionType": "Standard_Stream", "Properties": None}},
            {"ActionType": "KMSEncryption",
             "ActionParameters": {"KMSKeyId": KMS_KEY_ID, "Challenge": challenge}},
        ]}
    assert json.loads(msgs[2].payload) == {
        "ClientVersion": CLIENT_VERSION,
        "ProcessedClientActions": [
            {"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": None, "Error": ""},
            {"ActionType": "KMSEncryption", "ActionStatus": 1,
             "ActionResult": {"KMSCipherTextKey": base64.b64encode(BLOB).decode(),
                              "KMSCipherTextHash": None, "ChallengeAcknowledgement": True},
             "Error": ""}],
        "Errors": None}
    context = {**CONTEXT, "aws:ssm:RandomChallenge": challenge}
    assert [e for e in c_events if isinstance(e, ev.DataKeyRequested)] == [
        ev.DataKeyRequested(KMS_KEY_ID, context, 64)]
    assert [e for e in a_events if isinstance(e, ev.DataKeyToDecrypt)] == [
        ev.DataKeyToDecrypt(KMS_KEY_ID, BLOB, context)]
    # The challenge: 64 agent-random bytes, encrypted with key bytes 0..31, answered
    # re-encrypted with bytes 32..63 (§8.5).
    as_client, as_agent = Cipher(DATA_KEY, "client"), Cipher(DATA_KEY, "agent")
    request_blob = base64.b64decode(EncChallenge.from_bytes(msgs[4].payload).challenge)
    response_blob = base64.b64decode(EncChallenge.from_bytes(msgs[6].payload).challenge)
    assert len(request_blob) == 12 + 64 + 16
    assert as_client.decrypt(request_blob) == bytes(range(16, 80))
    assert as_agent.decrypt(response_blob) == bytes(range(16, 80))
    assert HandshakeComplete.from_bytes(msgs[8].payload).customer_message == KMS_CUSTOMER_MESSAGE
    # Agent→client Output, StdErr and ExitCode are encrypted; client→agent only Output (§8.5).
    assert as_client.decrypt(msgs[9].payload) == b"secret output"
    assert as_client.decrypt(msgs[10].payload) == b"secret err"
    assert as_client.decrypt(msgs[11].payload) == b"EXIT_CODE: 7"
    assert len(msgs[9].payload) == len(b"secret output") + 28
    assert msgs[13].payload == b'{"cols":100,"rows":30}'
    assert as_agent.decrypt(msgs[14].payload) == b"whoami\r"
    assert msgs[15].payload == b"\x00\x00\x00\x02"
    started = ev.SessionStarted(
        session_type="Standard_Stream", properties=None, agent_version=AGENT_VERSION,
        client_version=CLIENT_VERSION, customer_message=KMS_CUSTOMER_MESSAGE,
        encrypted=True, handshake=True)
    assert c_events == [ev.DataKeyRequested(KMS_KEY_ID, context, 64), started,
                        ev.StreamData(1, b"secret output"), ev.StreamData(11, b"secret err"),
                        ev.ExitCode(7)]
    assert a_events == [ev.DataKeyToDecrypt(KMS_KEY_ID, BLOB, context), started,
                        ev.SizeChanged(100, 30), ev.StreamData(1, b"whoami\r"),
                        ev.FlagReceived(2)]
    assert client.dc.unacked == agent.dc.unacked == 0


def test_client_acks_handshake_request_before_asking_for_the_data_key() -> None:
    client, agent = handshake_pair("NonInteractiveCommands", kms=True)
    (request,) = agent.out()
    client.dc.receive_frame(request)
    assert summary(client.out()) == [("ack", 0)]
    assert client.dc.state is State.DATA_KEY
    assert [type(e) for e in client.events()] == [ev.DataKeyRequested]
    # A retransmitted request during the KMS call is re-acked only.
    client.dc.receive_frame(request)
    assert summary(client.out()) == [("ack", 0)]
    assert client.events() == []
    client.dc.provide_data_key(DATA_KEY, BLOB)
    assert summary(client.out()) == [(IN, 0, PayloadType.HANDSHAKE_RESPONSE)]
    with pytest.raises(ProtocolError):
        client.dc.provide_data_key(DATA_KEY, BLOB)  # asked once, answered once


def test_kms_challenge_opt_out_and_agent_requirement() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True,
                                   client_kw={"kms_challenge": False})
    c_events, a_events = pump(client, agent)
    assert ev.DataKeyRequested(KMS_KEY_ID, CONTEXT, 64) in c_events
    assert ev.DataKeyToDecrypt(KMS_KEY_ID, BLOB, CONTEXT) in a_events
    assert client.dc.state is agent.dc.state is State.OPEN

    client, agent = handshake_pair("Standard_Stream", kms=True,
                                   client_kw={"kms_challenge": False},
                                   agent_kw={"require_kms_challenge": True})
    client.dc.receive_frame(agent.out()[0])
    client.dc.provide_data_key(DATA_KEY, BLOB)
    _, response = client.out()
    with pytest.raises(ProtocolError):
        agent.dc.receive_frame(response)
    assert agent.events() == [ev.HandshakeFailed(
        "client does not support required encryption context random challenge")]
    assert agent.out() == []


def test_port_sessions_never_encrypt() -> None:
    _client, agent = handshake_pair("Port", kms=True, properties={"portNumber": "22"})
    request = HandshakeRequest.from_bytes(m.decode(agent.out()[0]).payload)
    assert [a.action_type for a in request.requested_client_actions] == ["SessionType"]


def test_handshake_messages_delivered_out_of_order() -> None:
    client, agent = handshake_pair("NonInteractiveCommands", kms=False)
    (request,) = agent.out()
    complete = to(client, 1, HandshakeComplete(5, "hi").to_bytes(), PayloadType.HANDSHAKE_COMPLETE)
    client.dc.receive_frame(complete)  # arrives first: buffered and acked
    assert summary(client.out()) == [("ack", 1)]
    assert client.dc.state is State.IDLE
    client.dc.receive_frame(request)
    assert summary(client.out()) == [("ack", 0), (IN, 0, PayloadType.HANDSHAKE_RESPONSE)]
    (started,) = client.events()
    assert isinstance(started, ev.SessionStarted) and started.customer_message == "hi"
    assert client.dc.state is State.OPEN


def test_unknown_handshake_action_is_answered_unsupported_and_fails() -> None:
    client = make(Role.CLIENT)
    request = HandshakeRequest(AGENT_VERSION, (
        RequestedClientAction("SessionType", {"SessionType": "Standard_Stream",
                                              "Properties": None}),
        RequestedClientAction("FancyAction", {"x": 1}),
    ))
    client.dc.receive_frame(to(client, 0, request.to_bytes(), PayloadType.HANDSHAKE_REQUEST))
    ack, response = client.out()
    assert acked_seqs([ack]) == [0]
    assert m.decode(response).payload == (
        b'{"ClientVersion":"1.2.677.0","ProcessedClientActions":['
        b'{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""},'
        b'{"ActionType":"FancyAction","ActionStatus":3,"ActionResult":null,'
        b'"Error":"Unsupported action FancyAction"}],"Errors":null}')
    assert client.events() == [ev.HandshakeFailed("Unsupported action FancyAction")]
    assert client.dc.state is State.ERROR
    # The agent fails the session on any non-success status (§7.3), without acking.
    agent = make(Role.AGENT)
    agent.dc.start_handshake("NonInteractiveCommands")
    agent.flush()
    with pytest.raises(ProtocolError):
        agent.dc.receive_frame(response)
    assert agent.events() == [ev.HandshakeFailed(
        "FancyAction failed on client with status 3 error: Unsupported action FancyAction")]
    assert agent.out() == []
    assert agent.dc.state is State.ERROR


def test_unknown_session_type_is_answered_failed() -> None:
    client = make(Role.CLIENT)
    request = HandshakeRequest.build(AGENT_VERSION, "Teleport")
    client.dc.receive_frame(to(client, 0, request.to_bytes(), PayloadType.HANDSHAKE_REQUEST))
    _, response = client.out()
    reply = HandshakeResponse.from_bytes(m.decode(response).payload)
    text = "Failed to process action SessionType: Unknown session type Teleport"
    assert reply.processed_client_actions == (
        ProcessedClientAction("SessionType", ActionStatus.FAILED, None, text),)
    assert client.events() == [ev.HandshakeFailed(text)]


def test_wrong_challenge_answer_is_not_acked_and_times_out() -> None:
    # Same decrypt half, different encrypt half: the client answers with the wrong key.
    client_key = DATA_KEY[:32] + bytes(32)
    client, agent = handshake_pair("Standard_Stream", kms=True)
    clock = client.clock
    clock.now = 1.0
    _, a_events = pump(client, agent, client_key=client_key)
    assert agent.dc.state is State.CHALLENGE
    assert a_events[-1] == ev.FrameDropped("wrong encryption challenge answer")
    # The client's EncChallengeResponse (its seq 1) is unacked and retransmitted.
    assert client.dc.unacked == 1
    clock.now = 1.2001
    client.dc.tick()
    (resend,) = client.out()
    assert m.decode(resend).sequence_number == 1
    agent.dc.receive_frame(resend)
    assert agent.out() == []
    assert agent.events() == [ev.FrameDropped("wrong encryption challenge answer")]
    # The 15 s challenge timer runs from provide_data_key (at t=1.0).
    clock.now = 15.999
    agent.dc.tick()
    assert agent.events() == [] and agent.dc.state is State.CHALLENGE
    agent.out()
    clock.now = 16.0
    agent.dc.tick()
    assert agent.events() == [ev.HandshakeFailed("Timed out waiting for encryption challenge.")]
    assert agent.dc.state is State.ERROR
    assert agent.out() == []


def test_well_encrypted_but_wrong_challenge_plaintext_is_rejected() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.dc.provide_data_key(DATA_KEY, BLOB)
    for f in client.out():
        agent.dc.receive_frame(f)
    agent.events()
    agent.dc.provide_data_key(DATA_KEY)
    agent.out()
    forged = base64.b64encode(Cipher(DATA_KEY, "client").encrypt(b"\x00" * 64)).decode()
    agent.dc.receive_frame(to(agent, 1, EncChallenge(forged).to_bytes(),
                              PayloadType.ENC_CHALLENGE_RESPONSE))
    assert agent.events() == [ev.FrameDropped("wrong encryption challenge answer")]
    assert agent.out() == []
    assert agent.dc.state is State.CHALLENGE


def test_client_that_cannot_decrypt_the_challenge_fails() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    with pytest.raises(ProtocolError):
        pump(client, agent, client_key=bytes(64))
    assert client.dc.state is State.ERROR
    failed = [e for e in client.events() if isinstance(e, ev.HandshakeFailed)]
    assert len(failed) == 1


def test_client_kms_failure_is_reported_as_failed_action() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.out()
    client.events()
    client.dc.reject_data_key("AccessDeniedException")
    (response,) = client.out()
    reply = HandshakeResponse.from_bytes(m.decode(response).payload)
    assert reply.processed_client_actions == (
        ProcessedClientAction("SessionType", 1, None, ""),
        ProcessedClientAction("KMSEncryption", 2, None, "AccessDeniedException"))
    assert client.events() == [ev.HandshakeFailed("KMS data key: AccessDeniedException")]
    assert client.dc.state is State.ERROR
    with pytest.raises(ProtocolError):
        agent.dc.receive_frame(response)
    assert agent.events() == [ev.HandshakeFailed(
        "KMSEncryption failed on client with status 2 error: AccessDeniedException")]


def test_agent_kms_decrypt_failure_fails_the_handshake() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.dc.provide_data_key(DATA_KEY, BLOB)
    for f in client.out():
        agent.dc.receive_frame(f)
    assert [type(e) for e in agent.events()] == [ev.DataKeyToDecrypt]
    assert acked_seqs(agent.out()) == [0]
    agent.dc.reject_data_key("InvalidCiphertextException")
    assert agent.events() == [ev.HandshakeFailed(
        "Fetching data key failed: InvalidCiphertextException")]
    assert agent.dc.state is State.ERROR and agent.out() == []
    with pytest.raises(ProtocolError):
        agent.dc.send_output(b"x")


def test_agent_handshake_timeout() -> None:
    _client, agent = handshake_pair("Port", kms=False)
    agent.out()
    agent.clock.now = 14.999
    agent.dc.tick()
    assert agent.events() == []
    agent.clock.now = 15.0
    agent.dc.tick()
    assert agent.events() == [ev.HandshakeFailed(
        "Handshake timed out. Please ensure that you have the latest version of the "
        "session manager plugin.")]


def test_client_handshake_timeout() -> None:
    client, agent = handshake_pair("Port", kms=False)
    client.dc.receive_frame(agent.out()[0])
    client.flush()
    client.clock.now = 59.0
    client.dc.tick()
    assert client.events() == []
    client.clock.now = 60.0
    client.dc.tick()
    assert client.events() == [ev.HandshakeFailed("timed out waiting for the agent's handshake")]
    assert client.dc.state is State.ERROR


def test_agent_acks_and_discards_data_during_handshake() -> None:
    agent = make(Role.AGENT)
    agent.dc.start_handshake("NonInteractiveCommands")
    agent.flush()
    agent.dc.receive_frame(to(agent, 0, b"too early"))
    agent.dc.receive_frame(to(agent, 1, b'{"cols":1,"rows":1}', PayloadType.SIZE))
    assert agent.events() == []
    assert acked_seqs(agent.out()) == [0, 1]
    response = HandshakeResponse(CLIENT_VERSION, (
        ProcessedClientAction("SessionType", 1),)).to_bytes()
    agent.dc.receive_frame(to(agent, 2, response, PayloadType.HANDSHAKE_RESPONSE))
    assert summary(agent.out()) == [("ack", 2), (OUT, 1, PayloadType.HANDSHAKE_COMPLETE)]
    assert [type(e) for e in agent.events()] == [ev.SessionStarted]


def test_role_misuse_raises() -> None:
    client = make(Role.CLIENT)
    with pytest.raises(ProtocolError):
        client.dc.start_handshake("Standard_Stream")
    with pytest.raises(ProtocolError):
        client.dc.provide_data_key(DATA_KEY, BLOB)
    with pytest.raises(ProtocolError):
        client.dc.reject_data_key("x")
    client2, agent = handshake_pair("Standard_Stream", kms=True)
    client2.dc.receive_frame(agent.out()[0])
    with pytest.raises(CipherError):
        client2.dc.provide_data_key(b"short", BLOB)


def test_client_handshake_complete_out_of_turn_is_fatal() -> None:
    client = make(Role.CLIENT)
    with pytest.raises(ProtocolError):
        client.dc.receive_frame(to(client, 0, HandshakeComplete(1, "").to_bytes(),
                                   PayloadType.HANDSHAKE_COMPLETE))
    assert [type(e) for e in client.events()] == [ev.HandshakeFailed]


# =========================================================================== 5. closing, window,
# accepting gate, publication


def test_channel_closed_event_and_afterwards() -> None:
    p = opened(Role.CLIENT)
    p.dc.send_output(b"pending")
    p.out()
    closed = ChannelClosed(str(uuid.uuid4()), "1700000000000", TARGET, SESSION,
                           "remote command exited").to_bytes()
    p.dc.receive_frame(service_frame(m.CHANNEL_CLOSED, closed))
    assert p.events() == [ev.ChannelClosed(SESSION, "remote command exited")]
    assert p.out() == []  # never acked
    assert p.dc.state is State.CLOSED
    with pytest.raises(ProtocolError):
        p.dc.send_output(b"x")
    p.dc.receive_frame(to(p, 1, b"late"))
    assert p.events() == [] and p.out() == []
    p.clock.now = 5.0
    p.dc.tick()
    assert p.out() == []


def test_channel_closed_as_the_service_sends_it() -> None:
    # HeaderLength 112, NUL padding, garbage JSON: still a ChannelClosed (§4.2.1, §5.3).
    p = opened(Role.CLIENT)
    short = m.Message(m.CHANNEL_CLOSED, 0, 0, m.random_id(), 0, b"not json", WALL,
                      header_length=112).encode(nul_padded=True)
    p.dc.receive_frame(short)
    assert p.events() == [ev.ChannelClosed(SESSION, "")]
    assert p.out() == []


def test_window_full_queues_without_evicting() -> None:
    p = opened(Role.CLIENT, window=2)
    assert p.dc.writable
    p.dc.send_output(b"0")
    assert p.dc.writable
    p.dc.send_output(b"1")
    assert not p.dc.writable  # window full
    for i in range(2, 6):
        p.dc.send_output(b"%d" % i)
    f0, f1 = p.out()
    assert summary([f0, f1]) == [(IN, 0, 1), (IN, 1, 1)]
    assert (p.dc.unacked, p.dc.pending, p.dc.next_sequence_number) == (2, 4, 2)
    # Nothing was evicted: the head is still retransmitted as it was.
    p.clock.now = 0.3
    p.dc.tick()
    assert p.out() == [f0]
    # An ack for seq 1 opens one slot: seq 2 goes out.
    p.dc.receive_frame(ack_frame(1))
    assert [m.decode(f).payload for f in p.out()] == [b"2"]
    assert (p.dc.unacked, p.dc.pending) == (2, 3)
    p.dc.receive_frame(ack_frame(0))
    p.dc.receive_frame(ack_frame(2))
    assert [(x.sequence_number, x.payload) for x in map(m.decode, p.out())] == [
        (3, b"3"), (4, b"4")]
    assert not p.dc.writable
    p.dc.receive_frame(ack_frame(3))
    assert [m.decode(f).payload for f in p.out()] == [b"5"]
    assert (p.dc.unacked, p.dc.pending) == (2, 0)
    assert not p.dc.writable  # seq 4 and 5 in flight, window 2
    p.dc.receive_frame(ack_frame(4))
    assert p.dc.writable
    p.dc.receive_frame(ack_frame(5))
    assert p.dc.unacked == 0 and p.dc.writable


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_not_accepting_leaves_in_order_data_unacked_until_reopened(role: Role) -> None:
    p = opened(role)
    b = p.dc.expected_sequence_number
    p.dc.set_accepting(False)
    p.dc.receive_frame(to(p, b, b"first"))
    assert p.events() == [] and p.out() == []  # neither acked nor consumed (§6.4)
    assert p.dc.expected_sequence_number == b
    # Out of order still buffers and acks.
    p.dc.receive_frame(to(p, b + 1, b"second"))
    assert acked_seqs(p.out()) == [b + 1]
    assert p.events() == []
    p.dc.set_accepting(True)
    assert p.events() == [] and p.out() == []  # seq b was never stored
    # The peer's retransmission of b is now delivered, followed by the buffered b+1.
    p.dc.receive_frame(to(p, b, b"first"))
    assert data_events(p.events()) == [(1, b"first"), (1, b"second")]
    assert acked_seqs(p.out()) == [b]


def test_buffered_data_held_until_handler_ready() -> None:
    # The client's handler is not ready when HandshakeComplete arrives; Output that had
    # arrived early stays buffered (already acked) and is delivered on set_accepting(True).
    client = make(Role.CLIENT)
    client.dc.set_accepting(False)
    request = HandshakeRequest.build(AGENT_VERSION, "NonInteractiveCommands").to_bytes()
    client.dc.receive_frame(to(client, 2, b"early output"))
    client.dc.receive_frame(to(client, 1, HandshakeComplete(1, "").to_bytes(),
                               PayloadType.HANDSHAKE_COMPLETE))
    assert acked_seqs(client.out()) == [2, 1]
    client.dc.receive_frame(to(client, 0, request, PayloadType.HANDSHAKE_REQUEST))
    assert summary(client.out()) == [("ack", 0), (IN, 0, PayloadType.HANDSHAKE_RESPONSE)]
    assert [type(e) for e in client.events()] == [ev.SessionStarted]
    assert client.dc.expected_sequence_number == 2
    client.dc.set_accepting(True)
    assert client.events() == [ev.StreamData(1, b"early output")]
    assert client.out() == []  # acked when it was buffered
    assert client.dc.expected_sequence_number == 3


@pytest.mark.parametrize("role", [Role.CLIENT, Role.AGENT])
def test_pause_and_start_publication(role: Role) -> None:
    p = opened(role)
    p.dc.send_output(b"in flight")
    (f0,) = p.out()
    p.dc.receive_frame(service_frame(m.PAUSE_PUBLICATION))
    assert p.dc.paused and p.out() == [] and p.events() == []
    p.dc.send_output(b"queued")
    assert p.out() == []  # not sent (nor sequenced) while paused
    assert p.dc.pending == 1 and not p.dc.writable
    assert p.dc.next_deadline() is None
    p.clock.now = 2.0
    p.dc.tick()
    assert p.out() == []  # no resends while paused
    p.dc.receive_frame(service_frame(m.START_PUBLICATION))
    assert not p.dc.paused
    out = p.out()
    assert [(x.sequence_number, x.payload) for x in map(m.decode, out)] == [(1, b"queued")]
    p.dc.tick()
    assert p.out() == [f0]  # resending resumed; head overdue


def test_publication_messages_skip_header_validation() -> None:
    p = opened(Role.AGENT)
    raw = bytearray(service_frame(m.PAUSE_PUBLICATION, b"whatever"))
    raw[0:4] = b"\x00\x00\x00\x00"  # HeaderLength 0
    raw[40:48] = b"\x00" * 8  # CreatedDate 0
    raw[80:112] = b"\xaa" * 32  # wrong digest
    p.dc.receive_frame(bytes(raw))
    assert p.dc.paused
    assert p.events() == [] and p.out() == []


@pytest.mark.parametrize("resumer", ["ack", "stream"])
def test_inbound_ack_or_stream_message_ends_pause_and_sends_queued_data(resumer: str) -> None:
    """§6.7: pause ends on start_publication or on any received stream message or ack;
    a resumed sender must then send what it queued during the pause."""
    p = opened(Role.AGENT)
    p.dc.send_output(b"a")
    p.out()
    p.dc.receive_frame(service_frame(m.PAUSE_PUBLICATION))
    p.dc.send_output(b"queued during pause")
    assert p.out() == []
    if resumer == "ack":
        p.dc.receive_frame(ack_frame(77, OUT))  # even an ack for an unknown number
    else:
        p.dc.receive_frame(to(p, 0, b"keystroke"))
    assert not p.dc.paused
    out = p.out()
    sent = [(x.sequence_number, x.payload) for x in map(m.decode, out)
            if x.message_type == OUT]
    assert sent == [(1, b"queued during pause")]


# =========================================================================== 6. resume


def test_resume_keeps_sequence_numbers_unacked_frames_buffer_and_keys() -> None:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    pump(client, agent)
    assert client.dc.state is agent.dc.state is State.OPEN
    clock = client.clock
    cseq, aseq = client.dc.next_sequence_number, agent.dc.next_sequence_number
    assert (cseq, aseq) == (2, 3)

    client.dc.send_output(b"typed before the drop 1")
    client.dc.send_output(b"typed before the drop 2")
    before = client.out()  # lost with the old websocket
    agent.dc.send_output(b"A")
    agent.dc.send_output(b"B")
    agent.dc.send_output(b"C")
    a_frames = agent.out()
    client.dc.receive_frame(a_frames[2])  # C arrives, A and B are lost
    client.out()  # ... and so is the ack of C

    clock.now = 1.0
    client.dc.connection_lost()
    client.dc.send_output(b"typed while down")  # sequenced, kept, not sent
    assert client.out() == []
    assert client.dc.unacked == 3 and client.dc.next_sequence_number == cseq + 3
    assert client.dc.next_deadline() is None
    clock.now = 3.0
    client.dc.tick()
    assert client.out() == []
    client.dc.receive_frame(a_frames[1])  # a frame that races the drop: processed, ack not sent
    assert client.out() == []

    clock.now = 4.0
    client.dc.connection_made()
    resent = client.out()
    # Everything unacked, in sequence order; old frames byte-identical (§12.2, §16.12).
    assert resent[:2] == before
    assert [m.decode(f).sequence_number for f in resent] == [cseq, cseq + 1, cseq + 2]
    assert client.dc.next_deadline() == pytest.approx(4.0 + client.dc.rto)
    # Keys carried over: the agent decrypts all three.
    for f in resent:
        agent.dc.receive_frame(f)
    assert data_events(agent.events()) == [
        (1, b"typed before the drop 1"), (1, b"typed before the drop 2"),
        (1, b"typed while down")]
    for f in agent.out():
        client.dc.receive_frame(f)
    assert client.dc.unacked == 0
    # The reorder buffer carried over: A completes A, B, C in order.
    client.dc.receive_frame(a_frames[0])
    assert data_events(client.events()) == [(1, b"A"), (1, b"B"), (1, b"C")]
    assert client.dc.expected_sequence_number == aseq + 3
    assert agent.dc.next_sequence_number == aseq + 3


def test_agent_resume_resends_all_unacked_and_unpauses() -> None:
    agent = opened(Role.AGENT)
    for i in range(3):
        agent.dc.send_output(b"%d" % i)
    frames = agent.out()
    agent.dc.receive_frame(ack_frame(1, OUT))
    agent.dc.receive_frame(service_frame(m.PAUSE_PUBLICATION))
    agent.dc.connection_lost()
    agent.dc.connection_made()
    assert not agent.dc.paused
    assert agent.out() == [frames[0], frames[2]]


def test_acks_not_queued_while_disconnected() -> None:
    p = opened(Role.CLIENT)
    p.dc.connection_lost()
    p.dc.receive_frame(to(p, 1, b"x"))
    assert data_events(p.events()) == [(1, b"x")]
    p.dc.connection_made()
    assert p.out() == []  # the ack is not replayed; the peer's retransmission gets re-acked
    p.dc.receive_frame(to(p, 1, b"x"))
    assert acked_seqs(p.out()) == [1]
    assert p.events() == []


# =========================================================================== 7a. fuzzing receive


JSON_KEYS = [
    "AcknowledgedMessageType", "AcknowledgedMessageId", "AcknowledgedMessageSequenceNumber",
    "IsSequentialMessage", "AgentVersion", "RequestedClientActions", "ActionType",
    "ActionParameters", "SessionType", "Properties", "KMSKeyId", "Challenge",
    "ClientVersion", "ProcessedClientActions", "ActionStatus", "ActionResult", "Error",
    "Errors", "KMSCipherTextKey", "KMSCipherTextHash", "ChallengeAcknowledgement",
    "HandshakeTimeToComplete", "CustomerMessage", "cols", "rows", "Output", "SessionId",
    "MessageId", "CreatedDate", "SchemaVersion",
]
JSON_STRINGS = ["SessionType", "KMSEncryption", "Standard_Stream", "Port",
                "NonInteractiveCommands", "InteractiveCommands", "AAAA", "!!", "é", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(JSON_STRINGS)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(max_size=5), inner, max_size=6),
    max_leaves=12,
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


payloads = st.one_of(
    st.binary(max_size=80),
    json_values.map(_json_bytes),
    st.sampled_from([
        b"", b"{}", b"[]", b"null", b"\xff\xfe{", b"EXIT_CODE: 3", b"EXIT_CODE: -99999999999",
        b"\x00\x00\x00\x02", b'{"cols":-1,"rows":2}', b'{"cols":true,"rows":2}',
        b'{"Challenge":"\xc3\xa9"}', b'{"Challenge":"AAAA"}', b"1" * 5000,
        b'{"AcknowledgedMessageSequenceNumber":0}', b'{"AcknowledgedMessageSequenceNumber":1}',
        b'{"AgentVersion":"1","RequestedClientActions":[{"ActionType":"KMSEncryption",'
        b'"ActionParameters":{"KMSKeyId":"k","Challenge":"Yw=="}}]}',
        b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":"KMSEncryption",'
        b'"ActionStatus":1,"ActionResult":{"KMSCipherTextKey":"\xc3\xa9"}}]}',
        b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":"KMSEncryption",'
        b'"ActionStatus":1,"ActionResult":{"KMSCipherTextKey":"AAAA"}}]}',
        b"[" * 100_000,
    ]),
)

def _or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field as the spec shapes it, or (a quarter of the time) any JSON value."""
    return st.one_of(strategy, strategy, strategy, json_values)


_b64 = st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode())
_key_or_junk = _or_junk(st.one_of(_b64, st.text(max_size=6), st.just("é")))
_action_types = _or_junk(st.sampled_from(["SessionType", "KMSEncryption", "Other"]))
_requested_action = st.fixed_dictionaries({
    "ActionType": _action_types,
    "ActionParameters": _or_junk(st.one_of(
        st.fixed_dictionaries({"SessionType": _or_junk(st.sampled_from(list(SessionType))),
                               "Properties": _or_junk(st.none() | st.dictionaries(
                                   st.text(max_size=4), st.text(max_size=4), max_size=2))}),
        st.fixed_dictionaries({"KMSKeyId": _or_junk(st.text(max_size=6))},
                              optional={"Challenge": _key_or_junk}))),
})
_processed_action = st.fixed_dictionaries({
    "ActionType": _action_types,
    "ActionStatus": _or_junk(st.sampled_from([0, 1, 1, 1, 2, 3])),
    "ActionResult": _or_junk(st.none() | st.fixed_dictionaries(
        {"KMSCipherTextKey": _key_or_junk},
        optional={"KMSCipherTextHash": json_values,
                  "ChallengeAcknowledgement": _or_junk(st.booleans())})),
}, optional={"Error": _or_junk(st.text(max_size=5))})
#: Payloads shaped like what each PayloadType carries (§5, §7, §8, §9), fields sometimes junk.
TYPED_PAYLOADS: dict[int, st.SearchStrategy[bytes]] = {
    PayloadType.SIZE: st.fixed_dictionaries(
        {"cols": _or_junk(st.integers(-1, 2**32)), "rows": _or_junk(st.integers(-1, 2**32))}
    ).map(_json_bytes),
    PayloadType.HANDSHAKE_REQUEST: st.fixed_dictionaries(
        {"AgentVersion": _or_junk(st.text(max_size=8)),
         "RequestedClientActions": _or_junk(st.lists(_requested_action, max_size=3))}
    ).map(_json_bytes),
    PayloadType.HANDSHAKE_RESPONSE: st.fixed_dictionaries(
        {"ClientVersion": _or_junk(st.text(max_size=8)),
         "ProcessedClientActions": _or_junk(st.lists(_processed_action, max_size=3))},
        optional={"Errors": json_values},
    ).map(_json_bytes),
    PayloadType.HANDSHAKE_COMPLETE: st.fixed_dictionaries(
        {"HandshakeTimeToComplete": _or_junk(st.integers(0, 10**12)),
         "CustomerMessage": _or_junk(st.text(max_size=8))}).map(_json_bytes),
    PayloadType.ENC_CHALLENGE_REQUEST: st.fixed_dictionaries(
        {"Challenge": _key_or_junk}).map(_json_bytes),
    PayloadType.ENC_CHALLENGE_RESPONSE: st.fixed_dictionaries(
        {"Challenge": _key_or_junk}).map(_json_bytes),
    PayloadType.FLAG: st.binary(max_size=8),
    PayloadType.EXIT_CODE: st.text(max_size=14).map(lambda t: b"EXIT_CODE: " + t.encode()),
}

MESSAGE_TYPES = [OUT, IN, m.ACKNOWLEDGE, m.CHANNEL_CLOSED, m.START_PUBLICATION,
                 m.PAUSE_PUBLICATION, m.AGENT_SESSION_STATE, "x", "bogus_type"]


@st.composite
def fuzz_frames(draw: st.DrawFn, stream_type: str, expected: int) -> bytes:
    """Mostly frames that reach the handlers of a channel expecting ``expected`` on
    ``stream_type``; some raw bytes and header mutations."""
    kind = draw(st.sampled_from(["raw", "message", "message", "message", "message"]))
    if kind == "raw":
        return draw(st.binary(max_size=300))
    payload_type = draw(st.sampled_from(list(PayloadType)) | st.integers(0, 2**32 - 1))
    typed = TYPED_PAYLOADS.get(payload_type)
    payload = draw(payloads if typed is None else st.one_of(typed, typed, payloads))
    msg = m.Message(
        message_type=draw(st.sampled_from([stream_type] * 6 + MESSAGE_TYPES)),
        sequence_number=draw(st.sampled_from([expected] * 4 + [expected - 1, expected + 1,
                                                               expected + 2])
                             | st.integers(-(2**63), 2**63 - 1)),
        flags=draw(st.integers(0, 3) | st.integers(0, 2**64 - 1)),
        wire_id=m.wire_id(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        payload_type=payload_type,
        payload=payload,
        created_date=draw(st.sampled_from([WALL, 1]) | st.integers(0, 2**64 - 1)),
    )
    raw = bytearray(msg.encode(nul_padded=draw(st.booleans())))
    mutation = draw(st.sampled_from(["none"] * 8 + ["truncate", "flip", "header_length",
                                                    "payload_length", "digest", "type"]))
    if mutation == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mutation == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= draw(st.integers(1, 255))
    elif mutation == "header_length":
        raw[0:4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif mutation == "payload_length":
        raw[116:120] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif mutation == "digest":
        raw[80:112] = hashlib.sha256(draw(st.binary(max_size=4))).digest()
    elif mutation == "type":
        raw[4:36] = draw(st.binary(min_size=32, max_size=32))
    return bytes(raw)


def _client_open_kms() -> Peer:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    pump(client, agent)
    return client


def _agent_open_kms() -> Peer:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    pump(client, agent)
    return agent


def _client_data_key() -> Peer:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.flush()
    return client


def _client_challenge() -> Peer:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.dc.provide_data_key(DATA_KEY, BLOB)
    client.flush()
    return client


def _agent_handshake(kms: bool) -> Callable[[], Peer]:
    def build() -> Peer:
        agent = make(Role.AGENT)
        agent.dc.start_handshake("NonInteractiveCommands", None, KMS_KEY_ID if kms else None)
        agent.flush()
        return agent
    return build


def _agent_challenge() -> Peer:
    client, agent = handshake_pair("Standard_Stream", kms=True)
    client.dc.receive_frame(agent.out()[0])
    client.dc.provide_data_key(DATA_KEY, BLOB)
    for f in client.out():
        agent.dc.receive_frame(f)
    agent.events()
    agent.dc.provide_data_key(DATA_KEY)
    agent.flush()
    return agent


def _not_accepting(p: Peer) -> Peer:
    p.dc.set_accepting(False)
    return p


CHANNEL_BUILDERS: dict[str, Callable[[], Peer]] = {
    "client_fresh": lambda: make(Role.CLIENT),
    "client_open": lambda: opened(Role.CLIENT),
    "client_open_not_accepting": lambda: _not_accepting(opened(Role.CLIENT)),
    "client_data_key": _client_data_key,
    "client_challenge": _client_challenge,
    "client_open_kms": _client_open_kms,
    "agent_idle": lambda: make(Role.AGENT),
    "agent_open": lambda: opened(Role.AGENT),
    "agent_open_strict": lambda: opened(Role.AGENT, verify_digest=True),
    "agent_handshake": _agent_handshake(False),
    "agent_handshake_kms": _agent_handshake(True),
    "agent_challenge": _agent_challenge,
    "agent_open_kms": _agent_open_kms,
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(sorted(CHANNEL_BUILDERS)), count=st.integers(1, 6), data=st.data())
def test_any_bytes_yield_events_or_typed_errors_only(which: str, count: int,
                                                     data: st.DataObject) -> None:
    p = CHANNEL_BUILDERS[which]()
    stream_type = OUT if p.dc.role is Role.CLIENT else IN
    for _ in range(count):
        raw = data.draw(fuzz_frames(stream_type, p.dc.expected_sequence_number))
        try:
            m.decode(raw, verify_digest=p.dc.verify_digest)
        except MalformedMessage:
            undecodable = True
        else:
            undecodable = False
        failed_before = p.dc.state is State.ERROR
        try:
            p.dc.receive_frame(raw)
        except ProtocolError:
            assert p.dc.state is State.ERROR
            p.out()
            p.events()
            continue
        assert not failed_before
        out, events = p.out(), p.events()
        if undecodable:
            # §4.3: dropped silently (no ack, no state change), reported as FrameDropped.
            assert out == [] and [type(e) for e in events] == [ev.FrameDropped]
        for f in out:
            m.decode(f)  # whatever we send decodes with a valid digest
        p.dc.tick()
        p.dc.next_deadline()
    if p.dc.state not in (State.ERROR, State.CLOSED):
        p.dc.send_output(b"still usable")


# A real session, with one delivered frame swapped for a structurally mutated copy
# (valid header and digest, one JSON node or the payload bytes changed), reaches the
# handlers in exactly the state that expects that frame.

SCRIPTS: dict[str, tuple[str, bool]] = {
    "shell_kms": ("Standard_Stream", True),
    "noninteractive_kms": ("NonInteractiveCommands", True),
    "port": ("Port", False),
    "shell_plain": ("Standard_Stream", False),
}


def _json_nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of all nodes, leaves first."""
    inner, leaves = [path], []
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for k, v in items:
        sub = _json_nodes(v, (*path, k))
        if isinstance(v, dict | list):
            inner += sub
        else:
            leaves += sub
    return leaves + inner


_replacement = st.one_of(
    st.sampled_from([None, True, False, "", "AAAA", "AAA", "é", "not base64!", 0, 1, -1, 2,
                     3, 2**63, 1.5, [], {}, [None], {"": None}]),
    st.text(max_size=8),
    json_values,
)


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        value = value[k]
    return value


def _replace(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _replace(copy[head], rest, new, delete)
    return copy


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    msg = m.decode(raw, verify_digest=False)
    payload, ptype, seq = msg.payload, msg.payload_type, msg.sequence_number
    how = draw(st.sampled_from(["json"] * 6 + ["bytes", "truncate", "ptype", "seq"]))
    try:
        tree = json.loads(payload)
    except ValueError:
        tree = None
    if how == "json" and tree is not None:
        nodes = _json_nodes(tree)
        leaves = [n for n in nodes if n and not isinstance(_at(tree, n), dict | list)]
        path = draw(st.sampled_from(leaves or nodes) | st.sampled_from(nodes))
        delete = bool(path) and draw(st.sampled_from([False, False, False, True]))
        payload = _json_bytes(_replace(tree, path, draw(_replacement), delete))
    elif how == "truncate":
        payload = payload[:draw(st.integers(0, max(0, len(payload) - 1)))]
    elif how == "ptype":
        ptype = draw(st.sampled_from(list(PayloadType)))
    elif how == "seq":
        seq = draw(st.integers(seq - 2, seq + 2))
    else:
        payload = draw(st.binary(max_size=100) | payloads)
    return m.Message(msg.message_type, seq, msg.flags, msg.wire_id, ptype, payload,
                     msg.created_date).encode()


def _scripted_session(script: str, swap: Callable[[int, bytes], bytes | None]) -> int:
    """Run a whole session; ``swap(i, frame)`` may replace the i-th delivery.
    Returns the number of deliveries. Only typed errors may escape a receiver."""
    session_type, kms = SCRIPTS[script]
    client, agent = handshake_pair(session_type, kms=kms,
                                   properties={"portNumber": "80"} if session_type == "Port"
                                   else None)
    client.dc.send_size(80, 24)
    client.dc.send_output(b"input")
    client.dc.send_flag(Flag.TERMINATE_SESSION)
    agent.dc.send_output(b"output")
    agent.dc.send_output(b"error", PayloadType.STDERR)
    agent.dc.send_exit_code(3)
    delivered = 0
    for _ in range(40):
        moved = False
        for src, dst in ((client, agent), (agent, client)):
            for f in src.out():
                moved = True
                replacement = swap(delivered, f)
                delivered += 1
                try:
                    dst.dc.receive_frame(f if replacement is None else replacement)
                except ProtocolError:
                    assert dst.dc.state is State.ERROR
                    return delivered
        for p in (client, agent):
            for e in p.events():
                if p.dc.state is State.ERROR:
                    break
                if isinstance(e, ev.DataKeyRequested):
                    moved = True
                    p.dc.provide_data_key(DATA_KEY, BLOB)
                elif isinstance(e, ev.DataKeyToDecrypt):
                    moved = True
                    p.dc.provide_data_key(DATA_KEY)
        client.clock.now += 0.5  # one clock for both: retransmissions and timeouts run too
        for p in (client, agent):
            p.dc.tick()
        if not moved and not client.dc.unacked and not agent.dc.unacked:
            break
    return delivered


def _stream_deliveries(script: str) -> list[int]:
    """Indices of the first copy of each stream message (no acks, no resends) in a clean run."""
    found: list[int] = []
    seen: set[tuple[str, int]] = set()

    def note(i: int, f: bytes) -> None:
        msg = m.decode(f)
        key = (msg.message_type, msg.sequence_number)
        if msg.message_type != m.ACKNOWLEDGE and key not in seen:
            seen.add(key)
            found.append(i)

    _scripted_session(script, lambda i, f: note(i, f))
    return found


@functools.cache
def script_length(script: str) -> int:
    return _scripted_session(script, lambda i, f: None)


@functools.cache
def stream_deliveries(script: str) -> tuple[int, ...]:
    return tuple(_stream_deliveries(script))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.sampled_from(sorted(SCRIPTS)), data=st.data())
def test_mutated_frames_in_a_real_session_yield_typed_errors_only(
        script: str, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(stream_deliveries(script))
                       | st.integers(0, script_length(script) - 1), label="delivery")

    def swap(i: int, f: bytes) -> bytes | None:
        return data.draw(mutated(f), label="mutated frame") if i == target else None

    _scripted_session(script, swap)


HOSTILE_VALUES: list[Any] = [None, True, 0, -1, 2**63, 1.5, "", "not base64!", "é", [], {},
                             [None], {"": None}]


def test_every_json_field_replaced_yields_typed_errors_only() -> None:
    """Exhaustive companion of the random test: in a KMS shell session and a Port session,
    every node of every JSON payload (handshake, challenge, complete, size), replaced by
    each hostile value or deleted."""
    runs = 0
    for script in ("shell_kms", "port"):
        originals: dict[int, bytes] = {}

        def keep(i: int, f: bytes, store: dict[int, bytes] = originals) -> None:
            store[i] = f

        _scripted_session(script, lambda i, f: keep(i, f))
        for index in stream_deliveries(script):
            msg = m.decode(originals[index])
            try:
                tree = json.loads(msg.payload)
            except ValueError:
                continue  # encrypted or binary payloads: covered by the random tests
            for path in _json_nodes(tree):
                variants = [(v, False) for v in HOSTILE_VALUES] + ([(None, True)] if path else [])
                for value, delete in variants:
                    payload = _json_bytes(_replace(tree, path, value, delete))
                    forged = m.Message(msg.message_type, msg.sequence_number, msg.flags,
                                       msg.wire_id, msg.payload_type, payload,
                                       msg.created_date).encode()
                    _scripted_session(
                        script, lambda i, f, n=index, x=forged: x if i == n else None)
                    runs += 1
    print(f"\nevery JSON field: {runs} mutated sessions")
    assert runs > 500


# =========================================================================== 7b. lossy link


@dataclass
class Schedule:
    seed: int
    session_type: str
    kms: bool
    loss: float
    dup: float
    corrupt: float
    max_delay: float
    window: int
    max_payload: int
    client_bytes: int
    agent_bytes: int
    agent_stderr_bytes: int
    sizes: int
    disconnects: int
    pauses: int
    gates: int
    kms_delay: float


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    session_type = draw(st.sampled_from(["Standard_Stream", "InteractiveCommands",
                                         "NonInteractiveCommands", "Port"]))
    kms = draw(st.booleans())
    handshake = kms or session_type in ("NonInteractiveCommands", "Port")
    return Schedule(
        seed=draw(st.integers(0, 2**32 - 1)),
        session_type=session_type,
        kms=kms,
        loss=draw(st.sampled_from([0.0, 0.05, 0.15, 0.3])),
        dup=draw(st.sampled_from([0.0, 0.1, 0.3])),
        corrupt=draw(st.sampled_from([0.0, 0.0, 0.05])),
        max_delay=draw(st.sampled_from([0.0, 0.02, 0.15, 0.4])),
        window=draw(st.sampled_from([1, 2, 3, 8, 64, 1024])),
        max_payload=draw(st.sampled_from([1, 5, 16, 64, 1024])),
        client_bytes=draw(st.integers(0, 200)),
        # Without a handshake the client only learns the session from the first Output.
        agent_bytes=draw(st.integers(0 if handshake else 1, 400)),
        agent_stderr_bytes=draw(st.integers(0, 60)) if handshake else 0,
        sizes=draw(st.integers(0, 3)),
        disconnects=draw(st.integers(0, 2)),
        pauses=draw(st.integers(0, 2)),
        gates=draw(st.integers(0, 2)),
        kms_delay=draw(st.sampled_from([0.0, 0.3, 2.0])),
    )


@dataclass(order=True)
class _Item:
    when: float
    order: int
    action: Callable[[], None] = field(compare=False)


class Simulation:
    """Client and agent DataChannels over a faulty in-memory link, on one fake clock."""

    # Over thousands of schedules the worst seen was ~420 simulated s, ~2000 steps and
    # ~2300 frames (window 1, one-byte messages, 30 % loss); a livelock fails fast.
    LIMIT = 3600.0  # simulated seconds
    MAX_STEPS = 50_000
    MAX_FRAMES = 50_000

    def __init__(self, s: Schedule) -> None:
        self.s = s
        self.rng = random.Random(s.seed)
        self.clock = Clock()
        self.queue: list[_Item] = []
        self.order = 0
        self.client_up = True
        rng = self.rng

        def ids() -> uuid.UUID:
            return uuid.UUID(int=rng.getrandbits(128), version=4)

        common: dict[str, Any] = dict(session_id=SESSION, target_id=TARGET, clock=self.clock,
                                      wall_clock_ms=lambda: WALL + int(self.clock.now * 1000),
                                      random_bytes=rng.randbytes, new_uuid=ids,
                                      window=s.window, max_payload=s.max_payload,
                                      verify_digest=True, handshake_timeout=3600.0)
        self.client = DataChannel(Role.CLIENT, **common)
        self.agent = DataChannel(Role.AGENT, max_resends=None, **common)

        self.client_data = rng.randbytes(s.client_bytes)
        self.agent_data = rng.randbytes(s.agent_bytes)
        self.agent_stderr = rng.randbytes(s.agent_stderr_bytes)
        self.sizes = [(rng.randrange(1, 500), rng.randrange(1, 200)) for _ in range(s.sizes)]
        self.sent_sizes: list[tuple[int, int]] = []  # in the order send_size was called
        self.exit_code = rng.randrange(-5, 256) if s.agent_stderr_bytes else None

        self.client_log: list[ev.Event] = []
        self.agent_log: list[ev.Event] = []
        self.frames = 0
        self.steps = 0

    # ------------------------------------------------------------------ scheduling

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.order += 1
        heapq.heappush(self.queue, _Item(when, self.order, action))

    def _chunks(self, data: bytes, start: float, span: float) -> list[tuple[float, bytes]]:
        chunks, i = [], 0
        while i < len(data):
            n = self.rng.randint(1, 90)
            chunks.append(data[i:i + n])
            i += n
        times = sorted(start + self.rng.random() * span for _ in chunks)
        return list(zip(times, chunks, strict=True))

    def plan(self) -> None:
        s, rng = self.s, self.rng
        self.at(0.0, lambda: self.agent.start_handshake(
            s.session_type, {"portNumber": "80"} if s.session_type == "Port" else None,
            KMS_KEY_ID if s.kms else None))
        for when, chunk in self._chunks(self.client_data, 0.0, 4.0):
            self.at(when, lambda c=chunk: self.client.send_output(c))
        size_times = sorted(rng.random() * 4.0 for _ in self.sizes)
        for when, size in zip(size_times, self.sizes, strict=True):
            self.at(when, lambda sz=size: self._send_size(sz))
        # The agent's two streams are written in one global order so their interleaving
        # is checkable; the exit code comes last (§9.3).
        writes = [(w, PayloadType.OUTPUT, c) for w, c in self._chunks(self.agent_data, 0.0, 4.0)]
        writes += [(w, PayloadType.STDERR, c)
                   for w, c in self._chunks(self.agent_stderr, 0.5, 3.5)]
        writes.sort(key=lambda x: x[0])
        for when, ptype, chunk in writes:
            self.at(when, lambda c=chunk, t=ptype: self.agent.send_output(c, t))
        if self.exit_code is not None:
            self.at(4.5, lambda: self.agent.send_exit_code(self.exit_code or 0))
        for _ in range(s.disconnects):
            down = rng.random() * 5.0
            self.at(down, self._disconnect)
            self.at(down + rng.random() * 2.0, self._reconnect)
        for _ in range(s.pauses):
            target = rng.choice([self.client, self.agent, self.agent])
            start = rng.random() * 5.0
            end = start + rng.random() * 2.0
            self.at(start, lambda t=target: self._service(t, m.PAUSE_PUBLICATION))
            if target is self.agent and rng.random() < 0.5:
                size = (rng.randrange(1, 500), rng.randrange(1, 200))
                self.at(end, lambda sz=size: self._resize_or_start(sz))
            else:
                self.at(end, lambda t=target: self._service(t, m.START_PUBLICATION))
        for _ in range(s.gates):
            target = rng.choice([self.client, self.agent])
            start = rng.random() * 5.0
            self.at(start, lambda t=target: t.set_accepting(False))
            self.at(start + rng.random() * 1.5, lambda t=target: t.set_accepting(True))

    # ------------------------------------------------------------------ faults

    def _disconnect(self) -> None:
        """The client's websocket drops: what is in flight is lost; the service pauses
        the agent (§5.4)."""
        if not self.client_up:
            return
        self.client_up = False
        self.client.connection_lost()
        self.queue = [i for i in self.queue if not getattr(i.action, "in_flight", False)]
        heapq.heapify(self.queue)
        self._service(self.agent, m.PAUSE_PUBLICATION)

    def _reconnect(self) -> None:
        if self.client_up:
            return
        self.client_up = True
        self.client.connection_made()
        self._service(self.agent, m.START_PUBLICATION)

    def _resize_or_start(self, size: tuple[int, int]) -> None:
        """No start_publication: the client's next message (a resize) ends the agent's
        pause, as any inbound input_stream_data does (§6.7). A client that is not open
        yet sends nothing (it waits for the agent, §7.7), so then the service must."""
        if self.client.state is State.OPEN:
            self._send_size(size)
        else:
            self._service(self.agent, m.START_PUBLICATION)

    def _send_size(self, size: tuple[int, int]) -> None:
        self.sent_sizes.append(size)
        self.client.send_size(*size)

    def _service(self, dc: DataChannel, kind: str) -> None:
        if dc.state is not State.ERROR:
            dc.receive_frame(service_frame(kind))

    def _send(self, dest: DataChannel, raw: bytes) -> None:
        """One frame onto the link: lost, corrupted, duplicated and delayed at random."""
        self.frames += 1
        assert self.frames < self.MAX_FRAMES, "frame storm: " + self.describe()
        if not self.client_up:
            return
        copies = 2 if self.rng.random() < self.s.dup else 1
        for _ in range(copies):
            if self.rng.random() < self.s.loss:
                continue
            data = raw
            if len(raw) > 120 and self.rng.random() < self.s.corrupt:
                b = bytearray(raw)
                b[self.rng.randrange(120, len(b))] ^= 1 << self.rng.randrange(8)
                data = bytes(b)

            def deliver(d: bytes = data) -> None:
                dest.receive_frame(d)

            deliver.in_flight = True  # type: ignore[attr-defined]
            self.at(self.clock.now + self.rng.random() * self.s.max_delay, deliver)

    # ------------------------------------------------------------------ the loop

    def _collect(self) -> None:
        for f in self.client.data_to_send():
            self._send(self.agent, f)
        for f in self.agent.data_to_send():
            self._send(self.client, f)
        for e in self.client.next_events():
            self.client_log.append(e)
            if isinstance(e, ev.DataKeyRequested):
                assert e.encryption_context["aws:ssm:SessionId"] == SESSION
                self.at(self.clock.now + self.s.kms_delay,
                        lambda: self.client.provide_data_key(DATA_KEY, BLOB))
        for e in self.agent.next_events():
            self.agent_log.append(e)
            if isinstance(e, ev.DataKeyToDecrypt):
                assert e.ciphertext_blob == BLOB
                self.at(self.clock.now + self.s.kms_delay / 2,
                        lambda: self.agent.provide_data_key(DATA_KEY))

    def run(self) -> None:
        self.plan()
        while True:
            self.steps += 1
            assert self.steps < self.MAX_STEPS, "simulation does not converge: " + self.describe()
            candidates = [self.queue[0].when] if self.queue else []
            for dc in (self.client, self.agent):
                deadline = dc.next_deadline()
                if deadline is not None:
                    candidates.append(deadline + 0.001)  # as the real timers do
            if not candidates:
                return  # quiescent
            self.clock.now = max(self.clock.now, min(candidates))
            assert self.clock.now < self.LIMIT, "stalled: " + self.describe()
            while self.queue and self.queue[0].when <= self.clock.now:
                heapq.heappop(self.queue).action()
                self._collect()
            self.client.tick()
            self.agent.tick()
            self._collect()

    def describe(self) -> str:
        return (f"{self.s} client={self.client!r} agent={self.agent!r} "
                f"pending={self.client.pending}/{self.agent.pending}")

    def check(self) -> None:
        c, a = self.client, self.agent
        where = self.describe()
        for log in (self.client_log, self.agent_log):
            assert not [e for e in log if isinstance(e, ev.HandshakeFailed | ev.ChannelClosed)]
            dropped = [e for e in log if isinstance(e, ev.FrameDropped)]
            if not self.s.corrupt:
                assert dropped == [], where
            assert all("digest" in e.reason for e in dropped), dropped
        assert c.state is State.OPEN and a.state is State.OPEN, where
        for log in (self.client_log, self.agent_log):
            started = [e for e in log if isinstance(e, ev.SessionStarted)]
            assert len(started) == 1
            assert started[0].encrypted == (self.s.kms and self.s.session_type != "Port")
        # The agent's streams, exactly, in order, each byte once.
        got = [e for e in self.client_log if isinstance(e, ev.StreamData | ev.ExitCode)]
        out = b"".join(e.data for e in got if isinstance(e, ev.StreamData) and e.payload_type == 1)
        err = b"".join(e.data for e in got
                       if isinstance(e, ev.StreamData) and e.payload_type == 11)
        assert out == self.agent_data, where
        assert err == self.agent_stderr, where
        exits = [e.code for e in got if isinstance(e, ev.ExitCode)]
        if self.exit_code is None:
            assert exits == []
        else:
            assert exits == [self.exit_code] and isinstance(got[-1], ev.ExitCode)
        data = b"".join(e.data for e in self.agent_log if isinstance(e, ev.StreamData))
        assert data == self.client_data, where
        sizes = [(e.cols, e.rows) for e in self.agent_log if isinstance(e, ev.SizeChanged)]
        assert sizes == self.sent_sizes, where
        # Both ends agree on the sequence numbers and nothing is left over.
        assert c.next_sequence_number == a.expected_sequence_number, where
        assert a.next_sequence_number == c.expected_sequence_number, where
        assert c.unacked == a.unacked == c.pending == a.pending == 0, where
        assert c.bytes_received == len(self.agent_data) + len(self.agent_stderr)
        assert a.bytes_received == len(self.client_data)


SCHEDULES_RUN: list[Schedule] = []


def run_schedule(s: Schedule) -> Simulation:
    sim = Simulation(s)
    sim.run()
    sim.check()
    SCHEDULES_RUN.append(s)
    return sim


def test_lossy_link_fixed_examples() -> None:
    """A few hand-picked hard cases, always run."""
    base = Schedule(seed=0, session_type="Standard_Stream", kms=True, loss=0.3, dup=0.3,
                    corrupt=0.05, max_delay=0.4, window=2, max_payload=5, client_bytes=150,
                    agent_bytes=300, agent_stderr_bytes=0, sizes=2, disconnects=2, pauses=2,
                    gates=2, kms_delay=2.0)
    for seed in range(5):
        run_schedule(replace(base, seed=seed))
        run_schedule(replace(base, seed=seed, session_type="NonInteractiveCommands",
                             client_bytes=40, agent_bytes=60, agent_stderr_bytes=20,
                             window=1, max_payload=1))
        run_schedule(replace(base, seed=seed, session_type="Port", kms=False, corrupt=0.0,
                             window=1024, max_payload=1024, client_bytes=200, agent_bytes=400))


def test_lossy_reordering_duplicating_link_delivers_both_streams_exactly() -> None:
    before = len(SCHEDULES_RUN)
    seen: set[tuple[Any, ...]] = set()
    stats = {"kms": 0, "frames": 0}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(schedules())
    def check(s: Schedule) -> None:
        sim = run_schedule(s)
        seen.add(tuple(vars(s).values()))
        stats["kms"] += s.kms
        stats["frames"] += sim.frames

    check()
    runs = len(SCHEDULES_RUN) - before
    print(f"\nlossy link: {runs} schedules run ({len(seen)} distinct, "
          f"{stats['kms']} with KMS), {stats['frames']} frames sent")
    assert runs >= 1000
    assert stats["kms"] >= 100
