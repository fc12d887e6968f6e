"""The protocol core's typed errors.

Everything the core raises on bad input derives from :class:`ProtocolError`, so
callers never see ``IndexError``, ``struct.error`` or ``UnicodeDecodeError``
from peer-controlled bytes.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error the protocol core raises."""


class MalformedMessage(ProtocolError):
    """A frame that cannot be decoded as a data-channel message (PROTOCOL.md §4)."""


class DigestMismatch(MalformedMessage):
    """A frame whose PayloadDigest is not the SHA-256 of its payload (§4.2.8)."""


class PayloadError(ProtocolError):
    """A payload whose JSON or binary shape is not the one the spec gives (§5, §7, §8, §9)."""


class CipherError(ProtocolError):
    """AES-GCM decryption failed or a key has the wrong size (§8)."""


class HandshakeError(ProtocolError):
    """The handshake or the encryption challenge failed (§7, §8.5)."""


class SmuxError(ProtocolError):
    """An invalid smux v1 frame (§10.4); it ends the smux session."""
