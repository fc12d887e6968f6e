"""channel.py's websocket connections: binary messages straight to a handler, read into
the connection's own buffer, over plain TCP and over TLS (AWS's StreamUrl is wss://)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ssmshell.channel import READ_BUFFER, binary_handler_connection, write_frames


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = folder / "cert.pem", folder / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_binary_messages_come_whole_through_the_connections_own_read_buffer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: bool) -> None:
    """Messages of one byte to more than the read buffer, echoed by a server made of the
    gateway's connection class, arrive whole and in order at the client's ``on_binary``;
    both ends read only through their one buffer (asyncio.BufferedProtocol), through
    asyncio's TLS layer too."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    buffers: dict[str, set[int]] = {"client": set(), "server": set()}
    for side, seen in buffers.items():
        connection = binary_handler_connection(side)
        own = connection.get_buffer

        def get_buffer(self: Any, sizehint: int, own: Any = own, seen: set[int] = seen
                       ) -> memoryview:
            buffer: memoryview = own(self, sizehint)
            seen.add(id(buffer))
            return buffer

        monkeypatch.setattr(connection, "get_buffer", get_buffer)
        # A plain read would bypass the buffer: make it fail loudly instead.
        monkeypatch.setattr(connection, "data_received", _guard(connection.data_received),
                            raising=False)
    server_ssl = client_ssl = None
    if tls:
        cert, key = self_signed(tmp_path)
        server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ssl.load_cert_chain(cert, key)
        client_ssl = ssl.create_default_context(cafile=str(cert))
    messages = [os.urandom(size) for size in (1, 145, 70_000, READ_BUFFER + 12_345, 3)]

    async def echo(ws: Any) -> None:
        ws.on_binary = lambda data: write_frames(ws, [data])
        await ws.wait_closed()

    async def main() -> list[bytes]:
        async with serve(echo, "127.0.0.1", 0, ssl=server_ssl, compression=None,
                         max_size=None, create_connection=binary_handler_connection("server")
                         ) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
            async with connect(url, ssl=client_ssl, compression=None, max_size=None,
                               create_connection=binary_handler_connection()) as ws:
                received: asyncio.Queue[bytes] = asyncio.Queue()
                ws.on_binary = received.put_nowait
                out = []
                for message in messages:
                    await ws.send(message)
                    out.append(await asyncio.wait_for(received.get(), 10))
                return out

    assert asyncio.run(main()) == messages
    for side, seen in buffers.items():
        assert len(seen) == 1, side  # one connection each, one buffer each


def _guard(data_received: Any) -> Any:
    """``data_received`` that refuses to be called by asyncio's plain-protocol read
    (whose caller is ``_read_ready__data_received``), and passes on otherwise."""

    def guarded(self: Any, data: bytes) -> None:
        caller = sys._getframe(1).f_code.co_name
        assert caller not in ("_read_ready__data_received", "_do_read__copied"), caller
        data_received(self, data)

    return guarded
