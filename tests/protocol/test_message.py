"""Codec tests: the official client's vectors, the spec's worked examples, malformed input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmshell.protocol import message as m
from ssmshell.protocol.errors import DigestMismatch, MalformedMessage, ProtocolError

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "client_messages.json").read_text())


def wid(text: str) -> bytes:
    """A MessageId written as text, in wire order."""
    return m.wire_id(uuid.UUID(text))


def test_all_eleven_vectors_present() -> None:
    assert len(VECTORS) == 11


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_listed_fields(vector: dict[str, Any]) -> None:
    fields = vector["fields"]
    msg = m.decode(bytes.fromhex(vector["hex"]))
    assert msg.header_length == fields["HeaderLength"]
    assert msg.message_type == fields["MessageType"]
    assert msg.schema_version == fields["SchemaVersion"]
    assert msg.created_date == fields["CreatedDate"]
    assert msg.sequence_number == fields["SequenceNumber"]
    assert msg.flags == fields["Flags"]
    assert str(msg.message_id) == fields["MessageId"]
    assert msg.payload_digest.hex() == fields["PayloadDigest"]
    assert msg.payload_type == fields["PayloadType"]
    assert len(msg.payload) == fields["PayloadLength"]
    assert msg.payload.hex() == fields["PayloadHex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes_from_fields_byte_for_byte(vector: dict[str, Any]) -> None:
    fields = vector["fields"]
    msg = m.Message(
        message_type=fields["MessageType"],
        sequence_number=fields["SequenceNumber"],
        flags=fields["Flags"],
        wire_id=m.wire_id(uuid.UUID(fields["MessageId"])),
        payload_type=fields["PayloadType"],
        payload=bytes.fromhex(fields["PayloadHex"]),
        created_date=fields["CreatedDate"],
        schema_version=fields["SchemaVersion"],
    )
    assert msg.encode().hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_from_the_send_path_byte_for_byte(vector: dict[str, Any]) -> None:
    """m.frame, which DataChannel sends with, makes the official client's bytes too."""
    fields = vector["fields"]
    assert fields["HeaderLength"] == m.HEADER_LENGTH
    frame = m.frame(m.type_field(fields["MessageType"]), fields["SequenceNumber"],
                    fields["Flags"], m.wire_id(uuid.UUID(fields["MessageId"])),
                    fields["PayloadType"], bytes.fromhex(fields["PayloadHex"]),
                    fields["CreatedDate"])
    assert frame.hex() == vector["hex"]


def test_random_ids_are_version_4_uuids() -> None:
    drawn = m.random_ids(block=8)
    ids = {m.random_id() for _ in range(100)} | {next(drawn) for _ in range(100)}
    assert len(ids) == 200
    for raw in ids:
        mid = uuid.UUID(bytes=raw[8:] + raw[:8])
        assert mid.version == 4
        assert mid.variant == uuid.RFC_4122


SPEC_ACK_HEX = (  # PROTOCOL.md §18.1
    "0000007461636b6e6f776c65646765202020202020202020202020202020202020202020000000010000018b"
    "cfe5680000000000000000000000000000000003a16570867728950e0f8fad5bd9cb469fbb487a3f076aac75"
    "c3a35b6e402d2e44ccdd9844ac4e5b2007e8b4ac8f1d8f3100000000000000b07b2241636b6e6f776c656467"
    "65644d65737361676554797065223a226f75747075745f73747265616d5f64617461222c2241636b6e6f776c"
    "65646765644d6573736167654964223a2264643031653536622d666634382d343833652d613530382d623566"
    "303733663331623136222c2241636b6e6f776c65646765644d65737361676553657175656e63654e756d6265"
    "72223a372c22497353657175656e7469616c4d657373616765223a747275657d"
)


