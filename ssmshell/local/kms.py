"""A local KMS: GenerateDataKey and Decrypt that really bind the encryption context (§8.1, §8.2).

The ciphertext blob is the data key sealed with AES-GCM under a per-key master
secret, with the canonical JSON of the encryption context as associated data;
so Decrypt with any other context fails, exactly as KMS does, with
``InvalidCiphertextException``. This is what catches a wrong TargetId.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ssmshell.local.config import KmsKey, LocalConfig

_BLOB_VERSION = b"\x01"


class KmsError(Exception):
    """A KMS error with its AWS code; ``str()`` is ``"<code>: <message>"``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class LocalKms:
    """Keys from :class:`LocalConfig`; master secrets live only in this process."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self._secrets: dict[str, bytes] = {}
        self.fail_decrypt = False
        self.calls: list[str] = []

    def key_arn(self, key: KmsKey) -> str:
        return f"arn:aws:kms:{self.config.region}:{self.config.account_id}:key/{key.key_id}"

    def find(self, key_id: str, action: str) -> KmsKey:
        """Look a key up by id, ARN, alias name or alias ARN.

        Raises:
            KmsError: NotFoundException, or AccessDeniedException for unusable keys.
        """
        name = key_id
        if name.startswith("arn:"):
            name = name.split(":", 5)[-1]  # key/<id> or alias/<name>
            if name.startswith("key/"):
                name = name[4:]
        for key in self.config.keys:
            if name in (key.key_id, key.alias):
                if not key.usable:
                    raise KmsError(
                        "AccessDeniedException",
                        f"User: {self.config.caller_arn} is not authorized to perform: "
                        f"{action} on resource: {self.key_arn(key)} because no "
                        f"identity-based policy allows the {action} action")
                return key
        arn = key_id if key_id.startswith("arn:") else (
            f"arn:aws:kms:{self.config.region}:{self.config.account_id}:"
            + (key_id if key_id.startswith("alias/") else f"key/{key_id}"))
        raise KmsError("NotFoundException", f"Key '{arn}' does not exist")

    def _secret(self, key: KmsKey) -> bytes:
        if key.key_id not in self._secrets:
            self._secrets[key.key_id] = AESGCM.generate_key(bit_length=256)
        return self._secrets[key.key_id]

    @staticmethod
    def _aad(context: dict[str, str] | None) -> bytes:
        return json.dumps(context or {}, sort_keys=True, separators=(",", ":")).encode()

    def generate_data_key(self, key_id: str, number_of_bytes: int,
                          context: dict[str, str] | None) -> tuple[bytes, bytes, str]:
        """Returns ``(plaintext, ciphertext_blob, key_arn)``."""
        self.calls.append("GenerateDataKey")
        key = self.find(key_id, "kms:GenerateDataKey")
        if not 1 <= number_of_bytes <= 1024:
            raise KmsError("ValidationException",
                           "1 validation error detected: Value at 'numberOfBytes' failed to "
                           "satisfy constraint: Member must have value less than or equal to 1024")
        plaintext = os.urandom(number_of_bytes)
        nonce = os.urandom(12)
        sealed = AESGCM(self._secret(key)).encrypt(nonce, plaintext, self._aad(context))
        blob = _BLOB_VERSION + key.key_id.encode().ljust(36, b" ") + nonce + sealed
        return plaintext, blob, self.key_arn(key)

    def decrypt(self, blob: bytes, context: dict[str, str] | None,
                key_id: str | None = None) -> bytes:
        """The data key inside ``blob``, if ``context`` is the one it was made with.

        Raises:
            KmsError: InvalidCiphertextException (any mismatch), IncorrectKeyException,
                NotFoundException, AccessDeniedException.
        """
        self.calls.append("Decrypt")
        if self.fail_decrypt or len(blob) < 1 + 36 + 12 + 16 or blob[:1] != _BLOB_VERSION:
            raise KmsError("InvalidCiphertextException")
        blob_key = blob[1:37].decode(errors="replace").strip()
        key = self.find(blob_key, "kms:Decrypt")
        if key_id is not None and self.find(key_id, "kms:Decrypt").key_id != key.key_id:
            raise KmsError("IncorrectKeyException",
                           "The key ID in the request does not identify a CMK that can "
                           "perform this operation.")
        try:
            return AESGCM(self._secret(key)).decrypt(blob[37:49], blob[49:], self._aad(context))
        except InvalidTag:
            raise KmsError("InvalidCiphertextException") from None
