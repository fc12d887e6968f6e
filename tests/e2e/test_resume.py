"""Sessions that survive the network (issue 7): resume after cuts, a dead peer and a
30-second outage; hostile peers end the session clearly with the terminal restored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pexpect
import pytest

from ssmshell.channel import ChannelOptions
from ssmshell.errors import Exit
from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from ssmshell.runner import make_channel
from ssmshell.sessions.ports import Listen, PortSession
from tests.conftest import ssmshell_argv
from tests.local.test_sessions import aws_for, collect, start
from tests.reliability import record

WEB = "i-0123456789abcdef0"
MB = 1_000_000


def run_bounded(coro: object, timeout: float) -> object:
    async def bounded() -> object:
        return await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    return asyncio.run(bounded())


# ------------------------------------------------------------------ 50 cuts each way


@pytest.mark.timeout(600)
def test_fifty_cuts_during_a_download(local_sm: LocalSessionManager,
                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """20 MB of output; the websocket is cut at 50 random points; all of it arrives."""
    data = os.urandom(20 * MB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    messages = 20 * MB // 1024
    cuts = frozenset(random.Random(7).sample(range(100, messages - 100), 50))
    local_sm.default_faults = Faults(cut_at=cuts)
    aws = aws_for(local_sm, monkeypatch)
    channel = make_channel(aws, start(local_sm, "SSMShell-NonInteractiveCommand",
                                      {"command": [f"cat {path}"]}))
    out = run_bounded(collect(channel), 240)
    assert isinstance(out, dict)
    held = hashlib.sha256(out["stdout"]).digest() == hashlib.sha256(data).digest()
    record("websocket cuts during a 20 MB download, resumed with the stream exact",
           len(cuts), channel.resumes if held else 0)
    assert held and out["exit"] == 0
    assert channel.resumes == len(cuts)


@pytest.mark.timeout(600)
def test_fifty_cuts_during_an_upload(local_sm: LocalSessionManager,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """20 MB through a port forward to a hashing sink; the websocket is cut when the
    agent has received 50 random input messages (each lost with the connection)."""
    data = os.urandom(20 * MB)
    aws = aws_for(local_sm, monkeypatch)

    async def main() -> tuple[str, int]:
        digest = hashlib.sha256()
        done = asyncio.Event()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(1 << 16):
                digest.update(chunk)
            writer.close()
            done.set()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        info = await asyncio.to_thread(start, local_sm, "AWS-StartPortForwardingSession",
                                       {"portNumber": [str(port)]})
        bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        session = PortSession(make_channel(aws, info), Listen("127.0.0.1", 0),
                              on_ready=bound.set_result)
        task = asyncio.create_task(session.run())
        try:
            local_port = int((await bound).rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", local_port)
            for offset in range(0, len(data), 1 << 16):
                writer.write(data[offset:offset + (1 << 16)])
                await writer.drain()
            writer.close()
            await done.wait()
            return digest.hexdigest(), session.channel.resumes
        finally:
            await session.terminate()
            task.cancel()
            server.close()

    # Input messages carry up to 1024 bytes of smux frames; cut among the first ~19,000.
    cuts = frozenset(random.Random(8).sample(range(100, 19_000), 50))
    local_sm.default_faults = Faults(cut_at_input=cuts)
    result = run_bounded(main(), 240)
    assert isinstance(result, tuple)
    digest, resumes = result
    held = digest == hashlib.sha256(data).hexdigest()
    record("websocket cuts during a 20 MB upload, resumed with the stream exact",
           len(cuts), resumes if held else 0)
    assert held
    assert resumes == len(cuts)


# ------------------------------------------------------------------ dead peer


def test_dead_peer_detected_by_missing_pong(local_sm: LocalSessionManager,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes silent (no data, no pong): ssmshell resumes instead of hanging."""
    local_sm.default_faults = Faults(freeze_after=30)
    aws = aws_for(local_sm, monkeypatch)
    command = "head -c 200000 /dev/zero | tr '\\0' 'x'"
    channel = make_channel(aws, start(local_sm, "SSMShell-NonInteractiveCommand",
                                      {"command": [command]}),
                           ChannelOptions(ping_interval=0.5, ping_timeout=0.5))
    started = time.monotonic()
    out = run_bounded(collect(channel), 60)
    assert isinstance(out, dict)
    assert out["stdout"] == b"x" * 200_000
    assert channel.resumes == 1
    assert time.monotonic() - started < 15
    record("dead peer (silent websocket) detected by ping timeout and resumed", 1, 1)


