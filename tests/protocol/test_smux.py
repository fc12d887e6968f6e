"""smux v1 tests (PROTOCOL.md §10.4, §14.3, §18.3): vectors, roles, chunking, errors, keepalive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmshell.protocol.errors import ProtocolError, SmuxError
from ssmshell.protocol.smux import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    HEADER,
    Frame,
    SmuxEvent,
    SmuxSession,
    StreamClosed,
    StreamData,
    StreamOpened,
    decode_frame,
    encode_frame,
)

# §18.3
SYN_3 = "0100000003000000"
PSH_3_HI = "01020200030000006869"
FIN_3 = "0101000003000000"
NOP = "0103000000000000"
MAX_PSH = 32768  # §14.3 MaxFrameSize, written out so a wrong constant in the module fails


def frames_of(wire: bytes) -> list[Frame]:
    """Decode a whole byte string into frames (must end on a frame boundary)."""
    frames: list[Frame] = []
    pos = 0
    while pos < len(wire):
        decoded = decode_frame(wire, pos)
        assert decoded is not None, f"truncated frame at {pos}"
        frame, pos = decoded
        frames.append(frame)
    return frames


def pump(src: SmuxSession, dst: SmuxSession, now: float | None = None) -> list[SmuxEvent]:
    """Move everything ``src`` queued into ``dst``; the events ``dst`` reports."""
    return dst.receive_data(src.data_to_send(), now)


def collect(events: list[SmuxEvent]) -> dict[int, bytes]:
    """Concatenate StreamData per stream id."""
    out: dict[int, bytearray] = {}
    for event in events:
        if isinstance(event, StreamData):
            out.setdefault(event.stream_id, bytearray()).extend(event.data)
    return {k: bytes(v) for k, v in out.items()}


# ---------------------------------------------------------------------- §18.3 vectors


@pytest.mark.parametrize(("cmd", "stream_id", "data", "hexed"), [
    (CMD_SYN, 3, b"", SYN_3),
    (CMD_PSH, 3, b"hi", PSH_3_HI),
    (CMD_FIN, 3, b"", FIN_3),
    (CMD_NOP, 0, b"", NOP),
])
def test_vector_encode_and_decode(cmd: int, stream_id: int, data: bytes, hexed: str) -> None:
    assert encode_frame(cmd, stream_id, data).hex() == hexed
    decoded = decode_frame(bytes.fromhex(hexed))
    assert decoded == (Frame(cmd, stream_id, data), len(hexed) // 2)


def test_client_session_emits_the_vectors() -> None:
    client = SmuxSession(client=True, keepalive=True, now=0.0)
    assert client.open_stream() == 3
    assert client.data_to_send().hex() == SYN_3
    client.send(3, b"hi")
    assert client.data_to_send().hex() == PSH_3_HI
    client.close_stream(3)
    assert client.data_to_send().hex() == FIN_3
    client.receive_data(bytes.fromhex(NOP), now=9.0)
    client.tick(10.0)
    assert client.data_to_send().hex() == NOP


def test_server_session_decodes_the_vectors() -> None:
    server = SmuxSession(client=False)
    wire = bytes.fromhex(SYN_3 + PSH_3_HI + NOP + FIN_3)
    assert server.receive_data(wire) == [StreamOpened(3), StreamData(3, b"hi"), StreamClosed(3)]
    assert server.open_streams == frozenset()


def test_header_is_little_endian() -> None:
    wire = encode_frame(CMD_PSH, 0x01020304, b"x" * 0x0102)
    assert wire[:8] == bytes([1, CMD_PSH, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01])


# ---------------------------------------------------------------------- frame helpers


def test_decode_frame_incomplete_returns_none() -> None:
    wire = encode_frame(CMD_PSH, 5, b"hello")
    for cut in range(len(wire)):
        assert decode_frame(wire[:cut]) is None
    assert decode_frame(wire) == (Frame(CMD_PSH, 5, b"hello"), len(wire))


def test_decode_frame_at_offset() -> None:
    wire = encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, b"abc")
    assert decode_frame(wire, 8) == (Frame(CMD_PSH, 3, b"abc"), len(wire))
    assert decode_frame(bytearray(wire), 8) == (Frame(CMD_PSH, 3, b"abc"), len(wire))


def test_decode_frame_length_of_non_psh_is_not_data() -> None:
    # Like xtaci/smux's recvLoop, only PSH reads data after the header.
    odd_syn = HEADER.pack(1, CMD_SYN, 4, 7)
    wire = odd_syn + encode_frame(CMD_PSH, 7, b"zz")
    assert decode_frame(wire) == (Frame(CMD_SYN, 7), 8)
    server = SmuxSession(client=False)
    assert server.receive_data(wire) == [StreamOpened(7), StreamData(7, b"zz")]


@pytest.mark.parametrize(("cmd", "stream_id", "data", "version"), [
    (256, 3, b"", 1),
    (-1, 3, b"", 1),
    (CMD_PSH, 1 << 32, b"", 1),
    (CMD_PSH, -1, b"", 1),
    (CMD_PSH, 3, b"x" * 65536, 1),
    (CMD_PSH, 3, b"", 256),
])
def test_encode_frame_rejects_out_of_range(cmd: int, stream_id: int, data: bytes,
                                           version: int) -> None:
    with pytest.raises(SmuxError):
        encode_frame(cmd, stream_id, data, version=version)


def test_encode_frame_limits_accepted() -> None:
    wire = encode_frame(CMD_PSH, 0xFFFFFFFF, b"x" * 65535)
    assert wire[:8].hex() == "0102ffffffffffff"
    assert len(wire) == 8 + 65535


def test_smux_error_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_frame(encode_frame(CMD_SYN, 3, version=2))


# ---------------------------------------------------------------------- roles and ids


def test_client_ids_are_3_5_7() -> None:
    client = SmuxSession(client=True)
    assert [client.open_stream() for _ in range(4)] == [3, 5, 7, 9]
    assert client.open_streams == frozenset({3, 5, 7, 9})
    assert [f.stream_id for f in frames_of(client.data_to_send())] == [3, 5, 7, 9]


def test_ids_not_reused_after_close() -> None:
    client = SmuxSession(client=True)
    assert client.open_stream() == 3
    client.close_stream(3)
    assert client.open_stream() == 5


def test_server_cannot_open_streams() -> None:
    server = SmuxSession(client=False)
    with pytest.raises(SmuxError):
        server.open_stream()
    assert server.error is None  # a misuse, not a dead session
    assert server.data_to_send() == b""


def test_stream_ids_exhausted() -> None:
    client = SmuxSession(client=True)
    client._next_id = 0xFFFFFFFF - 2  # white-box: skip two billion opens
    assert client.open_stream() == 0xFFFFFFFF
    with pytest.raises(SmuxError):
        client.open_stream()
    assert client.error is None
    client.send(0xFFFFFFFF, b"still usable")
    assert frames_of(client.data_to_send())[-1] == Frame(CMD_PSH, 0xFFFFFFFF, b"still usable")


def test_client_ignores_syn_from_server() -> None:
    client = SmuxSession(client=True)
    assert client.receive_data(encode_frame(CMD_SYN, 2) + encode_frame(CMD_PSH, 2, b"x")) == []
    assert client.open_streams == frozenset()


def test_role_properties() -> None:
    assert SmuxSession(client=True).client is True
    assert SmuxSession(client=False, keepalive=True).keepalive is True
    assert SmuxSession(client=False).keepalive is False


# ---------------------------------------------------------------------- client/server pairs


def test_pair_several_concurrent_streams_byte_exact() -> None:
    client = SmuxSession(client=True)
    server = SmuxSession(client=False)
    ids = [client.open_stream() for _ in range(3)]
    assert pump(client, server) == [StreamOpened(i) for i in ids]
    expected_up = {i: b"" for i in ids}
    expected_down = {i: b"" for i in ids}
    up: list[SmuxEvent] = []
    down: list[SmuxEvent] = []
    for round_ in range(5):
        for i in ids:
            chunk = bytes([i, round_]) * (i * 1000 + round_)
            client.send(i, chunk)
            expected_up[i] += chunk
            reply = chunk[::-1] + b"!"
            server.send(i, reply)
            expected_down[i] += reply
        up += pump(client, server)
        down += pump(server, client)
    assert collect(up) == expected_up
    assert collect(down) == expected_down
    client.close_stream(ids[1])
    assert pump(client, server) == [StreamClosed(ids[1])]
    assert server.open_streams == frozenset({ids[0], ids[2]})
    server.close_stream(ids[0])
    assert pump(server, client) == [StreamClosed(ids[0])]
    assert client.open_streams == frozenset({ids[2]})


def test_server_fin_after_syn_reports_closed_to_client() -> None:
    # §10.4: a failed dial ends with the agent's FIN.
    client = SmuxSession(client=True)
    server = SmuxSession(client=False)
    sid = client.open_stream()
    pump(client, server)
    server.close_stream(sid)
    assert pump(server, client) == [StreamClosed(sid)]
    client.send(sid, b"late")  # dropped: the stream is gone
    client.close_stream(sid)  # no FIN back: the peer already forgot the stream
    assert client.data_to_send() == b""


def test_close_stream_is_idempotent() -> None:
    client = SmuxSession(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.close_stream(sid)
    client.close_stream(sid)
    client.close_stream(99)
    assert client.data_to_send().hex() == FIN_3


def test_data_after_local_close_is_ignored() -> None:
    client = SmuxSession(client=True)
    sid = client.open_stream()
    client.close_stream(sid)
    late = encode_frame(CMD_PSH, sid, b"late") + encode_frame(CMD_FIN, sid)
    assert client.receive_data(late) == []


def test_send_to_unknown_stream_and_empty_send_queue_nothing() -> None:
    client = SmuxSession(client=True)
    client.open_stream()
    client.data_to_send()
    client.send(5, b"nobody")
    client.send(3, b"")
    assert client.data_to_send() == b""


def test_data_to_send_drains() -> None:
    client = SmuxSession(client=True)
    client.open_stream()
    assert client.data_to_send() != b""
    assert client.data_to_send() == b""


# ---------------------------------------------------------------------- splitting


@pytest.mark.parametrize(("size", "lengths"), [
    (1, [1]),
    (MAX_PSH - 1, [MAX_PSH - 1]),
    (MAX_PSH, [MAX_PSH]),
    (MAX_PSH + 1, [MAX_PSH, 1]),
    (100_000, [MAX_PSH] * 3 + [100_000 - 3 * MAX_PSH]),
])
def test_large_writes_split_at_32768(size: int, lengths: list[int]) -> None:
    client = SmuxSession(client=True)
    sid = client.open_stream()
    client.data_to_send()
    payload = bytes(i % 251 for i in range(size))
    client.send(sid, payload)
    frames = frames_of(client.data_to_send())
    assert [len(f.data) for f in frames] == lengths
    assert all(f.cmd == CMD_PSH and f.stream_id == sid for f in frames)
    assert b"".join(f.data for f in frames) == payload


def test_split_accepts_bytearray_and_memoryview() -> None:
    client = SmuxSession(client=True)
    sid = client.open_stream()
    client.data_to_send()
    payload = bytes(range(256)) * 300
    client.send(sid, bytearray(payload))
    client.send(sid, memoryview(payload))
    client.send(sid, memoryview(payload).cast("I"))  # counted in bytes, not items
    frames = frames_of(client.data_to_send())
    assert b"".join(f.data for f in frames) == payload * 3
    assert max(len(f.data) for f in frames) == MAX_PSH


def test_peer_frames_longer_than_32768_are_accepted() -> None:
    server = SmuxSession(client=False)
    big = b"q" * 65535
    events = server.receive_data(encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, big))
    assert events == [StreamOpened(3), StreamData(3, big)]


# ---------------------------------------------------------------------- re-chunking


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[bytes, list[SmuxEvent]]:
    """A random client byte stream (with noise frames) and the server events it must give."""
    client = SmuxSession(client=True)
    wire = bytearray()
    expected: list[SmuxEvent] = []
    open_ids: list[int] = []
    for _ in range(draw(st.integers(1, 25))):
        op = draw(st.sampled_from(["open", "send", "send", "close", "noise"]))
        if op == "open" or (op in ("send", "close") and not open_ids):
            sid = client.open_stream()
            open_ids.append(sid)
            expected.append(StreamOpened(sid))
        elif op == "send":
            sid = draw(st.sampled_from(open_ids))
            size = draw(st.sampled_from([1, 7, 1024, MAX_PSH, MAX_PSH + 3]))
            # A short random pattern stretched to size: varied bytes, little entropy.
            pattern = draw(st.binary(min_size=1, max_size=16))
            data = (pattern * (size // len(pattern) + 1))[:size]
            client.send(sid, data)
            for start in range(0, size, MAX_PSH):
                expected.append(StreamData(sid, data[start:start + MAX_PSH]))
        elif op == "close":
            sid = draw(st.sampled_from(open_ids))
            open_ids.remove(sid)
            client.close_stream(sid)
            expected.append(StreamClosed(sid))
        else:
            wire += client.data_to_send()
            wire += draw(st.sampled_from([
                encode_frame(CMD_NOP, 0),
                encode_frame(CMD_PSH, 1001, b"to nobody"),
                encode_frame(CMD_FIN, 1001),
                encode_frame(CMD_PSH, 3, b""),
            ]))
        wire += client.data_to_send()
    return bytes(wire), expected


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rechunking_gives_identical_events(data: st.DataObject) -> None:
    wire, expected = data.draw(client_streams())
    whole = SmuxSession(client=False).receive_data(wire)
    assert whole == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=40)))
    chunked = SmuxSession(client=False)
    events: list[SmuxEvent] = []
    previous = 0
    for cut in [*cuts, len(wire)]:
        events += chunked.receive_data(wire[previous:cut])
        previous = cut
    assert events == expected


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(1, 64))
def test_byte_at_a_time_and_small_chunks(payload: bytes, chunk: int) -> None:
    wire = (encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, payload)
            + encode_frame(CMD_NOP, 0) + encode_frame(CMD_FIN, 3))
    server = SmuxSession(client=False)
    events: list[SmuxEvent] = []
    for start in range(0, len(wire), chunk):
        events += server.receive_data(wire[start:start + chunk])
    assert events == [StreamOpened(3), StreamData(3, payload), StreamClosed(3)]


def test_reassembly_across_compaction_threshold() -> None:
    # 200 KB in 1000-byte cuts: the consumed prefix is dropped while a frame is pending.
    client = SmuxSession(client=True)
    server = SmuxSession(client=False)
    sid = client.open_stream()
    payload = bytes(i * 7 % 256 for i in range(200_000))
    client.send(sid, payload)
    wire = client.data_to_send()
    events: list[SmuxEvent] = []
    for start in range(0, len(wire), 1000):
        events += server.receive_data(wire[start:start + 1000])
    assert events[0] == StreamOpened(sid)
    assert collect(events) == {sid: payload}
    assert len(events) == 1 + 7  # ceil(200000 / 32768) PSH frames


def test_many_small_frames_in_one_feed() -> None:
    client = SmuxSession(client=True)
    server = SmuxSession(client=False)
    sid = client.open_stream()
    for i in range(5000):
        client.send(sid, i.to_bytes(4, "big"))
    events = pump(client, server)
    assert len(events) == 5001
    assert collect(events)[sid] == b"".join(i.to_bytes(4, "big") for i in range(5000))


# ---------------------------------------------------------------------- ignored frames


def test_unknown_stream_frames_ignored() -> None:
    server = SmuxSession(client=False)
    noise = encode_frame(CMD_PSH, 9, b"nope") + encode_frame(CMD_FIN, 11)
    assert server.receive_data(noise) == []
    assert server.receive_data(encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, b"ok")) == [
        StreamOpened(3), StreamData(3, b"ok")]
    assert server.open_streams == frozenset({3})


def test_duplicate_syn_ignored() -> None:
    server = SmuxSession(client=False)
    wire = (encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, b"a")
            + encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3, b"b"))
    assert server.receive_data(wire) == [StreamOpened(3), StreamData(3, b"a"),
                                         StreamData(3, b"b")]


def test_syn_after_fin_reopens_the_id() -> None:
    server = SmuxSession(client=False)
    server.receive_data(encode_frame(CMD_SYN, 3) + encode_frame(CMD_FIN, 3))
    assert server.receive_data(encode_frame(CMD_SYN, 3)) == [StreamOpened(3)]


def test_empty_psh_ignored() -> None:
    server = SmuxSession(client=False)
    wire = encode_frame(CMD_SYN, 3) + encode_frame(CMD_PSH, 3) + encode_frame(CMD_PSH, 3, b"x")
    assert server.receive_data(wire) == [StreamOpened(3), StreamData(3, b"x")]


@pytest.mark.parametrize("keepalive", [False, True])
def test_nops_received_are_ignored(keepalive: bool) -> None:
    session = SmuxSession(client=True, keepalive=keepalive)
    sid = session.open_stream()
    session.data_to_send()
    wire = bytes.fromhex(NOP) * 3 + encode_frame(CMD_PSH, sid, b"x") + bytes.fromhex(NOP)
    assert session.receive_data(wire, now=1.0) == [StreamData(sid, b"x")]
    assert session.data_to_send() == b""  # a NOP is never answered


# ---------------------------------------------------------------------- protocol errors


@pytest.mark.parametrize("bad", [
    encode_frame(CMD_SYN, 3, version=2),
    encode_frame(CMD_PSH, 3, b"hi", version=0),
    encode_frame(CMD_UPD, 3, b"\0" * 8),
    encode_frame(5, 3),
    encode_frame(0xFF, 0),
], ids=["v2", "v0", "UPD", "cmd5", "cmd255"])
def test_bad_frames_raise_and_kill_the_session(bad: bytes) -> None:
    with pytest.raises(SmuxError):
        decode_frame(bad)
    client = SmuxSession(client=True)
    sid = client.open_stream()
    with pytest.raises(SmuxError):
        client.receive_data(encode_frame(CMD_PSH, sid, b"before") + bad)
    assert client.error is not None
    assert client.open_streams == frozenset()
    with pytest.raises(SmuxError):
        client.receive_data(encode_frame(CMD_PSH, sid, b"after"))
    with pytest.raises(SmuxError):
        client.send(sid, b"x")
    with pytest.raises(SmuxError):
        client.open_stream()
    with pytest.raises(SmuxError):
        client.tick(1.0)
    client.close_stream(sid)  # clean-up paths need no guard
    assert client.data_to_send() == b""


def test_bad_header_raises_as_soon_as_complete() -> None:
    server = SmuxSession(client=False)
    bad = HEADER.pack(2, CMD_PSH, 100, 3)  # data never sent
    assert server.receive_data(bad[:7]) == []
    assert server.error is None
    with pytest.raises(SmuxError):
        server.receive_data(bad[7:])


def test_valid_session_has_no_error() -> None:
    server = SmuxSession(client=False)
    server.receive_data(bytes.fromhex(SYN_3 + PSH_3_HI))
    assert server.error is None
    server.tick(1000.0)  # keepalive off: no timeout


# ---------------------------------------------------------------------- keepalive


def test_keepalive_nop_every_10_seconds() -> None:
    session = SmuxSession(client=True, keepalive=True, now=100.0)
    sent_at: list[float] = []
    now = 100.0
    while now < 145.0:
        now += 0.5
        session.receive_data(bytes.fromhex(NOP), now=now)  # keep the peer "alive"
        session.tick(now)
        out = session.data_to_send()
        if out:
            assert out.hex() == NOP
            sent_at.append(now)
    assert sent_at == [110.0, 120.0, 130.0, 140.0]


def test_keepalive_nop_after_late_tick() -> None:
    session = SmuxSession(client=False, keepalive=True, now=0.0)
    session.tick(9.99)
    assert session.data_to_send() == b""
    session.tick(17.0)
    assert session.data_to_send().hex() == NOP
    session.tick(26.0)
    assert session.data_to_send() == b""
    session.receive_data(bytes.fromhex(NOP), now=26.5)
    session.tick(27.0)
    assert session.data_to_send().hex() == NOP


def test_keepalive_timeout_after_30_seconds_of_silence() -> None:
    session = SmuxSession(client=True, keepalive=True, now=50.0)
    session.open_stream()
    session.tick(79.9)
    assert session.error is None
    with pytest.raises(SmuxError, match="keepalive"):
        session.tick(80.0)
    assert session.error is not None
    assert session.open_streams == frozenset()
    with pytest.raises(SmuxError):
        session.tick(81.0)
    with pytest.raises(SmuxError):
        session.receive_data(bytes.fromhex(NOP))


def test_keepalive_timeout_counts_from_last_frame() -> None:
    session = SmuxSession(client=True, keepalive=True, now=0.0)
    session.tick(10.0)
    session.receive_data(bytes.fromhex(NOP), now=20.0)
    session.tick(49.9)
    with pytest.raises(SmuxError):
        session.tick(50.0)


def test_keepalive_arrival_without_now_is_stamped_by_next_tick() -> None:
    session = SmuxSession(client=True, keepalive=True, now=0.0)
    session.tick(5.0)
    session.receive_data(bytes.fromhex(NOP))  # arrived some time after 5.0
    session.tick(25.0)  # stamped 25.0: never earlier than the real arrival
    session.tick(54.9)
    with pytest.raises(SmuxError):
        session.tick(55.0)


def test_partial_frame_header_counts_as_activity() -> None:
    session = SmuxSession(client=True, keepalive=True, now=0.0)
    sid = session.open_stream()
    wire = encode_frame(CMD_PSH, sid, b"x" * 100)
    session.receive_data(wire[:8], now=29.0)  # header in, data still arriving
    session.tick(58.0)
    session.receive_data(wire[8:20], now=58.5)
    session.tick(88.0)
    assert session.receive_data(wire[20:], now=88.2) == [StreamData(sid, b"x" * 100)]
    session.tick(118.1)


def test_less_than_a_header_is_not_activity() -> None:
    session = SmuxSession(client=True, keepalive=True, now=0.0)
    session.receive_data(bytes.fromhex(NOP)[:5], now=20.0)
    with pytest.raises(SmuxError):
        session.tick(30.0)


def test_keepalive_disabled_sends_no_nop_and_never_times_out() -> None:
    session = SmuxSession(client=True, keepalive=False, now=0.0)
    session.open_stream()
    session.data_to_send()
    for now in range(1, 400, 3):
        session.tick(float(now))
    assert session.data_to_send() == b""
    assert session.error is None
    assert session.open_streams == frozenset({3})


# ---------------------------------------------------------------------- events


def test_stream_data_repr_hides_payload() -> None:
    assert "secret" not in repr(StreamData(3, b"secret"))
    assert "3" in repr(StreamData(3, b"secret"))


def test_events_are_frozen() -> None:
    event = StreamOpened(3)
    with pytest.raises(AttributeError):
        event.stream_id = 5  # type: ignore[misc]


def test_struct_header_layout() -> None:
    assert HEADER.size == 8
    assert HEADER.format == "<BBHI"
