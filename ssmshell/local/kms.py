"""A local KMS whose ciphertext really binds the encryption context (PROTOCOL.md §8.1, §8.2).

A data key's ciphertext blob is the key sealed with AES-256-GCM under a
per-key master secret that never leaves this process, with the canonical JSON
of the sorted encryption context (and the key id) as associated data::

    blob = 0x01 ‖ len(key_id) (1 byte) ‖ key_id (ASCII) ‖ nonce (12) ‖ ciphertext ‖ tag (16)

So Decrypt with any other context (a missing, extra or changed pair) fails
with ``InvalidCiphertextException`` and no message, as real KMS does. This is
what catches a wrong ``aws:ssm:TargetId`` or a forgotten
``aws:ssm:RandomChallenge`` (§8.6, §15 item 5).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ssmshell.local.config import KmsKey, LocalConfig

_BLOB_VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key|alias)/(.+)$")
KEY_SPECS = {"AES_256": 32, "AES_128": 16}


class KmsError(Exception):
    """A KMS error with its AWS code and message (the message may be empty).

    ``str()`` is ``"<code>: <message>"`` or just ``"<code>"``; it never contains
    key material.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KmsCall:
    """One call the local KMS served (for tests): never plaintext or blobs."""

    operation: str
    key_id: str
    encryption_context: dict[str, str] = field(default_factory=dict)


