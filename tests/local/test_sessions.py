"""The local Session Manager driven by plain boto3 and the protocol core's client role.

Everything is real: boto3 over HTTP to the local endpoints, websockets on
loopback, the agent emulator running PTYs, commands and TCP connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ssmshell.aws.api import Aws, SessionInfo
from ssmshell.channel import (
    READ_BUFFER,
    Channel,
    ChannelError,
    ChannelOptions,
    binary_handler_connection,
)
from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from ssmshell.protocol import events as ev
from ssmshell.protocol import message as m
from ssmshell.protocol.payloads import PayloadType
from ssmshell.runner import make_channel
from ssmshell.sessions.ports import Listen, PortSession
from tests.conftest import echo_server

INSTANCE = "i-0123456789abcdef0"
TIMEOUT = 30


_CLIENTS: dict[tuple[str, str], Any] = {}


def client(sm: LocalSessionManager, service: str) -> Any:
    """A boto3 client for ``sm`` (cached: creating one loads the service model)."""
    key = (sm.endpoint_url, service)
    if key not in _CLIENTS:
        _CLIENTS[key] = _new_client(sm, service)
    return _CLIENTS[key]


def _new_client(sm: LocalSessionManager, service: str) -> Any:
    env = sm.client_env()
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=sm.region,
    ).client(service, endpoint_url=sm.endpoint_url, config=Config(retries={"max_attempts": 1}))


def aws_for(sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> Aws:
    for key, value in sm.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return Aws(region=sm.region, endpoint_url=sm.endpoint_url)


def start(sm: LocalSessionManager, document: str | None = None,
          parameters: dict[str, list[str]] | None = None) -> SessionInfo:
    params: dict[str, Any] = {"Target": INSTANCE}
    if document:
        params["DocumentName"] = document
    if parameters:
        params["Parameters"] = parameters
    out = client(sm, "ssm").start_session(**params)
    return SessionInfo(out["SessionId"], out["StreamUrl"], out["TokenValue"], INSTANCE)


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


async def collect(channel: Channel, on_start: Callable[[], Awaitable[None]] | None = None,
                  ) -> dict[str, Any]:
    """Open, run to channel_closed, return what arrived."""
    out: dict[str, Any] = {"stdout": bytearray(), "stderr": bytearray(), "exit": None,
                           "started": None, "closed": None}
    await channel.open()
    try:
        async for event in channel.events():
            if isinstance(event, ev.SessionStarted):
                out["started"] = event
                if on_start is not None:
                    await on_start()
            elif isinstance(event, ev.StreamData):
                key = "stderr" if event.payload_type == PayloadType.STDERR else "stdout"
                out[key] += event.data
            elif isinstance(event, ev.ExitCode):
                out["exit"] = event.code
            elif isinstance(event, ev.ChannelClosed):
                out["closed"] = event
    finally:
        await channel.close()
        out["stdout"], out["stderr"] = bytes(out["stdout"]), bytes(out["stderr"])
    return out


# ---------------------------------------------------------------------------- shells


@pytest.mark.parametrize("kms", [True, False], ids=["kms", "plain"])
def test_shell_round_trip(local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch,
                          kms: bool) -> None:
    if not kms:
        local_sm.config.session_kms_key_id = None
    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm))

    async def typed() -> None:
        await channel.send_size(100, 30)
        await channel.send_output(b"stty size; echo sum=$((40+2)); exit\r")

    out = run(collect(channel, typed))
    assert out["started"].encrypted is kms
    assert out["started"].handshake is kms  # §7.1: no handshake for a plain shell
    assert b"30 100" in out["stdout"]
    assert b"sum=42" in out["stdout"]
    assert out["closed"] is not None and out["closed"].output == ""
    if kms:
        assert out["started"].customer_message == "This session is encrypted using AWS KMS."


def test_both_ends_read_the_websocket_into_a_buffer_of_their_own(
        local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """ssmshell's websocket and the gateway's are asyncio BufferedProtocols: every socket
    read lands in the connection's one buffer, where a plain protocol's reads each
    allocate 256 KiB afresh (an mmap and a munmap per frame, on a keystroke's path)."""
    buffers: dict[str, list[memoryview]] = {"client": [], "server": []}
    for side, seen in buffers.items():
        connection = binary_handler_connection(side)
        own = connection.get_buffer

        def get_buffer(self: Any, sizehint: int, own: Any = own,
                       seen: list[memoryview] = seen) -> memoryview:
            buffer: memoryview = own(self, sizehint)
            seen.append(buffer)
            return buffer

        monkeypatch.setattr(connection, "get_buffer", get_buffer)
    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm))

    async def typed() -> None:
        for key in b"echo one-buffer; exit\r":
            await channel.send_output(bytes([key]))

    out = run(collect(channel, typed))
    assert b"one-buffer" in out["stdout"]
    for side, seen in buffers.items():
        assert len(seen) > 3, side  # the handshake, the prompt, echoes, acks
        assert len({id(buffer) for buffer in seen}) == 1, side
        assert len(seen[0]) == READ_BUFFER


