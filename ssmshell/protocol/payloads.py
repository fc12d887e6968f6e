"""Payload shapes: PayloadType values, flags and the JSON bodies of §3.2, §5, §7, §8, §9.

Every ``to_bytes`` emits compact JSON with the keys in the reference code's
order; every ``from_bytes`` checks the types the spec gives and raises
:class:`PayloadError` otherwise.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from ssmshell.protocol.errors import PayloadError


class PayloadType(enum.IntEnum):
    """PayloadType header values (§4.4)."""

    NONE = 0
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


class Flag(enum.IntEnum):
    """Flag payload values (§4.5), sent as a 4-byte big-endian integer."""

    DISCONNECT_TO_PORT = 1
    TERMINATE_SESSION = 2
    CONNECT_TO_PORT_ERROR = 3


class SessionType(str, enum.Enum):
    """Session plugin names (§9, §10)."""

    STANDARD_STREAM = "Standard_Stream"
    INTERACTIVE_COMMANDS = "InteractiveCommands"
    NON_INTERACTIVE_COMMANDS = "NonInteractiveCommands"
    PORT = "Port"


class ActionStatus(enum.IntEnum):
    """ProcessedClientAction.ActionStatus (§7.3)."""

    SUCCESS = 1
    FAILED = 2
    UNSUPPORTED = 3


ACTION_SESSION_TYPE = "SessionType"
ACTION_KMS_ENCRYPTION = "KMSEncryption"
KMS_CUSTOMER_MESSAGE = "This session is encrypted using AWS KMS."

_FLAG = struct.Struct(">I")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _loads_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError(f"{what}: not JSON") from exc
    if not isinstance(obj, dict):
        raise PayloadError(f"{what}: not a JSON object")
    return obj


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str,
         *, optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise PayloadError(f"{what}: missing {key}")
    value = obj[key]
    # bool is an int subclass; never accept it where a number is meant.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise PayloadError(f"{what}: {key} has the wrong type")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


# --------------------------------------------------------------------------- flags


def encode_flag(flag: int) -> bytes:
    """Flag payload (§4.5): 4-byte big-endian unsigned integer."""
    return _FLAG.pack(flag)


def decode_flag(payload: bytes) -> int:
    """Parse a Flag payload.

    Raises:
        PayloadError: the payload is not exactly 4 bytes.
    """
    if len(payload) != 4:
        raise PayloadError(f"Flag payload must be 4 bytes, got {len(payload)}")
    value: int = _FLAG.unpack(payload)[0]
    return value


# --------------------------------------------------------------------------- exit code

_EXIT_CODE = re.compile(rb"\AEXIT_CODE: (-?[0-9]{1,10})\Z")


def encode_exit_code(code: int) -> bytes:
    """ExitCode payload (§9.3): ASCII ``EXIT_CODE: <n>`` without newline."""
    return b"EXIT_CODE: %d" % code


def decode_exit_code(payload: bytes) -> int:
    """Parse an ExitCode payload.

    Raises:
        PayloadError: not ``EXIT_CODE: `` followed by a decimal.
    """
    match = _EXIT_CODE.match(payload.strip())
    if match is None:
        raise PayloadError("ExitCode payload is not 'EXIT_CODE: <n>'")
    return int(match.group(1))


# --------------------------------------------------------------------------- size


@dataclass(frozen=True, slots=True)
class Size:
    """Terminal size (§9.4), ``{"cols":…,"rows":…}``."""

    cols: int
    rows: int

    def to_bytes(self) -> bytes:
        return _dumps({"cols": self.cols, "rows": self.rows})

    @classmethod
    def from_bytes(cls, data: bytes) -> Size:
        obj = _loads_object(data, "Size")
        cols = _get(obj, "cols", int, "Size")
        rows = _get(obj, "rows", int, "Size")
        if not (0 <= cols < 2**32 and 0 <= rows < 2**32):
            raise PayloadError("Size: out of range")
        return cls(cols, rows)


# --------------------------------------------------------------------------- acknowledge


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """``acknowledge`` payload (§5.2). Receivers use only the sequence number."""

    acknowledged_message_type: str
    acknowledged_message_id: str
    acknowledged_message_sequence_number: int
    is_sequential_message: bool = True

    def to_bytes(self) -> bytes:
        # What _dumps makes, formatted directly: acks are the most frequent message,
        # and json.dumps costs several times more (docs/PERFORMANCE.md).
        return (_ACK_FORMAT % (
            encode_basestring(self.acknowledged_message_type),
            encode_basestring(self.acknowledged_message_id),
            int(self.acknowledged_message_sequence_number),
            "true" if self.is_sequential_message else "false")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Acknowledge:
        match = _ACK_CANONICAL.fullmatch(data)
        if match is not None:  # what the agent and the plugin send; the rest goes to json
            kind, mid, seq, sequential = match.groups()
            return cls(kind.decode(), mid.decode(), int(seq), sequential == b"true")
        obj = _loads_object(data, "acknowledge")
        return cls(
            _get(obj, "AcknowledgedMessageType", str, "acknowledge", optional=True) or "",
            _get(obj, "AcknowledgedMessageId", str, "acknowledge", optional=True) or "",
            _get(obj, "AcknowledgedMessageSequenceNumber", int, "acknowledge"),
            bool(_get(obj, "IsSequentialMessage", bool, "acknowledge", optional=True)),
        )


_ACK_FORMAT = ('{"AcknowledgedMessageType":%s,"AcknowledgedMessageId":%s,'
               '"AcknowledgedMessageSequenceNumber":%d,"IsSequentialMessage":%s}')
_ACK_CANONICAL = re.compile(
    rb'\{"AcknowledgedMessageType":"([a-z_]{0,32})","AcknowledgedMessageId":"([0-9a-f-]{0,36})",'
    rb'"AcknowledgedMessageSequenceNumber":(0|-?[1-9][0-9]{0,17}),'
    rb'"IsSequentialMessage":(true|false)\}')


# --------------------------------------------------------------------------- channel_closed


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """``channel_closed`` payload (§5.3); ``output`` is the human-readable reason."""

    message_id: str
    created_date: str
    destination_id: str
    session_id: str
    output: str = ""
    message_type: str = "channel_closed"
    schema_version: int = 1

    def to_bytes(self) -> bytes:
        return _dumps({
            "MessageId": self.message_id,
            "CreatedDate": self.created_date,
            "DestinationId": self.destination_id,
            "SessionId": self.session_id,
            "MessageType": self.message_type,
            "SchemaVersion": self.schema_version,
            "Output": self.output,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> ChannelClosed:
        obj = _loads_object(data, "channel_closed")

        def text(key: str) -> str:
            value = obj.get(key)
            return value if isinstance(value, str) else "" if value is None else str(value)

        version = obj.get("SchemaVersion", 1)
        return cls(
            message_id=text("MessageId"),
            created_date=text("CreatedDate"),
            destination_id=text("DestinationId"),
            session_id=text("SessionId"),
            output=text("Output"),
            message_type=text("MessageType") or "channel_closed",
            schema_version=version if isinstance(version, int) else 1,
        )


# --------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class RequestedClientAction:
    """One entry of HandshakeRequest.RequestedClientActions (§7.2)."""

    action_type: str
    action_parameters: Any

    def to_json(self) -> dict[str, Any]:
        return {"ActionType": self.action_type, "ActionParameters": self.action_parameters}


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """HandshakeRequest (PayloadType 5, agent → client, §7.2)."""

    agent_version: str
    requested_client_actions: tuple[RequestedClientAction, ...]

    @classmethod
    def build(
        cls,
        agent_version: str,
        session_type: str,
        properties: dict[str, Any] | None = None,
        kms_key_id: str | None = None,
        challenge: str | None = None,
    ) -> HandshakeRequest:
        """The agent's request: SessionType, then KMSEncryption when encrypting."""
        actions = [RequestedClientAction(
            ACTION_SESSION_TYPE, {"SessionType": session_type, "Properties": properties})]
        if kms_key_id is not None:
            params: dict[str, Any] = {"KMSKeyId": kms_key_id}
            if challenge is not None:
                params["Challenge"] = challenge
            actions.append(RequestedClientAction(ACTION_KMS_ENCRYPTION, params))
        return cls(agent_version, tuple(actions))

    def to_bytes(self) -> bytes:
        return _dumps({
            "AgentVersion": self.agent_version,
            "RequestedClientActions": [a.to_json() for a in self.requested_client_actions],
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> HandshakeRequest:
        what = "HandshakeRequest"
        obj = _loads_object(data, what)
        version = _get(obj, "AgentVersion", str, what, optional=True) or ""
        raw = _get(obj, "RequestedClientActions", list, what, optional=True) or []
        actions = []
        for item in raw:
            if not isinstance(item, dict):
                raise PayloadError(f"{what}: action is not an object")
            actions.append(RequestedClientAction(
                _get(item, "ActionType", str, what), item.get("ActionParameters")))
        return cls(version, tuple(actions))


@dataclass(frozen=True, slots=True)
class SessionTypeParameters:
    """ActionParameters of the SessionType action."""

    session_type: str
    properties: dict[str, Any] | None

    @classmethod
    def from_json(cls, params: Any) -> SessionTypeParameters:
        what = "SessionType action"
        if not isinstance(params, dict):
            raise PayloadError(f"{what}: parameters are not an object")
        props = params.get("Properties")
        if props is not None and not isinstance(props, dict):
            raise PayloadError(f"{what}: Properties is not an object")
        return cls(_get(params, "SessionType", str, what), props)


@dataclass(frozen=True, slots=True)
class KMSEncryptionParameters:
    """ActionParameters of the KMSEncryption action (note the spelling ``KMSKeyId``)."""

    kms_key_id: str
    challenge: str | None = None

    @classmethod
    def from_json(cls, params: Any) -> KMSEncryptionParameters:
        what = "KMSEncryption action"
        if not isinstance(params, dict):
            raise PayloadError(f"{what}: parameters are not an object")
        return cls(
            _get(params, "KMSKeyId", str, what),
            _get(params, "Challenge", str, what, optional=True) or None,
        )


@dataclass(frozen=True, slots=True)
class ProcessedClientAction:
    """One entry of HandshakeResponse.ProcessedClientActions (§7.3)."""

    action_type: str
    action_status: int
    action_result: Any = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ActionType": self.action_type,
            "ActionStatus": self.action_status,
            "ActionResult": self.action_result,
            "Error": self.error,
        }


def kms_action_result(ciphertext_blob_b64: str, challenge_acknowledged: bool) -> dict[str, Any]:
    """KMSEncryption ActionResult (§7.3, §8.6)."""
    result: dict[str, Any] = {"KMSCipherTextKey": ciphertext_blob_b64, "KMSCipherTextHash": None}
    if challenge_acknowledged:
        result["ChallengeAcknowledgement"] = True
    return result


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """HandshakeResponse (PayloadType 6, client → agent, §7.3)."""

    client_version: str
    processed_client_actions: tuple[ProcessedClientAction, ...]
    errors: tuple[str, ...] | None = None

    def to_bytes(self) -> bytes:
        return _dumps({
            "ClientVersion": self.client_version,
            "ProcessedClientActions": [a.to_json() for a in self.processed_client_actions],
            "Errors": list(self.errors) if self.errors is not None else None,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> HandshakeResponse:
        what = "HandshakeResponse"
        obj = _loads_object(data, what)
        actions = []
        for item in _get(obj, "ProcessedClientActions", list, what, optional=True) or []:
            if not isinstance(item, dict):
                raise PayloadError(f"{what}: action is not an object")
            actions.append(ProcessedClientAction(
                _get(item, "ActionType", str, what),
                _get(item, "ActionStatus", int, what, optional=True) or 0,
                item.get("ActionResult"),
                _get(item, "Error", str, what, optional=True) or "",
            ))
        errors = _get(obj, "Errors", list, what, optional=True)
        return cls(
            _get(obj, "ClientVersion", str, what, optional=True) or "",
            tuple(actions),
            tuple(str(e) for e in errors) if errors is not None else None,
        )


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """HandshakeComplete (PayloadType 7, §7.5); the duration is Go nanoseconds."""

    handshake_time_to_complete: int
    customer_message: str = ""

    def to_bytes(self) -> bytes:
        return _dumps({
            "HandshakeTimeToComplete": self.handshake_time_to_complete,
            "CustomerMessage": self.customer_message,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> HandshakeComplete:
        what = "HandshakeComplete"
        obj = _loads_object(data, what)
        return cls(
            _get(obj, "HandshakeTimeToComplete", int, what, optional=True) or 0,
            _get(obj, "CustomerMessage", str, what, optional=True) or "",
        )


@dataclass(frozen=True, slots=True)
class EncChallenge:
    """EncChallengeRequest (8) and EncChallengeResponse (9): ``{"Challenge":"<base64>"}``."""

    challenge: str

    def to_bytes(self) -> bytes:
        return _dumps({"Challenge": self.challenge})

    @classmethod
    def from_bytes(cls, data: bytes) -> EncChallenge:
        return cls(_get(_loads_object(data, "EncChallenge"), "Challenge", str, "EncChallenge"))


# --------------------------------------------------------------------------- OpenDataChannel


@dataclass(frozen=True, slots=True)
class OpenDataChannel:
    """The first (text) websocket frame (§3.2). The token never appears in ``repr``."""

    request_id: str
    token_value: str = field(repr=False)
    client_id: str | None = None
    client_version: str | None = None
    message_schema_version: str = "1.0"

    def to_text(self) -> str:
        obj: dict[str, Any] = {
            "MessageSchemaVersion": self.message_schema_version,
            "RequestId": self.request_id,
            "TokenValue": self.token_value,
        }
        if self.client_id is not None:
            obj["ClientId"] = self.client_id
        if self.client_version is not None:
            obj["ClientVersion"] = self.client_version
        return json.dumps(obj, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str | bytes) -> OpenDataChannel:
        what = "OpenDataChannel"
        obj = _loads_object(text.encode() if isinstance(text, str) else text, what)
        return cls(
            request_id=_get(obj, "RequestId", str, what, optional=True) or "",
            token_value=_get(obj, "TokenValue", str, what),
            client_id=_get(obj, "ClientId", str, what, optional=True),
            client_version=_get(obj, "ClientVersion", str, what, optional=True),
            message_schema_version=_get(obj, "MessageSchemaVersion", str, what,
                                        optional=True) or "1.0",
        )