def test_spec_worked_example_acknowledge() -> None:
    payload = (b'{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":'
               b'"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":7,'
               b'"IsSequentialMessage":true}')
    msg = m.Message(m.ACKNOWLEDGE, 0, 3, wid("0f8fad5b-d9cb-469f-a165-70867728950e"), 0,
                    payload, 1700000000000)
    assert msg.encode().hex() == SPEC_ACK_HEX


def test_spec_worked_example_input_stream_data() -> None:
    # PROTOCOL.md §18.2
    expected = (
        "00000074696e7075745f73747265616d5f64617461202020202020202020202020202020000000010000018b"
        "cfe5687b00000000000000010000000000000000944be07fc1f90ae77c9e6679742540debee73bd50eb0edee"
        "3592c11e8d8f965d45e0ec95e7659a7a9b35c42f864a3e7500000001000000076c73202d6c610d"
    )
    msg = m.Message(m.INPUT_STREAM_DATA, 1, 0, wid("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
                    1, b"ls -la\r", 1700000000123)
    assert msg.encode().hex() == expected


def test_message_id_halves_are_swapped() -> None:
    msg = m.Message(m.ACKNOWLEDGE, 0, 3, wid("dd01e56b-ff48-483e-a508-b5f073f31b16"), 0,
                    b"", 1)
    assert msg.encode()[64:80].hex() == "a508b5f073f31b16dd01e56bff48483e"


def test_message_id_reads_back_from_the_wire_order() -> None:
    text = "dd01e56b-ff48-483e-a508-b5f073f31b16"
    msg = m.decode(m.Message(m.ACKNOWLEDGE, 0, 3, wid(text), 0, b"", 1).encode())
    assert msg.message_id == uuid.UUID(text)
    assert msg.message_id_text == text


@given(st.binary(min_size=16, max_size=16))
def test_id_text_is_the_uuid_text(raw: bytes) -> None:
    assert m.id_text(raw) == str(uuid.UUID(bytes=raw[8:] + raw[:8]))


@pytest.mark.parametrize("size", [0, 1, 29, m.SMALL_PAYLOAD, m.SMALL_PAYLOAD + 1, 5000])
def test_digest_is_sha256_on_both_sides_of_the_small_payload_cut(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert m.digest(payload) == hashlib.sha256(payload).digest()


def test_empty_payload_digest() -> None:
    msg = m.Message(m.ACKNOWLEDGE, 0, 3, m.random_id(), 0, b"", 1)
    assert msg.encode()[80:112] == hashlib.sha256(b"").digest()


def _frame(payload: bytes = b"hello", **kw: Any) -> bytes:
    return m.Message(m.OUTPUT_STREAM_DATA, 0, 1, m.random_id(), 1, payload, 123, **kw).encode()


def test_header_length_112_without_payload_type() -> None:
    frame = m.Message(m.CHANNEL_CLOSED, 0, 0, m.random_id(), 0, b'{"Output":""}', 5,
                      header_length=112).encode(nul_padded=True)
    assert len(frame) == 116 + 13
    msg = m.decode(frame)
    assert msg.message_type == "channel_closed"
    assert msg.header_length == 112
    assert msg.payload == b'{"Output":""}'


def test_decoder_follows_a_longer_header_length() -> None:
    frame = bytearray(_frame(b"abc"))
    # HeaderLength 120: PayloadLength moves to offset 120, 4 extra header bytes.
    longer = bytes(frame[:116]) + b"\0\0\0\0" + bytes(frame[116:])
    longer = struct.pack(">I", 120) + longer[4:]
    assert m.decode(longer).payload == b"abc"


def test_nul_padded_message_type() -> None:
    assert m.decode(_frame(), ).message_type == "output_stream_data"
    frame = m.Message(m.OUTPUT_STREAM_DATA, 0, 1, m.random_id(), 1, b"x", 9).encode(
        nul_padded=True)
    assert b"\0" in frame[4:36]
    assert m.decode(frame).message_type == "output_stream_data"
    assert m.peek_type(frame) == m.OUTPUT_STREAM_DATA  # padding either way


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_peek_type_agrees_with_decode(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    assert m.peek_type(frame) == m.decode(frame).message_type
    assert m.peek_type(frame[:4] + b"\xff" * 32 + frame[36:]) not in m.STREAM_MESSAGE_TYPES
    assert m.is_acknowledge(frame) == (m.decode(frame).message_type == m.ACKNOWLEDGE)


@pytest.mark.parametrize("nul_padded", [False, True])
def test_is_acknowledge_either_padding(nul_padded: bool) -> None:
    ack = m.Message(m.ACKNOWLEDGE, 0, 3, m.random_id(), 0, b"{}", 9).encode(nul_padded=nul_padded)
    assert m.is_acknowledge(ack)
    assert not m.is_acknowledge(ack[:4] + b"acknowledgeX" + ack[16:])
    assert not m.is_acknowledge(_frame())


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda f: f[:100], MalformedMessage),
        (lambda f: struct.pack(">I", 100) + f[4:], MalformedMessage),
        (lambda f: struct.pack(">I", 10_000) + f[4:], MalformedMessage),
        (lambda f: f[:40] + b"\0" * 8 + f[48:], MalformedMessage),  # CreatedDate 0
        (lambda f: f[:4] + b" " * 32 + f[36:], MalformedMessage),  # empty type
        (lambda f: f[:4] + b"\xff" * 32 + f[36:], MalformedMessage),  # not ASCII
        (lambda f: f[:116] + struct.pack(">I", 99) + f[120:], MalformedMessage),
        (lambda f: f[:-1] + bytes([f[-1] ^ 1]), DigestMismatch),
    ],
)
def test_malformed_frames_raise_typed_errors(mutate: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        m.decode(mutate(_frame()))


def test_digest_check_can_be_skipped_like_the_agent() -> None:
    frame = _frame()
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    assert m.decode(bad, verify_digest=False).payload == b"helln"


def test_publication_messages_skip_validation() -> None:
    frame = m.Message(m.PAUSE_PUBLICATION, 0, 0, m.random_id(), 0, b"", 1).encode()
    odd = struct.pack(">I", 0) + frame[4:40] + b"\0" * 8 + frame[48:]
    assert m.decode(odd).message_type == m.PAUSE_PUBLICATION


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(MalformedMessage):
        m.Message("x" * 33, 0, 0, m.random_id(), 0, b"", 1).encode()
    with pytest.raises(MalformedMessage):
        m.Message(m.INPUT_STREAM_DATA, 2**63, 0, m.random_id(), 0, b"", 1).encode()
    with pytest.raises(MalformedMessage):
        m.Message("ümlaut", 0, 0, m.random_id(), 0, b"", 1).encode()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_typed_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        m.decode(data)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from([bytes.fromhex(v["hex"]) for v in VECTORS]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    st.integers(0, 400),
)
def test_mutated_vectors_decode_or_raise_typed_error(
    frame: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(frame)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    try:
        msg = m.decode(bytes(data[: len(data) - cut]))
    except ProtocolError:
        return
    assert isinstance(msg.payload, bytes)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(m.STREAM_MESSAGE_TYPES | {m.ACKNOWLEDGE, m.CHANNEL_CLOSED})),
    st.integers(0, 2**63 - 1), st.integers(0, 2**64 - 1), st.uuids(),
    st.integers(0, 2**32 - 1), st.binary(max_size=2048), st.integers(1, 2**64 - 1),
)
def test_roundtrip(kind: str, seq: int, flags: int, mid: uuid.UUID, ptype: int, payload: bytes,
                   created: int) -> None:
    msg = m.Message(kind, seq, flags, m.wire_id(mid), ptype, payload, created)
    assert m.decode(msg.encode()) == msg
    assert m.frame(m.type_field(kind), seq, flags, m.wire_id(mid), ptype, payload,
                   created) == msg.encode()
