"""AES-256-GCM payload encryption with a KMS data key (PROTOCOL.md §8).

The 64-byte data key is split in two AES-256 keys (§8.3):

==========  ===================  ===================
bytes       agent uses it to     client uses it to
==========  ===================  ===================
0..31       encrypt              decrypt
32..63      decrypt              encrypt
==========  ===================  ===================

Wire format of an encrypted payload: ``nonce(12) ‖ ciphertext ‖ tag(16)``, no AAD.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ssmshell.protocol.errors import CipherError
from ssmshell.protocol.payloads import PayloadType

DATA_KEY_SIZE = 64
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE

CLIENT = "client"
AGENT = "agent"

#: Which PayloadTypes each role encrypts (and the other decrypts), §8.5.
ENCRYPTED_BY = {
    CLIENT: frozenset({PayloadType.OUTPUT}),
    AGENT: frozenset({PayloadType.OUTPUT, PayloadType.STDERR, PayloadType.EXIT_CODE}),
}


class _CounterNonces:
    """Nonces as the agent makes them (§8.4): a 96-bit little-endian counter from a
    random start."""

    def __init__(self, start: bytes) -> None:
        self._value = int.from_bytes(start, "little")

    def __call__(self) -> bytes:
        nonce = self._value.to_bytes(NONCE_SIZE, "little")
        self._value = (self._value + 1) % (1 << (8 * NONCE_SIZE))
        return nonce


class Cipher:
    """Encrypts and decrypts payloads for one role of one session.

    Args:
        data_key: the 64-byte plaintext data key from KMS GenerateDataKey / Decrypt.
        role: ``"client"`` or ``"agent"``; decides which half encrypts.
        nonces: a source of 12-byte nonces; defaults to the agent's counter (§8.4)
            for both roles. The plugin draws 12 random bytes per message instead;
            receivers take whatever the first 12 bytes are, and a counter from a
            random start never repeats under the session's fresh data key (the
            deterministic construction of NIST SP 800-38D, §8.2.1), without a
            ``getrandom`` call on every keystroke (docs/PERFORMANCE.md).

    Raises:
        CipherError: the data key is not 64 bytes or the role is unknown.
    """

    def __init__(
        self,
        data_key: bytes,
        role: str,
        nonces: Callable[[], bytes] | None = None,
    ) -> None:
        if len(data_key) != DATA_KEY_SIZE:
            raise CipherError(f"data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")
        first, second = data_key[:32], data_key[32:]
        if role == CLIENT:
            enc, dec = second, first
        elif role == AGENT:
            enc, dec = first, second
        else:
            raise CipherError(f"unknown role {role!r}")
        self.role = role
        self._encryptor = AESGCM(enc)
        self._decryptor = AESGCM(dec)
        self._nonces = nonces or _CounterNonces(os.urandom(NONCE_SIZE))

    def __repr__(self) -> str:  # never show key material
        return f"Cipher(role={self.role!r})"

    def encrypts(self, payload_type: int) -> bool:
        """Whether this role encrypts outgoing payloads of ``payload_type`` (§8.5)."""
        return payload_type in ENCRYPTED_BY[self.role]

    def decrypts(self, payload_type: int) -> bool:
        """Whether incoming payloads of ``payload_type`` arrive encrypted (§8.5)."""
        peer = AGENT if self.role == CLIENT else CLIENT
        return payload_type in ENCRYPTED_BY[peer]

    def encrypt(self, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        """Encrypt with this role's encrypt key.

        Args:
            plaintext: payload bytes.
            nonce: a fixed 12-byte nonce (known-answer tests); normally drawn.

        Returns:
            ``nonce ‖ ciphertext ‖ tag``.
        """
        nonce = self._nonces() if nonce is None else nonce
        if len(nonce) != NONCE_SIZE:
            raise CipherError("nonce must be 12 bytes")
        return nonce + self._encryptor.encrypt(nonce, plaintext, None)

    def decrypt(self, blob: bytes) -> bytes:
        """Decrypt a peer's ``nonce ‖ ciphertext ‖ tag`` with this role's decrypt key.

        Raises:
            CipherError: the blob is too short or fails authentication.
        """
        if len(blob) < OVERHEAD:
            raise CipherError("encrypted payload shorter than nonce and tag")
        try:
            return self._decryptor.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], None)
        except InvalidTag as exc:
            raise CipherError("payload failed AES-GCM authentication") from exc
