"""Shared fixtures: the embedded local Session Manager, and ssmshell under a real PTY."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ssmshell.local.agent import AgentOptions
from ssmshell.local.server import LocalSessionManager


@pytest.fixture
def local_sm() -> Iterator[LocalSessionManager]:
    """A local Session Manager in a background thread, agent pacing off, short PTY delay."""
    sm = LocalSessionManager(agent_options=AgentOptions(initial_read_delay=0.1, pacing=0.0,
                                                        shell="/bin/sh"))
    sm.start_in_thread()
    try:
        yield sm
    finally:
        sm.stop_thread()


@pytest.fixture
def cli_env(local_sm: LocalSessionManager, tmp_path: Path) -> dict[str, str]:
    """Environment for an ssmshell subprocess pointed at ``local_sm`` and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(local_sm.client_env())
    env["HOME"] = str(tmp_path)  # no ~/.aws of the machine
    env["AWS_CONFIG_FILE"] = str(tmp_path / "aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "aws-credentials")
    env["PYTHONUNBUFFERED"] = "1"
    env["TERM"] = "xterm"
    return env


def serve_threads(server: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Accept on ``server`` in a daemon thread, each connection handled in a thread of
    its own, until the socket is closed."""

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (a thread per connection); yields its port."""

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    server = socket.create_server(("127.0.0.1", 0))
    serve_threads(server, echo)
    yield server.getsockname()[1]
    server.close()


async def echo_server(backlog: int = 100) -> tuple[asyncio.AbstractServer, int]:
    """An asyncio TCP echo server on 127.0.0.1 in the running loop: (server, port)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=backlog)
    return server, server.sockets[0].getsockname()[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssmshell_argv(*args: str) -> list[str]:
    """argv that runs this checkout's ssmshell with this interpreter."""
    return [sys.executable, "-m", "ssmshell", *args]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability counts the fault, fuzz and resume tests recorded."""
    from tests.reliability import RECORDS

    if not RECORDS:
        return
    terminalreporter.section("reliability counts")
    for what, tried, held in RECORDS:
        terminalreporter.write_line(f"{held:>7}/{tried:<7} {what}")