def test_an_idle_session_runs_no_timer(local_sm: LocalSessionManager,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Timers follow the protocol core's deadlines: once everything is acked, neither
    the client nor the agent has one, so nothing wakes an idle session."""
    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm))

    async def body() -> tuple[Any, Any]:
        await channel.open()
        seen = bytearray()
        events = channel.events()
        async for event in events:
            if isinstance(event, ev.SessionStarted):
                await channel.send_output(b"echo idle-$((6*7))\r")
                assert channel._timer.armed  # the resend timer of that message
            elif isinstance(event, ev.StreamData):
                seen += event.data
                if b"idle-42" in seen:
                    break
        await asyncio.sleep(0.3)  # acks arrive well within this
        agent = local_sm.gateway.sessions[channel.session_id]
        timers = (channel._timer.armed, agent._timer.armed)
        assert channel.dc.unacked == 0 and agent.dc.unacked == 0
        await channel.send_output(b"exit\r")
        async for _ in events:
            pass
        await channel.close()
        return timers

    assert run(body()) == (False, False)


async def at_the_prompt(channel: Channel) -> AsyncIterator[ev.Event]:
    """Open ``channel`` and read up to the shell's first output (the shell plugin then
    runs); returns the channel's event iterator."""
    await channel.open()
    events = channel.events()
    async for event in events:
        if isinstance(event, ev.StreamData):
            break
    return events


async def bracketed_echoes(channel: Channel, events: AsyncIterator[ev.Event], keys: bytes,
                          drain: bool = False) -> bytes:
    """Send ``keys`` one at a time, each after the ``<key>`` echo of the one before;
    returns the echoes (``drain``: also wait each time until everything is acked)."""
    echoed = bytearray()
    for key in keys:
        await channel.send_output(bytes([key]))
        async for event in events:
            if isinstance(event, ev.StreamData):
                echoed += event.data
                if echoed.endswith(b">"):
                    break
        if drain:
            assert await channel.drain(TIMEOUT)
    return bytes(echoed)


async def exit_the_shell(channel: Channel, events: AsyncIterator[ev.Event]) -> None:
    await channel.send_output(b"exit\r")
    async for _ in events:
        pass
    await channel.close()


