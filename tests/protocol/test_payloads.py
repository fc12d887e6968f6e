"""Payload shapes (PROTOCOL.md §3.2, §4.5, §5, §7, §8.5, §9): exact JSON and round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmshell.protocol import message as m
from ssmshell.protocol.errors import PayloadError
from ssmshell.protocol.payloads import (
    ACTION_KMS_ENCRYPTION,
    ACTION_SESSION_TYPE,
    Acknowledge,
    ActionStatus,
    ChannelClosed,
    EncChallenge,
    Flag,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    KMSEncryptionParameters,
    OpenDataChannel,
    PayloadType,
    ProcessedClientAction,
    RequestedClientAction,
    SessionTypeParameters,
    Size,
    decode_exit_code,
    decode_flag,
    encode_exit_code,
    encode_flag,
    kms_action_result,
)

VECTORS: dict[str, dict[str, Any]] = {
    v["name"]: v
    for v in json.loads((Path(__file__).parent.parent / "data" / "client_messages.json")
                        .read_text())
}


def vector_payload(name: str) -> bytes:
    """The payload bytes of a vector, taken from its full frame (not from the field list)."""
    return m.decode(bytes.fromhex(VECTORS[name]["hex"])).payload


# --------------------------------------------------------------------------- PayloadType / Flag


def test_payload_type_values_match_the_table() -> None:  # §4.4
    assert [(t.name, t.value) for t in PayloadType] == [
        ("NONE", 0), ("OUTPUT", 1), ("ERROR", 2), ("SIZE", 3), ("PARAMETER", 4),
        ("HANDSHAKE_REQUEST", 5), ("HANDSHAKE_RESPONSE", 6), ("HANDSHAKE_COMPLETE", 7),
        ("ENC_CHALLENGE_REQUEST", 8), ("ENC_CHALLENGE_RESPONSE", 9), ("FLAG", 10),
        ("STDERR", 11), ("EXIT_CODE", 12)]


def test_flag_terminate_session_is_00000002() -> None:  # §18.3
    assert encode_flag(Flag.TERMINATE_SESSION).hex() == "00000002"
    assert encode_flag(Flag.DISCONNECT_TO_PORT).hex() == "00000001"
    assert encode_flag(Flag.CONNECT_TO_PORT_ERROR).hex() == "00000003"


@pytest.mark.parametrize("flag", [0, 1, 2, 3, 0xFFFFFFFF])
def test_flag_round_trip(flag: int) -> None:
    assert decode_flag(encode_flag(flag)) == flag


def test_flag_vector_payload() -> None:
    assert decode_flag(vector_payload("input_flag_terminate_session")) == Flag.TERMINATE_SESSION


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x02", b"\x00\x00\x00\x02\x00", b"2"])
def test_flag_wrong_length_rejected(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_flag(payload)


# --------------------------------------------------------------------------- ExitCode


@pytest.mark.parametrize(("payload", "code"), [
    (b"EXIT_CODE: 0", 0),
    (b"EXIT_CODE: 1", 1),
    (b"EXIT_CODE: 255", 255),
    (b"EXIT_CODE: -1", -1),
    (b"EXIT_CODE: -2147483648", -2147483648),
    (b"EXIT_CODE: 3\n", 3),
])
def test_exit_code_parse(payload: bytes, code: int) -> None:
    assert decode_exit_code(payload) == code


@pytest.mark.parametrize("code", [0, 1, 2, 127, -1, -15])
def test_exit_code_round_trip(code: int) -> None:
    encoded = encode_exit_code(code)
    assert encoded == f"EXIT_CODE: {code}".encode()
    assert decode_exit_code(encoded) == code


@pytest.mark.parametrize("payload", [
    b"", b"EXIT_CODE:", b"EXIT_CODE: ", b"EXIT_CODE: x", b"EXIT_CODE: 1x", b"EXIT_CODE: 1 2",
    b"exit_code: 1", b"EXIT_CODE:1", b"EXIT_CODE: --1", b"EXIT_CODE: 1.5", b"1",
    b"EXIT_CODE: 12345678901", b"\xff\xfe", b"EXIT_CODE: \xd9\xa1",
])
def test_exit_code_garbage_rejected(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_exit_code(payload)


# --------------------------------------------------------------------------- Size


def test_size_exact_bytes() -> None:  # §18.3
    assert Size(120, 40).to_bytes().hex() == "7b22636f6c73223a3132302c22726f7773223a34307d"


def test_size_vector() -> None:
    payload = vector_payload("input_size_120x40")
    assert Size.from_bytes(payload) == Size(120, 40)
    assert Size(120, 40).to_bytes() == payload


@pytest.mark.parametrize("size", [Size(0, 0), Size(300, 100), Size(2**32 - 1, 1)])
def test_size_round_trip(size: Size) -> None:
    assert Size.from_bytes(size.to_bytes()) == size


@pytest.mark.parametrize("payload", [
    b'{"cols":"120","rows":40}',  # cols as a string
    b'{"cols":120,"rows":"40"}',
    b'{"cols":true,"rows":40}',  # bool where an int is meant
    b'{"cols":120,"rows":false}',
    b'{"cols":120.5,"rows":40}',
    b'{"cols":120}',
    b'{"rows":40}',
    b'{"cols":null,"rows":40}',
    b'{"cols":-1,"rows":40}',
    b'{"cols":4294967296,"rows":40}',
    b"[120,40]",  # not an object
    b'"cols"',
    b"120",
    b"null",
    b"",
    b"{",
    b'{"cols":120,"rows":40}\xff',  # invalid UTF-8
    b"\xff\xfe{}",
])
def test_size_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        Size.from_bytes(payload)


# --------------------------------------------------------------------------- acknowledge


SPEC_ACK = (b'{"AcknowledgedMessageType":"output_stream_data",'
            b'"AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16",'
            b'"AcknowledgedMessageSequenceNumber":7,"IsSequentialMessage":true}')


def test_acknowledge_spec_example() -> None:  # §5.2 / §18.1
    ack = Acknowledge("output_stream_data", "dd01e56b-ff48-483e-a508-b5f073f31b16", 7)
    assert ack.to_bytes() == SPEC_ACK
    assert len(SPEC_ACK) == 176
    assert Acknowledge.from_bytes(SPEC_ACK) == ack


@pytest.mark.parametrize("name", ["acknowledge_handshake_request", "acknowledge_output_seq2"])
def test_acknowledge_vectors(name: str) -> None:
    payload = vector_payload(name)
    ack = Acknowledge.from_bytes(payload)
    expected = VECTORS[name].get("extra", {}).get("AcknowledgeContent") or json.loads(payload)
    assert ack.acknowledged_message_type == expected["AcknowledgedMessageType"]
    assert ack.acknowledged_message_id == expected["AcknowledgedMessageId"]
    assert ack.acknowledged_message_sequence_number == (
        expected["AcknowledgedMessageSequenceNumber"])
    assert ack.is_sequential_message is True
    assert ack.to_bytes() == payload


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.integers(-2**63, 2**63 - 1), st.booleans())
def test_acknowledge_fast_paths_agree_with_json(kind: str, mid: str, seq: int,
                                                sequential: bool) -> None:
    """to_bytes formats directly and from_bytes matches the canonical form by regex;
    both must give exactly what the json module gives."""
    ack = Acknowledge(kind, mid, seq, sequential)
    by_json = json.dumps({"AcknowledgedMessageType": kind, "AcknowledgedMessageId": mid,
                          "AcknowledgedMessageSequenceNumber": seq,
                          "IsSequentialMessage": sequential},
                         separators=(",", ":"), ensure_ascii=False).encode()
    assert ack.to_bytes() == by_json
    assert Acknowledge.from_bytes(by_json) == ack
    spaced = json.dumps(json.loads(by_json), indent=1).encode()  # not canonical: json path
    assert Acknowledge.from_bytes(spaced) == ack


def test_acknowledge_only_sequence_number_is_required() -> None:  # §5.2
    ack = Acknowledge.from_bytes(b'{"AcknowledgedMessageSequenceNumber":3}')
    assert ack.acknowledged_message_sequence_number == 3


@pytest.mark.parametrize("payload", [
    b'{"AcknowledgedMessageSequenceNumber":"3"}',
    b'{"AcknowledgedMessageSequenceNumber":true}',
    b'{"AcknowledgedMessageSequenceNumber":3.0}',
    b'{"AcknowledgedMessageType":"output_stream_data"}',
    b'{"AcknowledgedMessageType":5,"AcknowledgedMessageSequenceNumber":3}',
    b"[]",
    b"\xc3\x28",
    b"",
])
def test_acknowledge_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        Acknowledge.from_bytes(payload)


# --------------------------------------------------------------------------- channel_closed


def test_channel_closed_vector() -> None:  # §5.3
    payload = vector_payload("channel_closed")
    closed = ChannelClosed.from_bytes(payload)
    assert closed == ChannelClosed(
        message_id="e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7",
        created_date="2023-11-14T22:13:20.000Z",
        destination_id="i-0123456789abcdef0",
        session_id="vectors-session-0123456789abcdef0",
        output="",
    )
    assert closed.message_type == "channel_closed"
    assert closed.schema_version == 1
    assert closed.to_bytes() == payload  # same keys in the same order, compact


def test_channel_closed_key_order_and_round_trip() -> None:
    closed = ChannelClosed("id", "1700000000000", "i-1", "s-1", output="bye")
    raw = closed.to_bytes()
    assert raw == (b'{"MessageId":"id","CreatedDate":"1700000000000","DestinationId":"i-1",'
                   b'"SessionId":"s-1","MessageType":"channel_closed","SchemaVersion":1,'
                   b'"Output":"bye"}')
    assert ChannelClosed.from_bytes(raw) == closed


def test_channel_closed_tolerates_a_numeric_created_date() -> None:  # §5.3: opaque
    closed = ChannelClosed.from_bytes(b'{"CreatedDate":1700000000000,"SessionId":"s","Output":"x"}')
    assert closed.created_date == "1700000000000"
    assert (closed.session_id, closed.output) == ("s", "x")


@pytest.mark.parametrize("payload", [b"[]", b"", b"nope", b"\xff"])
def test_channel_closed_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        ChannelClosed.from_bytes(payload)


# --------------------------------------------------------------------------- HandshakeRequest


def test_handshake_request_vector() -> None:  # §7.2
    payload = vector_payload("agent_handshake_request")
    request = HandshakeRequest.from_bytes(payload)
    assert request.agent_version == "3.3.1142.0"
    assert request.requested_client_actions == (RequestedClientAction(
        "SessionType", {"SessionType": "Standard_Stream", "Properties": None}),)
    assert request.to_bytes() == payload
    assert HandshakeRequest.build("3.3.1142.0", "Standard_Stream").to_bytes() == payload


def test_handshake_request_build_with_kms_orders_actions_and_keys() -> None:
    request = HandshakeRequest.build("3.3.987.0", "Standard_Stream", None, "alias/k", "Q0hBTA==")
    assert request.to_bytes() == (
        b'{"AgentVersion":"3.3.987.0","RequestedClientActions":['
        b'{"ActionType":"SessionType","ActionParameters":'
        b'{"SessionType":"Standard_Stream","Properties":null}},'
        b'{"ActionType":"KMSEncryption","ActionParameters":'
        b'{"KMSKeyId":"alias/k","Challenge":"Q0hBTA=="}}]}')
    parsed = HandshakeRequest.from_bytes(request.to_bytes())
    assert parsed == request
    kms = KMSEncryptionParameters.from_json(parsed.requested_client_actions[1].action_parameters)
    assert kms == KMSEncryptionParameters("alias/k", "Q0hBTA==")


def test_handshake_request_build_without_challenge() -> None:
    request = HandshakeRequest.build("3.3.987.0", "Standard_Stream", None, "arn:k")
    assert request.requested_client_actions[1] == RequestedClientAction(
        ACTION_KMS_ENCRYPTION, {"KMSKeyId": "arn:k"})
    assert KMSEncryptionParameters.from_json({"KMSKeyId": "arn:k"}).challenge is None


def test_handshake_request_port_example() -> None:  # §7.2 example, byte for byte
    spec = (b'{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType",'
            b'"ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"0",'
            b'"portNumber":"80","type":"LocalPortForwarding"}}}]}')
    props = {"localPortNumber": "0", "portNumber": "80", "type": "LocalPortForwarding"}
    assert HandshakeRequest.build("3.3.987.0", "Port", props).to_bytes() == spec
    request = HandshakeRequest.from_bytes(spec)
    params = SessionTypeParameters.from_json(request.requested_client_actions[0].action_parameters)
    assert params == SessionTypeParameters("Port", props)


@pytest.mark.parametrize("payload", [
    b'{"AgentVersion":1,"RequestedClientActions":[]}',
    b'{"AgentVersion":"1","RequestedClientActions":{}}',
    b'{"AgentVersion":"1","RequestedClientActions":["SessionType"]}',
    b'{"AgentVersion":"1","RequestedClientActions":[{"ActionType":7}]}',
    b'{"AgentVersion":"1","RequestedClientActions":[{"ActionParameters":{}}]}',
    b"[1]",
    b"\xed\xa0\x80",  # a UTF-16 surrogate, invalid UTF-8
])
def test_handshake_request_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        HandshakeRequest.from_bytes(payload)


@pytest.mark.parametrize("params", [
    None, [], "x", {"SessionType": 1}, {"Properties": None},
    {"SessionType": "Port", "Properties": [1]},
])
def test_session_type_parameters_reject(params: Any) -> None:
    with pytest.raises(PayloadError):
        SessionTypeParameters.from_json(params)


@pytest.mark.parametrize("params", [
    None, "k", {}, {"KMSKeyId": None}, {"KMSKeyId": 5}, {"KMSKeyId": "k", "Challenge": 5},
])
def test_kms_parameters_reject(params: Any) -> None:
    with pytest.raises(PayloadError):
        KMSEncryptionParameters.from_json(params)


# --------------------------------------------------------------------------- HandshakeResponse


def test_handshake_response_vector() -> None:  # §7.3
    payload = vector_payload("handshake_response")
    built = HandshakeResponse(
        "1.2.677.0", (ProcessedClientAction("SessionType", ActionStatus.SUCCESS),))
    assert built.to_bytes() == payload
    assert HandshakeResponse.from_bytes(payload) == built


def test_handshake_response_encrypted_shell_example() -> None:  # §7.3 example
    response = HandshakeResponse("1.2.650.0", (
        ProcessedClientAction(ACTION_SESSION_TYPE, ActionStatus.SUCCESS),
        ProcessedClientAction(ACTION_KMS_ENCRYPTION, ActionStatus.SUCCESS,
                              kms_action_result("AQIDAHh", False)),
    ))
    assert response.to_bytes() == (
        b'{"ClientVersion":"1.2.650.0","ProcessedClientActions":[{"ActionType":"SessionType",'
        b'"ActionStatus":1,"ActionResult":null,"Error":""},{"ActionType":"KMSEncryption",'
        b'"ActionStatus":1,"ActionResult":{"KMSCipherTextKey":"AQIDAHh","KMSCipherTextHash":null},'
        b'"Error":""}],"Errors":null}')
    assert HandshakeResponse.from_bytes(response.to_bytes()) == response


def test_kms_action_result_with_challenge_acknowledgement() -> None:  # §8.6
    assert kms_action_result("QkxPQg==", True) == {
        "KMSCipherTextKey": "QkxPQg==", "KMSCipherTextHash": None,
        "ChallengeAcknowledgement": True}
    assert list(kms_action_result("x", True)) == [
        "KMSCipherTextKey", "KMSCipherTextHash", "ChallengeAcknowledgement"]


def test_handshake_response_errors_round_trip() -> None:
    response = HandshakeResponse("1.2.677.0", (
        ProcessedClientAction("Bogus", ActionStatus.UNSUPPORTED, None, "nope"),), ("e1", "e2"))
    raw = response.to_bytes()
    assert raw.endswith(b'"Errors":["e1","e2"]}')
    assert HandshakeResponse.from_bytes(raw) == response


@pytest.mark.parametrize("payload", [
    b'{"ClientVersion":1,"ProcessedClientActions":[]}',
    b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":"SessionType",'
    b'"ActionStatus":"1"}]}',
    b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":"SessionType",'
    b'"ActionStatus":true}]}',
    b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionStatus":1}]}',
    b'{"ClientVersion":"1","ProcessedClientActions":[3]}',
    b'{"ClientVersion":"1","ProcessedClientActions":{}}',
    b'{"ClientVersion":"1","ProcessedClientActions":[],"Errors":"x"}',
    b"true",
    b'{"ClientVersion":"\xff"}',
])
def test_handshake_response_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        HandshakeResponse.from_bytes(payload)


# --------------------------------------------------------------------------- HandshakeComplete


def test_handshake_complete_vector() -> None:  # §7.5
    payload = vector_payload("agent_handshake_complete")
    complete = HandshakeComplete.from_bytes(payload)
    assert complete == HandshakeComplete(1_000_000, "")
    assert complete.to_bytes() == payload
    assert payload == b'{"HandshakeTimeToComplete":1000000,"CustomerMessage":""}'


def test_handshake_complete_round_trip_with_message() -> None:
    complete = HandshakeComplete(123_456_789, "This session is encrypted using AWS KMS.")
    assert HandshakeComplete.from_bytes(complete.to_bytes()) == complete


@pytest.mark.parametrize("payload", [
    b'{"HandshakeTimeToComplete":"1","CustomerMessage":""}',
    b'{"HandshakeTimeToComplete":true,"CustomerMessage":""}',
    b'{"HandshakeTimeToComplete":1,"CustomerMessage":5}',
    b"[]",
    b"\x80",
])
def test_handshake_complete_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        HandshakeComplete.from_bytes(payload)


# --------------------------------------------------------------------------- EncChallenge


def test_enc_challenge_round_trip() -> None:  # §8.5
    challenge = EncChallenge("AAECAw==")
    assert challenge.to_bytes() == b'{"Challenge":"AAECAw=="}'
    assert EncChallenge.from_bytes(challenge.to_bytes()) == challenge


@pytest.mark.parametrize("payload", [
    b"{}", b'{"Challenge":null}', b'{"Challenge":1}', b'{"Challenge":["a"]}', b'"x"', b"\xff",
])
def test_enc_challenge_rejects_wrong_shapes(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        EncChallenge.from_bytes(payload)


# --------------------------------------------------------------------------- OpenDataChannel


def test_open_data_channel_key_order_and_compact() -> None:  # §3.2
    frame = OpenDataChannel("5e1c", "AAEAAf-secret", "c0ffee", "1.2.650.0")
    text = frame.to_text()
    assert text == ('{"MessageSchemaVersion":"1.0","RequestId":"5e1c","TokenValue":"AAEAAf-secret",'
                    '"ClientId":"c0ffee","ClientVersion":"1.2.650.0"}')
    assert list(json.loads(text)) == [
        "MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"]
    assert OpenDataChannel.from_text(text) == frame
    assert OpenDataChannel.from_text(text.encode()) == frame


def test_open_data_channel_optional_keys_omitted() -> None:
    frame = OpenDataChannel("r", "t")
    assert frame.to_text() == '{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t"}'
    assert OpenDataChannel.from_text(frame.to_text()) == frame


def test_open_data_channel_token_not_in_repr() -> None:  # §16.22
    frame = OpenDataChannel("req-1", "TOPSECRET-token-value", "cid", "1.2.677.0")
    assert "TOPSECRET" not in repr(frame)
    assert "TOPSECRET" not in str(frame)
    assert "req-1" in repr(frame)


def test_open_data_channel_ignores_unknown_keys() -> None:  # §3.2: the agent adds one
    text = '{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientInstanceId":"i"}'
    assert OpenDataChannel.from_text(text) == OpenDataChannel("r", "t")


@pytest.mark.parametrize("text", [
    '{"MessageSchemaVersion":"1.0","RequestId":"r"}',
    '{"TokenValue":5}',
    '{"TokenValue":"t","ClientId":7}',
    '{"TokenValue":"t","RequestId":false}',
    '["TokenValue"]',
    "",
    b'{"TokenValue":"\xff"}',
])
def test_open_data_channel_rejects_wrong_shapes(text: str | bytes) -> None:
    with pytest.raises(PayloadError):
        OpenDataChannel.from_text(text)


# --------------------------------------------------------------------------- generic


@pytest.mark.parametrize("parse", [
    Size.from_bytes, Acknowledge.from_bytes, ChannelClosed.from_bytes, HandshakeRequest.from_bytes,
    HandshakeResponse.from_bytes, HandshakeComplete.from_bytes, EncChallenge.from_bytes,
])
@pytest.mark.parametrize("payload", [
    b"", b"[]", b"1", b'"s"', b"null", b"\xff\xff", b"[" * 100_000, b"1" * 5000, b"{'a':1}",
])
def test_non_object_json_is_a_payload_error(parse: Any, payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse(payload)
