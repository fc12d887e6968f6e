"""Cipher known-answer tests (PROTOCOL.md §18.3) and role symmetry (§8.3, §8.5)."""

from __future__ import annotations

import pytest

from ssmshell.protocol.cipher import AGENT, CLIENT, OVERHEAD, Cipher
from ssmshell.protocol.errors import CipherError
from ssmshell.protocol.payloads import PayloadType

KEY = bytes(range(64))
NONCE = bytes(range(12))


def test_known_answer_client_to_agent() -> None:
    blob = Cipher(KEY, CLIENT).encrypt(b"ls -la\r", nonce=NONCE)
    assert blob.hex() == (
        "000102030405060708090a0b30217d8a2654e6fe3363ee54570cc27eea4467789edddf")
    assert len(blob) == 7 + OVERHEAD


def test_known_answer_agent_to_client() -> None:
    blob = Cipher(KEY, AGENT).encrypt(b"hello\r\n", nonce=NONCE)
    assert blob.hex() == (
        "000102030405060708090a0b2f67ba77aae8c89300047a31533ff9d4164be444aedcfa")


def test_each_side_decrypts_the_other() -> None:
    client, agent = Cipher(KEY, CLIENT), Cipher(KEY, AGENT)
    assert agent.decrypt(client.encrypt(b"keystrokes")) == b"keystrokes"
    assert client.decrypt(agent.encrypt(b"output")) == b"output"


def test_a_side_cannot_decrypt_its_own_output() -> None:
    client = Cipher(KEY, CLIENT)
    with pytest.raises(CipherError):
        client.decrypt(client.encrypt(b"x"))


def test_tampered_or_short_blob_is_a_cipher_error() -> None:
    blob = bytearray(Cipher(KEY, AGENT).encrypt(b"data"))
    blob[-1] ^= 1
    with pytest.raises(CipherError):
        Cipher(KEY, CLIENT).decrypt(bytes(blob))
    with pytest.raises(CipherError):
        Cipher(KEY, CLIENT).decrypt(b"short")


def test_key_size_and_role_checked() -> None:
    with pytest.raises(CipherError):
        Cipher(KEY[:32], CLIENT)
    with pytest.raises(CipherError):
        Cipher(KEY, "service")


def test_encrypted_payload_types_per_direction() -> None:
    client, agent = Cipher(KEY, CLIENT), Cipher(KEY, AGENT)
    assert {t for t in PayloadType if client.encrypts(t)} == {PayloadType.OUTPUT}
    assert {t for t in PayloadType if agent.encrypts(t)} == {
        PayloadType.OUTPUT, PayloadType.STDERR, PayloadType.EXIT_CODE}
    assert {t for t in PayloadType if client.decrypts(t)} == {
        t for t in PayloadType if agent.encrypts(t)}
    assert not client.encrypts(PayloadType.SIZE)
    assert not client.encrypts(PayloadType.FLAG)


@pytest.mark.parametrize("role", [AGENT, CLIENT])
def test_nonces_are_a_little_endian_counter_from_a_random_start(role: str) -> None:
    cipher = Cipher(KEY, role)
    first = cipher.encrypt(b"a")[:12]
    second = cipher.encrypt(b"b")[:12]
    assert int.from_bytes(second, "little") == (int.from_bytes(first, "little") + 1) % 2**96
    assert Cipher(KEY, role).encrypt(b"a")[:12] != first  # a fresh random start


def test_the_counter_wraps_at_96_bits() -> None:
    cipher = Cipher(KEY, CLIENT, nonces=None)
    cipher._nonces._value = 2**96 - 1  # type: ignore[attr-defined]
    assert cipher.encrypt(b"a")[:12] == b"\xff" * 12
    assert cipher.encrypt(b"a")[:12] == bytes(12)


def test_repr_hides_key() -> None:
    assert KEY.hex() not in repr(Cipher(KEY, CLIENT))