def test_an_echo_read_at_once_leaves_before_the_ack_and_the_agent_yields(
        local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a keystroke's echo is readable right after the input was written, the agent
    writes it before the keystroke's ack and gives up the CPU at once, before the rest
    of its turn (the shell plugin's pacing, the ack): the real agent runs on another
    host and never delays a client's echo.

    Whether the PTY's echo is readable at once depends on where the kernel runs its
    flip-buffer work, so the shell plugin is given an echo that always is."""
    import ssmshell.local.agent as agent_module

    #: What the agent's outbox held at each yield, and when the plugin's turn went on.
    pending: list[list[str] | str] = []
    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm))

    async def body() -> bytes:
        events = await at_the_prompt(channel)
        agent = local_sm.gateway.sessions[channel.session_id]
        plugin = agent.plugin
        assert plugin is not None
        monkeypatch.setattr(agent_module, "_yield_cpu", lambda: pending.append(
            ["frame" if isinstance(item, bytes) else "ack" for item in agent.dc._outbox]))

        def echo(data: bytes) -> None:
            agent.send(b"<" + data + b">")
            pending.append("the plugin's turn goes on")

        plugin.on_input = echo  # type: ignore[method-assign]
        echoed = await bracketed_echoes(channel, events, b"abc")
        del plugin.on_input  # the shell's own again
        await exit_the_shell(channel, events)
        return echoed

    assert run(body()) == b"<a><b><c>"
    assert pending[:6] == [["ack"], "the plugin's turn goes on"] * 3


def test_an_echo_that_comes_late_still_leaves_before_the_ack(
        local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a keystroke's echo is not readable right after the input was written, the
    agent holds the keystroke's ack (at most ECHO_WAIT) until the echo has left; input
    that never echoes is still acked, ECHO_WAIT later."""
    import ssmshell.local.agent as agent_module

    written: list[tuple[float, str]] = []  # when the agent writes which kind of frame
    fed: list[float] = []  # when input that does not echo reached the plugin
    write_frames = agent_module.write_frames

    def recording(ws: Any, frames: list[bytes]) -> None:
        written.extend((time.monotonic(), "ack" if m.is_acknowledge(f) else m.peek_type(f))
                       for f in frames)
        write_frames(ws, frames)

    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm))

    async def body() -> bytes:
        events = await at_the_prompt(channel)
        await channel.drain(TIMEOUT)
        agent = local_sm.gateway.sessions[channel.session_id]
        plugin = agent.plugin
        assert plugin is not None and plugin.echoes
        monkeypatch.setattr(agent_module, "write_frames", recording)
        plugin.on_input = lambda data: asyncio.get_running_loop().call_later(  # type: ignore[method-assign]
            0.0003, agent.send, b"<" + data + b">")  # on the agent's loop, in its thread
        echoed = await bracketed_echoes(channel, events, b"abc", drain=True)
        plugin.on_input = lambda data: fed.append(time.monotonic())  # type: ignore[method-assign]
        await channel.send_output(b"x")
        assert await channel.drain(TIMEOUT)
        del plugin.on_input  # the shell's own again
        await exit_the_shell(channel, events)
        return echoed

    assert run(body()) == b"<a><b><c>"
    assert [kind for _, kind in written[:7]] == [m.OUTPUT_STREAM_DATA, "ack"] * 3 + ["ack"]
    held = written[6][0] - fed[0]
    assert agent_module.ECHO_WAIT <= held < 0.5


