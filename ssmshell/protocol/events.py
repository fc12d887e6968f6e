"""Events the :class:`~ssmshell.protocol.state.DataChannel` hands to its session.

They are plain frozen dataclasses; a session reacts to them and never looks
inside the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamData:
    """Bytes of the peer's stream, in order: Output (1) or StdErr (11), already decrypted."""

    payload_type: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ExitCode:
    """The remote command's exit status (``EXIT_CODE: n``, §9.3)."""

    code: int


@dataclass(frozen=True, slots=True)
class SizeChanged:
    """Agent role: the client's terminal size (§9.4)."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class FlagReceived:
    """A Flag payload (§4.5)."""

    flag: int


@dataclass(frozen=True, slots=True)
class DataKeyRequested:
    """Client role: call kms:GenerateDataKey, then ``provide_data_key`` (§8.1).

    The ack of the HandshakeRequest has already been queued, so the agent
    will not retransmit while the KMS call runs (§7.3).
    """

    kms_key_id: str
    encryption_context: dict[str, str]
    number_of_bytes: int = 64


@dataclass(frozen=True, slots=True)
class DataKeyToDecrypt:
    """Agent role: call kms:Decrypt on the client's blob, then ``provide_data_key`` (§8)."""

    kms_key_id: str
    ciphertext_blob: bytes = field(repr=False)
    encryption_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The session-type handler may start: HandshakeComplete arrived/was sent, or the
    agent skipped the handshake and its first Output arrived (§7.1)."""

    session_type: str
    properties: dict[str, Any] | None
    agent_version: str
    client_version: str
    customer_message: str
    encrypted: bool
    handshake: bool


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The handshake failed; the session cannot continue. ``reason`` is safe to show."""

    reason: str


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """``channel_closed`` from the service (§5.3); ``output`` is the reason, often empty."""

    session_id: str
    output: str


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame was dropped without an ack (malformed, bad digest, unknown type, buffer full)."""

    reason: str


Event = (
    StreamData | ExitCode | SizeChanged | FlagReceived | DataKeyRequested | DataKeyToDecrypt
    | SessionStarted | HandshakeFailed | ChannelClosed | FrameDropped
)