def canonical_context(context: dict[str, str] | None) -> bytes:
    """The encryption context as compact JSON with sorted keys (the AAD)."""
    return json.dumps(context or {}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


class LocalKms:
    """The keys of a :class:`LocalConfig`, with GenerateDataKey and Decrypt.

    Args:
        config: the fake world (its ``keys``, region and account).

    Attributes:
        fail_decrypt: fault knob — every Decrypt raises InvalidCiphertextException.
        calls: every served call, in order (operation, key id, context).
    """

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.fail_decrypt = False
        #: Tests set this to collect every plaintext data key, to prove none leaks.
        self.keep_data_keys = False
        self.issued_data_keys: list[bytes] = []
        self.calls: list[KmsCall] = []
        self._secrets: dict[str, bytes] = {}

    # ------------------------------------------------------------------ keys

    def key_arn(self, key: KmsKey) -> str:
        """``arn:aws:kms:<region>:<account>:key/<id>``."""
        return self.config.key_arn(key)

    def resolve(self, key_id: str) -> KmsKey:
        """A key by id, key ARN, alias name (``alias/x``) or alias ARN.

        Raises:
            KmsError: ``NotFoundException`` with KMS's wording.
        """
        region, account = self.config.region, self.config.account_id
        match = _KEY_ARN.match(key_id)
        if match is not None:
            kind, name = match.group(3), match.group(4)
            if (match.group(1), match.group(2)) != (region, account):
                raise KmsError("NotFoundException", f"Key '{key_id}' does not exist"
                               if kind == "key" else f"Alias {key_id} is not found.")
            key_id = name if kind == "key" else f"alias/{name}"
        if key_id.startswith("alias/"):
            for key in self.config.keys:
                if key.alias == key_id:
                    return key
            raise KmsError("NotFoundException",
                           f"Alias arn:aws:kms:{region}:{account}:{key_id} is not found.")
        for key in self.config.keys:
            if key.key_id == key_id:
                return key
        if key_id.startswith("arn:") or not re.match(r"^[0-9a-zA-Z-]{1,2048}$", key_id):
            raise KmsError("NotFoundException", f"Invalid keyId '{key_id}'")
        raise KmsError("NotFoundException",
                       f"Key 'arn:aws:kms:{region}:{account}:key/{key_id}' does not exist")

    def authorize(self, key: KmsKey, action: str) -> None:
        """Refuse unusable keys like a key policy that does not allow the caller.

        Raises:
            KmsError: ``AccessDeniedException`` naming ``action`` (e.g. ``kms:Decrypt``).
        """
        if not key.usable:
            raise KmsError(
                "AccessDeniedException",
                f"User: {self.config.caller_arn} is not authorized to perform: {action} "
                f"on resource: {self.key_arn(key)} because no identity-based policy "
                f"allows the {action} action")

    def _secret(self, key: KmsKey) -> bytes:
        secret = self._secrets.get(key.key_id)
        if secret is None:
            secret = self._secrets[key.key_id] = AESGCM.generate_key(bit_length=256)
        return secret

    @staticmethod
    def _aad(key_id: bytes, context: dict[str, str] | None) -> bytes:
        return key_id + b"\x00" + canonical_context(context)

    @staticmethod
    def _check_context(context: dict[str, str] | None) -> dict[str, str]:
        if context is None:
            return {}
        if not isinstance(context, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
            raise KmsError("ValidationException", "1 validation error detected: Value at "
                           "'encryptionContext' failed to satisfy constraint: Map keys and "
                           "values must be strings")
        return dict(context)

    # ------------------------------------------------------------------ operations

    def generate_data_key(self, key_id: str, number_of_bytes: int,
                          encryption_context: dict[str, str] | None) -> tuple[bytes, bytes]:
        """kms:GenerateDataKey.

        Args:
            key_id: key id, key ARN, alias name or alias ARN.
            number_of_bytes: 1..1024 (ssmshell asks for 64, §8.1).
            encryption_context: string pairs the blob is bound to.

        Returns:
            ``(plaintext, ciphertext_blob)``.

        Raises:
            KmsError: NotFoundException, AccessDeniedException, ValidationException.
        """
        context = self._check_context(encryption_context)
        key = self.resolve(key_id)
        self.authorize(key, "kms:GenerateDataKey")
        if isinstance(number_of_bytes, bool) or not 1 <= number_of_bytes <= 1024:
            raise KmsError("ValidationException",
                           f"1 validation error detected: Value '{number_of_bytes}' at "
                           "'numberOfBytes' failed to satisfy constraint: Member must have "
                           "value between 1 and 1024")
        self.calls.append(KmsCall("GenerateDataKey", key.key_id, context))
        plaintext = os.urandom(number_of_bytes)
        if self.keep_data_keys:
            self.issued_data_keys.append(plaintext)
        nonce = os.urandom(_NONCE_SIZE)
        kid = key.key_id.encode("ascii")
        sealed = AESGCM(self._secret(key)).encrypt(nonce, plaintext, self._aad(kid, context))
        blob = bytes([_BLOB_VERSION, len(kid)]) + kid + nonce + sealed
        return plaintext, blob

    def decrypt_with_key(self, blob: bytes, encryption_context: dict[str, str] | None,
                         key_id: str | None = None) -> tuple[bytes, KmsKey]:
        """Like :meth:`decrypt`, also returning the key that sealed the blob."""
        context = self._check_context(encryption_context)
        wanted = self.resolve(key_id) if key_id else None
        self.calls.append(KmsCall("Decrypt", wanted.key_id if wanted else "", context))
        if self.fail_decrypt:
            raise KmsError("InvalidCiphertextException")
        parsed = self._parse(bytes(blob))
        if parsed is None:
            raise KmsError("InvalidCiphertextException")
        kid, nonce, sealed = parsed
        key = next((k for k in self.config.keys if k.key_id.encode("ascii") == kid), None)
        if key is None or key.key_id not in self._secrets:
            raise KmsError("InvalidCiphertextException")  # not made by this KMS
        if wanted is not None and wanted.key_id != key.key_id:
            raise KmsError("IncorrectKeyException", "The key ID in the request does not "
                           "identify a CMK that can perform this operation.")
        self.authorize(key, "kms:Decrypt")
        try:
            plaintext = AESGCM(self._secret(key)).decrypt(nonce, sealed, self._aad(kid, context))
        except InvalidTag:
            raise KmsError("InvalidCiphertextException") from None
        return plaintext, key

    def decrypt(self, blob: bytes, encryption_context: dict[str, str] | None,
                key_id: str | None = None) -> bytes:
        """kms:Decrypt: the data key in ``blob`` if ``encryption_context`` is exactly its own.

        Args:
            blob: a ciphertext blob from :meth:`generate_data_key`.
            encryption_context: must equal the one used to generate it.
            key_id: optional; must identify the key that made the blob.

        Returns:
            The plaintext data key.

        Raises:
            KmsError: InvalidCiphertextException (any mismatch, a foreign or damaged
                blob, or :attr:`fail_decrypt`), IncorrectKeyException,
                NotFoundException, AccessDeniedException.
        """
        return self.decrypt_with_key(blob, encryption_context, key_id)[0]

    @staticmethod
    def _parse(blob: bytes) -> tuple[bytes, bytes, bytes] | None:
        if len(blob) < 2 or blob[0] != _BLOB_VERSION:
            return None
        size = blob[1]
        start = 2 + size
        if size == 0 or len(blob) < start + _NONCE_SIZE + _TAG_SIZE:
            return None
        return blob[2:start], blob[start:start + _NONCE_SIZE], blob[start + _NONCE_SIZE:]