def test_noninteractive_separate_streams_and_exit_code(local_sm: LocalSessionManager,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    info = start(local_sm, "SSMShell-NonInteractiveCommand",
                 {"command": ["echo to-stdout; echo to-stderr >&2; exit 7"]})
    out = run(collect(make_channel(aws, info)))
    assert out["stdout"] == b"to-stdout\n"
    assert out["stderr"] == b"to-stderr\n"
    assert out["exit"] == 7
    assert out["started"].session_type == "NonInteractiveCommands"


def test_the_agent_ends_a_session_once_its_output_is_acked(
        local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent drains for up to 2 s at the end (§9.6); acks arriving meanwhile end the
    drain, so channel_closed follows the last output within a moment."""
    aws = aws_for(local_sm, monkeypatch)
    info = start(local_sm, "SSMShell-NonInteractiveCommand", {"command": ["echo done"]})
    channel = make_channel(aws, info)

    async def body() -> tuple[float, float]:
        await channel.open()
        last_output = closed = 0.0
        try:
            async for event in channel.events():
                if isinstance(event, ev.StreamData):
                    last_output = time.monotonic()
                elif isinstance(event, ev.ChannelClosed):
                    closed = time.monotonic()
        finally:
            await channel.close()
        return last_output, closed

    last_output, closed = run(body())
    assert 0 < last_output < closed
    assert closed - last_output < 1.0  # the whole 2 s drain when acks go unheard


def test_noninteractive_merged_without_separate_streams(local_sm: LocalSessionManager,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    info = start(local_sm, "AWS-StartNonInteractiveCommand",
                 {"command": ["echo a; echo b >&2; exit 3"]})
    out = run(collect(make_channel(aws, info)))
    assert out["stdout"] == b"a\nb\n"
    assert out["stderr"] == b""
    assert out["exit"] is None  # §20.4: no exit code without separate streams


def test_exec_session_uses_the_ecs_target_id(local_sm: LocalSessionManager,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    from ssmshell.aws.targets import resolve_ecs

    target = resolve_ecs(aws, "demo", "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "app")
    assert target.target_id == ("ecs:demo_0a1b2c3d4e5f60718293a4b5c6d7e8f9_"
                                "0a1b2c3d4e5f60718293a4b5c6d7e8f9-1234567890")
    info = aws.execute_command(target.cluster_arn, target.task_arn, "app",
                               "/bin/sh -c 'echo in-container'", target.target_id)
    out = run(collect(make_channel(aws, info)))
    assert out["started"].encrypted  # the demo cluster has a KMS key
    assert b"in-container" in out["stdout"]


# ---------------------------------------------------------------------------- refusals


def test_token_is_single_use(local_sm: LocalSessionManager,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    info = start(local_sm, "SSMShell-NonInteractiveCommand", {"command": ["sleep 1; echo ok"]})

    async def twice() -> tuple[dict[str, Any], BaseException | None]:
        first = make_channel(aws, info)
        task = asyncio.create_task(collect(first))
        await asyncio.sleep(0.3)
        second = Channel(info.stream_url, info.token, session_id=info.session_id,
                         target_id=INSTANCE, resume=None)
        error = None
        try:
            await collect(second)
        except ChannelError as exc:
            error = exc
        return await task, error

    out, error = run(twice())
    assert out["stdout"] == b"ok\n"
    assert error is not None  # the replayed token's socket was closed at once
    assert local_sm.gateway.rejected == 1


def test_kms_context_mismatch_is_rejected(local_sm: LocalSessionManager,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    good = start(local_sm)
    wrong = SessionInfo(good.session_id, good.stream_url, good.token, "i-0fedcba9876543210")
    with pytest.raises(ChannelError, match="InvalidCiphertextException"):
        run(collect_shell_failure(make_channel(aws, wrong)))


async def collect_shell_failure(channel: Channel) -> None:
    from ssmshell.sessions.shell import ShellSession

    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        await ShellSession(channel, stdin=devnull, stdout=devnull, stderr=devnull).run()
    finally:
        os.close(devnull)
        await channel.close()


def test_required_random_challenge(local_sm: LocalSessionManager,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    local_sm.gateway.options.require_kms_challenge = True
    aws = aws_for(local_sm, monkeypatch)
    refusing = make_channel(aws, start(local_sm), ChannelOptions(kms_challenge=False))
    with pytest.raises(ChannelError, match="random challenge"):
        run(collect_shell_failure(refusing))
    accepting = make_channel(aws, start(local_sm))

    async def bye() -> None:
        await accepting.send_output(b"exit\r")

    assert run(collect(accepting, bye))["started"].encrypted


def test_kms_decrypt_failure_fault(local_sm: LocalSessionManager,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_for(local_sm, monkeypatch)
    local_sm.default_faults = Faults(kms_decrypt_fail=True)
    with pytest.raises(ChannelError, match="Fetching data key failed"):
        run(collect_shell_failure(make_channel(aws, start(local_sm))))


# ---------------------------------------------------------------------------- ports


async def forward_and_echo(sm: LocalSessionManager, aws: Aws, payloads: list[bytes],
                           port: int | None = None) -> tuple[list[bytes], PortSession]:
    """Forward a local port to an echo server through a port session; send each
    payload on its own connection (all at once) and return what came back."""
    server, echo_port = await echo_server()
    info = await asyncio.to_thread(start, sm, "AWS-StartPortForwardingSession",
                                   {"portNumber": [str(port or echo_port)]})
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    session = PortSession(make_channel(aws, info), Listen("127.0.0.1", 0),
                          on_ready=bound.set_result)
    task = asyncio.create_task(session.run())
    try:
        where = await bound
        local_port = int(where.rsplit(":", 1)[1])

        async def one(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            writer.write(data)
            await writer.drain()
            got = b""
            while len(got) < len(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
            writer.close()
            return got

        results = await asyncio.gather(*(one(p) for p in payloads))
        await session.terminate()
        return list(results), session
    finally:
        task.cancel()
        server.close()


@pytest.mark.parametrize("agent_version,mux", [("3.3.1142.0", True), ("3.0.100.0", False)],
                         ids=["smux", "basic"])
def test_port_forward_to_echo_server(local_sm: LocalSessionManager,
                                     monkeypatch: pytest.MonkeyPatch, agent_version: str,
                                     mux: bool) -> None:
    local_sm.gateway.options.agent_version = agent_version
    aws = aws_for(local_sm, monkeypatch)
    payloads = [os.urandom(200_000)] if not mux else [os.urandom(n) for n in
                                                      (1, 5000, 100_000, 300_000)]
    results, session = run(forward_and_echo(local_sm, aws, payloads))
    assert session.mux is mux
    assert [hashlib.sha256(r).hexdigest() for r in results] == [
        hashlib.sha256(p).hexdigest() for p in payloads]


def test_port_connect_error_is_per_connection(local_sm: LocalSessionManager,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    aws = aws_for(local_sm, monkeypatch)
    results, session = run(forward_and_echo(local_sm, aws, [b"x", b"y"], port=closed_port))
    assert results == [b"", b""]
    assert session.failed_connections == 2


# ---------------------------------------------------------------------------- faults


def big_command(size: int) -> tuple[str, bytes]:
    """A command whose stdout is ``size`` deterministic bytes, and those bytes."""
    command = f"head -c {size} /dev/zero | tr '\\0' 'x'; echo end"
    return command, b"x" * size + b"end\n"


@pytest.mark.parametrize("faults", [
    Faults(drop=0.05, seed=1),
    Faults(duplicate=0.1, seed=2),
    Faults(reorder=0.1, seed=3),
    Faults(delay=0.02, seed=4),
    Faults(corrupt_digest=0.05, seed=5),
    Faults(cut_after=40, seed=6),
    Faults(bye_after=40, seed=7),
    Faults(drop=0.03, duplicate=0.03, reorder=0.03, delay=0.01, corrupt_digest=0.02, seed=8),
], ids=["drop", "duplicate", "reorder", "delay", "corrupt", "cut", "bye", "all"])
def test_output_exact_under_faults(local_sm: LocalSessionManager,
                                   monkeypatch: pytest.MonkeyPatch, faults: Faults) -> None:
    local_sm.default_faults = faults
    aws = aws_for(local_sm, monkeypatch)
    command, expected = big_command(150_000)
    info = start(local_sm, "SSMShell-NonInteractiveCommand", {"command": [command]})
    channel = make_channel(aws, info)
    out = run(collect(channel))
    assert out["stdout"] == expected
    assert out["exit"] == 0
    if faults.cut_after or faults.bye_after:
        assert channel.resumes >= 1


@pytest.mark.parametrize("faults", [
    Faults(drop=0.05, duplicate=0.05, reorder=0.05, seed=11),
    Faults(cut_every=100, seed=12),  # every connection cut after 100 new output messages
    Faults(ready_delay=1.5),
], ids=["lossy", "cuts", "agent-not-ready"])
def test_input_exact_under_faults(local_sm: LocalSessionManager,
                                  monkeypatch: pytest.MonkeyPatch, faults: Faults) -> None:
    """Client→agent bytes through a smux port session, and back, byte for byte."""
    local_sm.default_faults = faults
    aws = aws_for(local_sm, monkeypatch)
    payload = os.urandom(600_000)
    results, session = run(forward_and_echo(local_sm, aws, [payload]))
    assert hashlib.sha256(results[0]).hexdigest() == hashlib.sha256(payload).hexdigest()
    if faults.cut_every:
        assert session.channel.resumes >= 3


def test_fifty_concurrent_shell_sessions(local_sm: LocalSessionManager,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    local_sm.config.session_kms_key_id = None
    aws = aws_for(local_sm, monkeypatch)
    infos = [start(local_sm) for _ in range(50)]

    async def one(n: int, info: SessionInfo) -> bytes:
        channel = make_channel(aws, info)

        async def typed() -> None:
            await channel.send_output(f"echo tag-$(({n}*3)); exit\r".encode())

        return (await collect(channel, typed))["stdout"]

    async def all_of_them() -> list[bytes]:
        return await asyncio.gather(*(one(n, info) for n, info in enumerate(infos)))

    outputs = run(all_of_them())
    for n, output in enumerate(outputs):
        assert f"tag-{n * 3}\r\n".encode() in output