# ------------------------------------------------------------------ a 30 s outage


@pytest.mark.timeout(600)
def test_thirty_second_outage_interactive(local_sm: LocalSessionManager,
                                          cli_env: dict[str, str]) -> None:
    """Both endpoints and the gateway vanish for 30 s mid-session (the official client
    gives up after six quick tries); what is typed meanwhile arrives afterwards."""
    argv = ssmshell_argv("start-session", WEB)
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, timeout=20)
    child.expect("encrypted using AWS KMS")
    child.sendline("PS1='READY> '")
    child.expect("READY> ")
    outage = threading.Thread(target=lambda: local_sm.call(local_sm.outage(30), 60))
    outage.start()
    time.sleep(1.0)
    child.sendline("echo typed-during-outage=$((20+3))")
    child.expect("resuming session", timeout=20)
    outage.join()
    child.expect("typed-during-outage=23", timeout=60)
    child.expect("READY> ")
    child.sendline("echo after=ok")
    child.expect("after=ok")
    child.sendline("exit")
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    assert child.exitstatus == 0
    record("30 s outage of every endpoint during an interactive session, resumed", 1, 1)


def test_gives_up_with_a_clear_reason(local_sm: LocalSessionManager,
                                      cli_env: dict[str, str]) -> None:
    """Past the resume budget: one clear line, its exit code, the terminal restored."""
    env = dict(cli_env, SSMSHELL_RESUME_BUDGET="3")
    outage = threading.Thread(target=lambda: local_sm.call(local_sm.outage(8), 30))
    status, settings, output = stty_after(env, ["start-session", WEB], outage.start)
    outage.join()
    assert status == Exit.CONNECTION_LOST, output
    assert "could not resume the session" in output
    assert "Traceback" not in output
    assert_restored(settings)


# ------------------------------------------------------------------ hostile peers


def stty_after(env: dict[str, str], args: list[str], poke: object = None,
               ) -> tuple[int, str, str]:
    """Run ssmshell under a PTY from a shell; return (exit status, ``stty -a`` after it,
    everything shown)."""
    line = " ".join(ssmshell_argv(*args))
    child = pexpect.spawn("/bin/sh", ["-c", f"{line}; echo STATUS=$?; stty -a; echo DONE"],
                          env=env, timeout=60)
    if poke is not None:
        child.expect("READY|encrypted using AWS KMS|\\$ |# ")
        poke()  # type: ignore[operator]
    child.expect(r"STATUS=(\d+)")
    status = int(child.match.group(1))
    shown = child.before.decode(errors="replace")
    child.expect("DONE")
    settings = child.before.decode(errors="replace")
    child.expect(pexpect.EOF)
    return status, settings, shown


def assert_restored(settings: str) -> None:
    words = settings.split()
    assert "icanon" in words and "echo" in words and "isig" in words, settings


@pytest.mark.parametrize("hostile,words", [
    ("garbage", ["undecodable frames"]),
    ("oversized", ["larger than"]),
    ("unknown_action", ["QuantumTeleport"]),
    ("downgrade", ["decrypt"]),
    ("bad_challenge", ["challenge"]),
])
def test_hostile_peer_ends_the_session_clearly(local_sm: LocalSessionManager,
                                               cli_env: dict[str, str], hostile: str,
                                               words: list[str]) -> None:
    local_sm.default_faults = Faults(hostile=hostile)
    status, settings, shown = stty_after(cli_env, ["start-session", WEB])
    assert status not in (0, 1), shown
    lines = [x for x in shown.splitlines() if x.startswith("ssmshell: ") and
             "encrypted" not in x]
    assert len(lines) == 1, shown
    for word in words:
        assert word in lines[0], shown
    assert "Traceback" not in shown
    assert "plaintext after KMS" not in shown  # never accepted after encryption was agreed
    assert_restored(settings)
    record(f"hostile peer ({hostile}) ended the session with one clear line", 1, 1)
