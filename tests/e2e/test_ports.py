"""Port forwarding end to end (§10): ``ssmshell port-forward`` as a subprocess against the
local Session Manager, to real servers on this machine; and many port sessions at once.

Everything is real: the CLI process, boto3 to the local endpoints, websockets on
loopback, the agent emulator dialling TCP servers that run in threads of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ssmshell.aws.api import Aws
from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from ssmshell.protocol import message as m
from ssmshell.protocol.payloads import Acknowledge, PayloadType
from ssmshell.runner import make_channel
from ssmshell.sessions.ports import Listen, PortSession
from tests.conftest import echo_server, serve_threads, ssmshell_argv

INSTANCE = "i-0123456789abcdef0"
TIMEOUT = 30
FORWARDING = re.compile(r"^ssmshell: forwarding (\S+) -> (\S+) ")
MB = 1024 * 1024


# ------------------------------------------------------------------ servers on "the instance"


def body_for(path: str) -> bytes:
    """The HTTP server's answer to GET ``path``: 1-65 KB that depend on the path."""
    seed = hashlib.sha256(path.encode()).digest()
    size = 1000 + int.from_bytes(seed[:2], "big")
    return (seed * (size // len(seed) + 1))[:size]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = body_for(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 50 connections arrive at once


def serve_http() -> tuple[_HttpServer, int]:
    server = _HttpServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def http_port() -> Iterator[int]:
    """A real HTTP server (http.server, a thread per request) on a loopback port."""
    server, port = serve_http()
    yield port
    server.shutdown()
    server.server_close()


def fetch(port: int, path: str) -> bytes:
    """GET ``path`` through ``port`` on a fresh connection; the body (status checked)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status)
        return body
    finally:
        conn.close()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the CLI under test


class PortForward:
    """``ssmshell port-forward`` in a subprocess; stderr is read line by line."""

    def __init__(self, env: dict[str, str], *specs: str) -> None:
        argv = ssmshell_argv("port-forward", INSTANCE, *(a for s in specs for a in ("-L", s)))
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        matches = self.wait_for(FORWARDING, len(specs))
        #: destination ("i-…:80", "host:port") → where we listen ("127.0.0.1:N", a path)
        self.listening = {match.group(2): match.group(1) for match in matches}

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], count: int = 1,
                 timeout: float = TIMEOUT) -> list[re.Match[str]]:
        """Wait until ``count`` stderr lines match ``pattern``; their matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [hit for line in self.lines if (hit := pattern.search(line))]
                if len(found) >= count:
                    return found
                if "<EOF>" in self.lines or time.monotonic() > deadline:
                    raise AssertionError(f"expected {count} lines like {pattern.pattern!r} "
                                         f"on stderr, got: {self.lines}")
                self._changed.wait(0.2)

    def port(self, where: str) -> int:
        """The local TCP port forwarded to ``where``."""
        return int(self.listening[where].rsplit(":", 1)[1])

    def stop(self) -> int:
        """Ctrl-C (SIGINT) and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"port-forward did not stop on SIGINT: {self.lines}"
                                     ) from None
        self._reader.join(5)
        return self.proc.returncode


@contextlib.contextmanager
def port_forward(env: dict[str, str], *specs: str) -> Iterator[PortForward]:
    forward = PortForward(env, *specs)
    try:
        yield forward
    finally:
        code = forward.stop()
    assert code == 0, forward.lines
    assert not any("Traceback" in line for line in forward.lines), forward.lines


def documents(sm: LocalSessionManager) -> list[str]:
    return sorted(r.document_name for r in sm.registry.sessions())


# ------------------------------------------------------------------ smux forwards


def test_fifty_concurrent_http_requests(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                        http_port: int) -> None:
    """One forward (one smux session), 50 HTTP requests at once, every body right."""
    with port_forward(cli_env, f"0:{http_port}") as forward:
        port = forward.port(f"{INSTANCE}:{http_port}")
        paths = [f"/item/{n}" for n in range(50)]
        with ThreadPoolExecutor(50) as pool:
            bodies = list(pool.map(lambda path: fetch(port, path), paths))
        for path, body in zip(paths, bodies, strict=True):
            assert body == body_for(path), path
    assert documents(local_sm) == ["AWS-StartPortForwardingSession"]


def test_two_forwards_one_to_a_remote_host(local_sm: LocalSessionManager,
                                           cli_env: dict[str, str], http_port: int) -> None:
    """Two -L in one command: the instance's port, and a remote host's port
    (AWS-StartPortForwardingSessionToRemoteHost); both at once."""
    other, other_port = serve_http()
    try:
        with port_forward(cli_env, f"0:{http_port}", f"0:127.0.0.1:{other_port}") as forward:
            ports = [forward.port(f"{INSTANCE}:{http_port}"),
                     forward.port(f"127.0.0.1:{other_port}")]
            jobs = [(port, f"/two/{n}") for n in range(10) for port in ports]
            with ThreadPoolExecutor(20) as pool:
                bodies = list(pool.map(lambda job: fetch(*job), jobs))
            for (_, path), body in zip(jobs, bodies, strict=True):
                assert body == body_for(path)
    finally:
        other.shutdown()
        other.server_close()
    assert documents(local_sm) == ["AWS-StartPortForwardingSession",
                                   "AWS-StartPortForwardingSessionToRemoteHost"]
    remote = next(r for r in local_sm.registry.sessions()
                  if r.document_name.endswith("RemoteHost"))
    assert remote.properties["host"] == "127.0.0.1"
    assert remote.properties["portNumber"] == str(other_port)


def test_refused_connection_is_per_connection(local_sm: LocalSessionManager,
                                              cli_env: dict[str, str], http_port: int) -> None:
    """The remote port refuses: that local connection is closed with one line on stderr;
    the other forward, and later connections once the port listens, work."""
    refused = closed_port()
    with port_forward(cli_env, f"0:{http_port}", f"0:{refused}") as forward:
        good = forward.port(f"{INSTANCE}:{http_port}")
        bad = forward.port(f"{INSTANCE}:{refused}")
        assert fetch(good, "/before") == body_for("/before")
        with socket.create_connection(("127.0.0.1", bad), timeout=TIMEOUT) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert conn.recv(1024) == b""  # closed by ssmshell, nothing received
        notices = forward.wait_for(re.compile(r"^ssmshell: connection \d+ .*failed"))
        assert len(notices) == 1, forward.lines
        assert fetch(good, "/after") == body_for("/after")
        # The port comes up: the same forward now works.
        server = _HttpServer(("127.0.0.1", refused), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            assert fetch(bad, "/now") == body_for("/now")
        finally:
            server.shutdown()
            server.server_close()
        assert len(forward.wait_for(re.compile(r"failed"))) == 1


def test_unix_socket_forward(local_sm: LocalSessionManager, cli_env: dict[str, str],
                             http_port: int, tmp_path: Path) -> None:
    """-L PATH:PORT listens on a unix socket; the next run can use the same path."""
    path = tmp_path / "forward.sock"
    for n in range(2):
        with port_forward(cli_env, f"{path}:{http_port}") as forward:
            assert forward.listening == {f"{INSTANCE}:{http_port}": str(path)}
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(TIMEOUT)
                conn.connect(str(path))
                conn.sendall(f"GET /unix/{n} HTTP/1.0\r\n\r\n".encode())
                response = b""
                while chunk := conn.recv(65536):
                    response += chunk
            assert response.startswith(b"HTTP/1.0 200 ")
            assert response.endswith(b"\r\n\r\n" + body_for(f"/unix/{n}"))


# ------------------------------------------------------------------ how port-forward ends

def test_channel_failure_is_one_line(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                     http_port: int) -> None:
    """The agent breaks the protocol: one line and a failure status, no traceback."""
    local_sm.default_faults = Faults(hostile="garbage")
    forward = PortForward(cli_env, f"0:{http_port}")
    try:
        forward.proc.wait(TIMEOUT)
    finally:
        forward.stop()
    assert forward.proc.returncode not in (0, None)
    errors = [line for line in forward.lines if not FORWARDING.match(line) and line != "<EOF>"]
    assert len(errors) == 1 and errors[0].startswith("ssmshell: "), forward.lines


def test_failed_session_fails_the_command(local_sm: LocalSessionManager,
                                          cli_env: dict[str, str]) -> None:
    """A destination the agent refuses (§10.2 deny list): the reason, and status 1."""
    forward = PortForward(cli_env, "0:169.254.169.254:80")
    forward.wait_for(re.compile("Forwarding to IP address 169.254.169.254 is forbidden"))
    try:
        forward.proc.wait(TIMEOUT)
    finally:
        forward.stop()
    assert forward.proc.returncode == 1, forward.lines


def test_sigterm_ends_the_sessions(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                   http_port: int) -> None:
    forward = PortForward(cli_env, f"0:{http_port}")
    forward.proc.send_signal(signal.SIGTERM)
    try:
        forward.proc.wait(TIMEOUT)
    finally:
        forward.stop()
    assert forward.proc.returncode in (0, 128 + signal.SIGTERM), forward.lines
    assert [r.status for r in local_sm.registry.sessions("History")] == ["Terminated"]


# ------------------------------------------------------------------ throughput


class TransferServer:
    """``UP n\\n`` + n bytes → the SHA-256 hex of them; ``DOWN n\\n`` → n random bytes
    (their SHA-256 is kept in :attr:`sent`). Uploads are not read while :attr:`reading`
    is clear; :attr:`pushed` counts the bytes of downloads handed to the kernel."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent: list[str] = []
        self.received: list[str] = []
        self.reading = threading.Event()
        self.reading.set()
        self.pushed = 0
        serve_threads(self.sock, self._serve)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            verb, size = reader.readline().split()
            remaining = int(size)
            digest = hashlib.sha256()
            if verb == b"UP":
                self.reading.wait()
                while remaining:
                    chunk = reader.read1(min(remaining, MB))
                    if not chunk:
                        return
                    digest.update(chunk)
                    remaining -= len(chunk)
                self.received.append(digest.hexdigest())
                conn.sendall(digest.hexdigest().encode() + b"\n")
                return
            block = os.urandom(MB)
            while remaining:
                chunk = block[:remaining]
                block = hashlib.sha256(block[:64]).digest() + block[32:]  # vary the blocks
                digest.update(chunk)
                conn.sendall(chunk)
                self.pushed += len(chunk)
                remaining -= len(chunk)
            self.sent.append(digest.hexdigest())

    def close(self) -> None:
        self.sock.close()


def upload(port: int, size: int) -> tuple[str, str, float]:
    """Send ``size`` random bytes; (our SHA-256, the server's, seconds)."""
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        started = time.monotonic()
        conn.sendall(b"UP %d\n" % size)
        sent = 0
        while sent < size:
            chunk = os.urandom(min(MB, size - sent))
            digest.update(chunk)
            conn.sendall(chunk)
            sent += len(chunk)
        answer = conn.makefile("rb").readline().strip().decode()
        return digest.hexdigest(), answer, time.monotonic() - started


def download(port: int, size: int) -> tuple[str, int, float]:
    """Ask for ``size`` bytes; (their SHA-256, how many arrived, seconds)."""
    digest = hashlib.sha256()
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        started = time.monotonic()
        conn.sendall(b"DOWN %d\n" % size)
        while got < size:
            chunk = conn.recv(MB)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
        return digest.hexdigest(), got, time.monotonic() - started


def test_hundred_megabytes_each_way(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """100 MB up and 100 MB down (separate connections), identical SHA-256, agent pacing
    off; the rates are printed."""
    size = 100 * MB
    server = TransferServer()
    try:
        with port_forward(cli_env, f"0:{server.port}") as forward:
            port = forward.port(f"{INSTANCE}:{server.port}")
            ours, theirs, up_seconds = upload(port, size)
            assert ours == theirs
            digest, got, down_seconds = download(port, size)
            assert got == size
            assert [digest] == server.sent
    finally:
        server.close()
    with capsys.disabled():
        print(f"\nport-forward 100 MB: up {size / MB / up_seconds:.1f} MB/s "
              f"({up_seconds:.1f} s), down {size / MB / down_seconds:.1f} MB/s "
              f"({down_seconds:.1f} s)")


def settled(value: Callable[[], int], limit: float = 10) -> int:
    """``value()`` once it has stopped growing for a second (or after ``limit`` s)."""
    deadline = time.monotonic() + limit
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 1.0:
        time.sleep(0.1)
        if value() != last:
            last, since = value(), time.monotonic()
    return last


#: What may sit between a writer and a reader that stopped reading: socket buffers
#: on both sides, the unacked window, the reorder buffer and a 4 MB backlog.
IN_FLIGHT_LIMIT = 40 * MB


def test_slow_destination_holds_the_upload(local_sm: LocalSessionManager,
                                           cli_env: dict[str, str]) -> None:
    """The server does not read for a while: everything still arrives intact; and the
    forward should stop taking data meanwhile instead of buffering it all."""
    size = 64 * MB
    server = TransferServer()
    server.reading.clear()
    block = os.urandom(MB)
    accepted = 0
    try:
        with port_forward(cli_env, f"0:{server.port}") as forward:
            port = forward.port(f"{INSTANCE}:{server.port}")
            conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

            def send() -> None:
                nonlocal accepted
                conn.sendall(b"UP %d\n" % size)
                for _ in range(size // MB):
                    conn.sendall(block)
                    accepted += MB

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            held = settled(lambda: accepted)
            server.reading.set()
            sender.join(TIMEOUT)
            answer = conn.makefile("rb").readline().strip().decode()
            conn.close()
    finally:
        server.close()
    assert answer == hashlib.sha256(block * (size // MB)).hexdigest()
    # The agent stops reading its websocket while a destination is behind
    # (PortPlugin.wait_input_room), so the upload backs up to the client through TCP.
    assert held < IN_FLIGHT_LIMIT, f"{held // MB} MB taken while the server read nothing"


def test_slow_local_reader_holds_the_download(local_sm: LocalSessionManager,
                                              cli_env: dict[str, str]) -> None:
    """The local client does not read for a while: everything still arrives intact; and
    ssmshell should not buffer the whole download meanwhile."""
    size = 64 * MB
    server = TransferServer()
    try:
        with port_forward(cli_env, f"0:{server.port}") as forward:
            port = forward.port(f"{INSTANCE}:{server.port}")
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
                conn.sendall(b"DOWN %d\n" % size)
                first = conn.recv(1024)
                held = settled(lambda: server.pushed)
                digest = hashlib.sha256(first)
                got = len(first)
                while got < size:
                    chunk = conn.recv(MB)
                    if not chunk:
                        break
                    digest.update(chunk)
                    got += len(chunk)
    finally:
        server.close()
    assert got == size
    assert [digest.hexdigest()] == server.sent
    # The channel stops reading the websocket while its consumer is behind
    # (MAX_QUEUED_EVENTS), so the download backs up to the agent through TCP.
    assert held < IN_FLIGHT_LIMIT, f"{held // MB} MB pushed while the local reader read nothing"


# ------------------------------------------------------------------ basic mode


def test_basic_mode_sequential_connections(local_sm: LocalSessionManager,
                                           cli_env: dict[str, str], http_port: int) -> None:
    """An agent older than smux (3.0.100.0): basic mode, one connection at a time."""
    local_sm.gateway.options.agent_version = "3.0.100.0"
    with port_forward(cli_env, f"0:{http_port}") as forward:
        port = forward.port(f"{INSTANCE}:{http_port}")
        agent = next(iter(local_sm.gateway.sessions.values()))
        assert agent.plugin is not None and not agent.plugin.mux  # type: ignore[attr-defined]
        for n in range(6):
            assert fetch(port, f"/basic/{n}") == body_for(f"/basic/{n}")
        # Several at once: they wait their turn.
        paths = [f"/queued/{n}" for n in range(4)]
        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda path: fetch(port, path), paths))
        assert bodies == [body_for(path) for path in paths]
    assert documents(local_sm) == ["AWS-StartPortForwardingSession"]


# ------------------------------------------------------------------ many sessions


def client_order(channel: Any) -> list[str]:
    """Record what the client receives: ``complete`` for HandshakeComplete, ``ack0`` for
    the ack of its HandshakeResponse (its message 0)."""
    seen: list[str] = []
    original = channel.dc.receive_frame

    def receive_frame(frame: bytes) -> None:
        with contextlib.suppress(Exception):
            msg = m.decode(frame, verify_digest=False)
            if msg.payload_type == PayloadType.HANDSHAKE_COMPLETE:
                seen.append("complete")
            elif msg.message_type == m.ACKNOWLEDGE and Acknowledge.from_bytes(
                    msg.payload).acknowledged_message_sequence_number == 0:
                seen.append("ack0")
        original(frame)

    channel.dc.receive_frame = receive_frame
    return seen


def test_two_hundred_port_sessions(local_sm: LocalSessionManager,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """200 port sessions, 20 at a time, each forwarding an echo; a quarter with frames
    reordered on the agent's link (so HandshakeComplete and the ack of the
    HandshakeResponse also come the other way round). Every one forwards."""
    for key, value in local_sm.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws = Aws(region=local_sm.region, endpoint_url=local_sm.endpoint_url)
    count, parallel = 200, 20
    orders: list[list[str]] = []

    async def one(n: int, echo_port: int) -> None:
        info = await asyncio.to_thread(aws.start_session, INSTANCE,
                                       "AWS-StartPortForwardingSession",
                                       {"portNumber": [str(echo_port)]})
        if n % 4 == 0:
            local_sm.faults[info.session_id] = Faults(reorder=0.3, seed=n)
        channel = make_channel(aws, info)
        orders.append(client_order(channel))
        bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        session = PortSession(channel, Listen("127.0.0.1", 0), on_ready=bound.set_result)
        task = asyncio.create_task(session.run())
        try:
            local_port = int((await bound).rsplit(":", 1)[1])
            payload = b"session %d " % n * (n + 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            writer.write(payload)
            got = await reader.readexactly(len(payload))
            writer.close()
            assert got == payload
            await session.terminate()
            assert await asyncio.wait_for(task, 10) == 0  # ended by channel_closed
        finally:
            task.cancel()
            await channel.close()

    async def main() -> list[BaseException | None]:
        server, echo_port = await echo_server(backlog=256)
        limit = asyncio.Semaphore(parallel)

        async def bounded(n: int) -> BaseException | None:
            async with limit:
                try:
                    await asyncio.wait_for(one(n, echo_port), TIMEOUT)
                except (Exception, asyncio.TimeoutError) as exc:
                    return exc
                return None

        try:
            return await asyncio.gather(*(bounded(n) for n in range(count)))
        finally:
            server.close()

    started = time.monotonic()
    results = asyncio.run(main())
    failures = [(n, repr(exc)) for n, exc in enumerate(results) if exc is not None]
    assert not failures, failures[:10]
    assert len(local_sm.registry.sessions()) == count
    complete_first = sum(1 for seen in orders if seen[:2] == ["complete", "ack0"])
    ack_first = sum(1 for seen in orders if seen[:2] == ["ack0", "complete"])
    # The emulator queues HandshakeComplete before it acks the HandshakeResponse; the
    # reordering link turns some round.
    assert complete_first > 0 and ack_first > 0, orders[:10]
    print(f"\n{count} port sessions in {time.monotonic() - started:.1f} s; HandshakeComplete "
          f"before the ack of the HandshakeResponse in {complete_first}, after it in "
          f"{ack_first}")
