"""The session-manager-plugin calling convention against the local Session Manager.

Every case runs twice: with the official AWS session-manager-plugin, unchanged, and
with ssmshell in its place (a link named ``session-manager-plugin``,
:mod:`ssmshell.dropin`). The official plugin is not on PyPI, npm or Debian, so CI
cannot have it: its cases run when ``SSMSHELL_OFFICIAL_PLUGIN`` names the binary or
``session-manager-plugin`` is on PATH, and are skipped otherwise. A plugin is
driven exactly as the AWS CLI drives it: ``session-manager-plugin <StartSession
response JSON> <region> StartSession <profile> <request JSON> <ssm endpoint>``
(``aws ecs execute-command`` passes ExecuteCommand's ``session`` and an ``ecs:``
target). For the KMS data key the official plugin's SDK reads
``AWS_ENDPOINT_URL_KMS`` / ``AWS_ENDPOINT_URL`` (SDKs from 2023 on).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ssmshell.aws.documents import COMMAND_DOCUMENT
from ssmshell.local.agent import AgentOptions
from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from tests.conftest import free_port

OFFICIAL = os.environ.get("SSMSHELL_OFFICIAL_PLUGIN") or shutil.which("session-manager-plugin")
if OFFICIAL and Path(OFFICIAL).resolve().name.startswith("ssmshell"):
    OFFICIAL = None  # ssmshell linked in the plugin's place (README), not the official one
AWS_CLI = os.environ.get("SSMSHELL_AWS_CLI") or shutil.which("aws")


@pytest.fixture(params=["official", "ssmshell"])
def plugin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of a ``session-manager-plugin``: the official one, or ssmshell linked
    under that name."""
    if request.param == "official":
        if not OFFICIAL:
            pytest.skip("the official session-manager-plugin is not installed "
                        "(set SSMSHELL_OFFICIAL_PLUGIN or put it on PATH)")
        return OFFICIAL
    script = shutil.which("ssmshell", path=str(Path(sys.executable).parent))
    assert script, "the ssmshell console script is not installed next to this Python"
    link = tmp_path_factory.mktemp("bin") / "session-manager-plugin"
    link.symlink_to(script)
    return str(link)


INSTANCE = "i-0123456789abcdef0"
PROMPT = "REMOTE$ "
TASK = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # cluster demo (KMS), containers app, sidecar


@pytest.fixture
def sm(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSessionManager]:
    """The local SM with the real agent's pacing and a recognisable remote prompt."""
    monkeypatch.setenv("PS1", PROMPT)  # the remote /bin/sh inherits the agent's environment
    monkeypatch.setenv("ENV", "")
    local = LocalSessionManager(agent_options=AgentOptions(initial_read_delay=0.2,
                                                           shell="/bin/sh"))
    local.start_in_thread()
    try:
        yield local
    finally:
        local.stop_thread()


def client(sm: LocalSessionManager, service: str) -> Any:
    env = sm.client_env()
    return boto3.client(service, endpoint_url=sm.endpoint_url, region_name=sm.region,
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def plugin_env(sm: LocalSessionManager, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(sm.client_env(), HOME=str(tmp_path), TERM="xterm",
               AWS_CONFIG_FILE=str(tmp_path / "config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"))
    return env


def spawn(plugin: str, sm: LocalSessionManager, tmp_path: Path, session: dict[str, Any],
          request: dict[str, Any], **kw: Any) -> Any:
    """The plugin under a PTY, started as the AWS CLI starts it."""
    import pexpect

    session = {k: v for k, v in session.items() if k != "ResponseMetadata"}
    argv = [json.dumps(session), sm.region, "StartSession", "", json.dumps(request),
            sm.endpoint_url]
    child = pexpect.spawn(plugin, argv, env=plugin_env(sm, tmp_path), timeout=20,
                          encoding="utf-8", codec_errors="replace", **kw)
    child.logfile_read = open(tmp_path / "plugin-output.txt", "w")  # noqa: SIM115
    return child


def start(sm: LocalSessionManager, **request: Any) -> dict[str, Any]:
    out: dict[str, Any] = client(sm, "ssm").start_session(**request)
    return out


def shell_round_trip(child: Any) -> None:
    """Prompt, a command's output, a resize seen by ``stty size``, Ctrl-C, exit."""
    import pexpect

    child.expect_exact(PROMPT)
    child.sendline("echo hello-$((6*7))")
    child.expect_exact("hello-42")
    child.expect_exact(PROMPT)
    child.sendline("stty size")
    child.expect_exact("30 100")
    child.setwinsize(41, 121)
    time.sleep(0.3)  # the plugin polls the size every 500 ms
    deadline = time.monotonic() + 5
    while True:
        child.sendline("stty size")
        try:
            child.expect_exact("41 121", timeout=1)
            break
        except pexpect.TIMEOUT:
            assert time.monotonic() < deadline, "the new size never reached the remote PTY"
    child.sendline("sleep 100")
    time.sleep(0.3)
    child.sendcontrol("c")
    child.expect_exact(PROMPT, timeout=5)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("kms", [False, True], ids=["plain", "kms"])
def test_shell(plugin: str, sm: LocalSessionManager, tmp_path: Path, kms: bool) -> None:
    if not kms:
        sm.config.session_kms_key_id = None
    child = spawn(plugin, sm, tmp_path, start(sm, Target=INSTANCE), {"Target": INSTANCE},
                  dimensions=(30, 100))
    child.expect_exact("Starting session with SessionId")
    if kms:
        child.expect_exact("This session is encrypted using AWS KMS.")
    shell_round_trip(child)
    assert ("encrypted using AWS KMS" in (tmp_path / "plugin-output.txt").read_text()) is kms


def test_shell_with_the_kms_challenge_required(plugin: str, sm: LocalSessionManager,
                                               tmp_path: Path) -> None:
    """An agent configured to require the random challenge (§8.6) refuses a plugin
    that does not acknowledge it (1.2.694.0 does not) with the agent's own words, and
    serves one that does."""
    import pexpect

    sm.gateway.options.require_kms_challenge = True
    child = spawn(plugin, sm, tmp_path, start(sm, Target=INSTANCE), {"Target": INSTANCE},
                  dimensions=(30, 100))
    refused = "client does not support required encryption context random challenge"
    if child.expect_exact(["This session is encrypted using AWS KMS.", refused]) == 0:
        shell_round_trip(child)
    else:
        assert plugin == OFFICIAL, "ssmshell acknowledges the challenge"
        child.expect(pexpect.EOF)


def test_interactive_command(plugin: str, sm: LocalSessionManager, tmp_path: Path) -> None:
    import pexpect

    request = {"Target": INSTANCE, "DocumentName": "AWS-StartInteractiveCommand",
               "Parameters": {"command": ["read -r line; echo got-$line"]}}
    child = spawn(plugin, sm, tmp_path, start(sm, **request), request)
    child.expect_exact("Starting session with SessionId")
    time.sleep(0.5)
    child.sendline("abc")
    child.expect_exact("got-abc")
    child.expect(pexpect.EOF)


def test_ecs_exec_with_kms(plugin: str, sm: LocalSessionManager, tmp_path: Path) -> None:
    tasks = client(sm, "ecs").describe_tasks(cluster="demo", tasks=[TASK])["tasks"]
    runtime = {c["name"]: c["runtimeId"] for c in tasks[0]["containers"]}["app"]
    out = client(sm, "ecs").execute_command(cluster="demo", task=TASK, container="app",
                                            interactive=True, command="/bin/sh")
    target = f"ecs:demo_{TASK}_{runtime}"  # what `aws ecs execute-command` passes (§2.3)
    child = spawn(plugin, sm, tmp_path, out["session"], {"Target": target}, dimensions=(30, 100))
    child.expect_exact("This session is encrypted using AWS KMS.")
    shell_round_trip(child)


@pytest.mark.parametrize("document", ["AWS-StartNonInteractiveCommand", COMMAND_DOCUMENT])
def test_non_interactive_command(plugin: str, sm: LocalSessionManager, tmp_path: Path,
                                 document: str) -> None:
    """Output either way; with separate streams (ssmshell's own document) the agent
    also sends the exit code, which ssmshell returns (the official plugin exits 0)."""
    import pexpect

    request = {"Target": INSTANCE, "DocumentName": document,
               "Parameters": {"command": ["echo to-stdout; echo to-stderr >&2; exit 3"]}}
    child = spawn(plugin, sm, tmp_path, start(sm, **request), request)
    child.expect(pexpect.EOF)
    child.close()
    text = (tmp_path / "plugin-output.txt").read_text()
    assert "to-stdout" in text and "to-stderr" in text
    if plugin != OFFICIAL:
        assert child.exitstatus == (3 if document == COMMAND_DOCUMENT else 0)


@pytest.mark.parametrize("kms", [False, True], ids=["plain", "kms"])
def test_shell_resumes_after_the_websocket_is_cut(plugin: str, sm: LocalSessionManager,
                                                  tmp_path: Path, kms: bool) -> None:
    """The plugin reconnects (ResumeSession through the endpoint it was given) and the
    output is whole: every line once, in order."""
    import pexpect

    if not kms:
        sm.config.session_kms_key_id = None
    sm.default_faults = Faults(cut_at=[40, 120])  # of ~180 output messages
    child = spawn(plugin, sm, tmp_path, start(sm, Target=INSTANCE), {"Target": INSTANCE},
                  dimensions=(30, 100), maxread=65536)
    child.expect_exact(PROMPT)
    child.sendline("seq 1 30000 | sed 's/^/L/'; echo DONE-$((1+1))")
    child.expect_exact("DONE-2", timeout=60)
    child.expect_exact(PROMPT)
    child.sendline("exit")
    # The plugin does not re-ack duplicates (PROTOCOL.md §6.4), so frames whose ack
    # died with a cut connection stay unacked: the agent drains until its deadline
    # (30 s with fault injection on, 2 s on a real agent) before channel_closed.
    child.expect(pexpect.EOF, timeout=60)
    text = (tmp_path / "plugin-output.txt").read_text()
    # ssmshell says on stderr that it is resuming; on the PTY that line lands wherever
    # the output was (stdout itself stays clean).
    text = re.sub(r"ssmshell: [^\r\n]*\r?\n", "", text).replace("\r", "")
    lines = [x for x in text.split("\n") if x.startswith("L") and x[1:].isdigit()]
    assert lines == [f"L{n}" for n in range(1, 30001)]
    session = list(sm.gateway.sessions.values())[-1]
    assert session.connections >= 3  # two cuts, two resumes


def _round_trip(port: int, size: int) -> bool:
    data = os.urandom(size)
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        def read() -> None:
            while len(got) < size and (chunk := conn.recv(65536)):
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        conn.sendall(data)
        reader.join(30)
    return bytes(got) == data


@pytest.mark.parametrize("mode", ["smux", "basic", "remote-host"])
def test_port_forward(plugin: str, sm: LocalSessionManager, tmp_path: Path, mode: str,
                      echo_port: int) -> None:
    """smux with 8 concurrent connections (new agents), basic with one at a time
    (an agent at or below 3.0.196.0, §11.1), and smux to a remote host."""
    import pexpect

    if mode == "basic":
        sm.gateway.options.agent_version = "3.0.161.0"
    local = free_port()
    request: dict[str, Any] = {
        "Target": INSTANCE, "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": [str(echo_port)], "localPortNumber": [str(local)]}}
    if mode == "remote-host":
        request["DocumentName"] = "AWS-StartPortForwardingSessionToRemoteHost"
        request["Parameters"]["host"] = ["localhost"]
    response = start(sm, **request)
    child = spawn(plugin, sm, tmp_path, response, request)
    try:
        child.expect_exact(f"Port {local} opened for sessionId")
        time.sleep(0.3)
        if mode != "basic":
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda _: _round_trip(local, 300_000), range(8)))
        else:
            results = []
            for _ in range(3):  # the plugin takes the next connection after each one ends
                results.append(_round_trip(local, 300_000))
                time.sleep(0.3)
        assert results == [True] * len(results)
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    # Ctrl-C makes the plugin call TerminateSession on the endpoint it was given (a
    # plugin that just went away would leave the agent waiting for a resume).
    deadline = time.monotonic() + 5
    while (session := sm.gateway.sessions.get(response["SessionId"])) is not None \
            and not session.ended.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session is None or session.ended.is_set()


def test_ssh_style_stdio_forwarding(plugin: str, sm: LocalSessionManager, tmp_path: Path,
                                    echo_port: int) -> None:
    """AWS-StartSSHSession (a Port session without ``type``): the plugin carries its
    stdin/stdout, as under ``ssh -o ProxyCommand``."""
    import subprocess

    request = {"Target": INSTANCE, "DocumentName": "AWS-StartSSHSession",
               "Parameters": {"portNumber": [str(echo_port)]}}
    session = {k: v for k, v in start(sm, **request).items() if k != "ResponseMetadata"}
    proc = subprocess.Popen(
        [plugin, json.dumps(session), sm.region, "StartSession", "", json.dumps(request),
         sm.endpoint_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=plugin_env(sm, tmp_path))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        data = os.urandom(500_000)
        got = bytearray()

        def read() -> None:
            assert proc.stdout is not None
            while not got.endswith(data[-64:]) and (chunk := proc.stdout.read1(65536)):
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        proc.stdin.write(data)
        proc.stdin.flush()
        reader.join(30)
        # The official plugin writes its banner to stdout first (ssh skips lines before
        # the server's version string, RFC 4253 §4.2); ssmshell keeps stdout clean.
        banner = f"\nStarting session with SessionId: {session['SessionId']}\n".encode()
        assert bytes(got) == (banner + data if plugin == OFFICIAL else data)
    finally:
        proc.kill()
        proc.wait(10)



@pytest.mark.skipif(not AWS_CLI, reason="the AWS CLI is not installed")
@pytest.mark.parametrize("command", [
    ["ssm", "start-session", "--target", INSTANCE],
    ["ecs", "execute-command", "--cluster", "demo", "--task", TASK, "--container", "app",
     "--interactive", "--command", "/bin/sh"],
    ["ecs", "execute-command", "--cluster", "plain", "--task",
     "3d4e5f60718293a4b5c6d7e8f90a1b2c", "--interactive", "--command", "/bin/sh"],
], ids=["ssm-start-session", "ecs-execute-command-kms", "ecs-execute-command-plain"])
def test_the_aws_cli_unchanged(plugin: str, sm: LocalSessionManager, tmp_path: Path,
                               command: list[str]) -> None:
    """``aws ... --endpoint-url`` as the README shows, the plugin found on PATH."""
    import pexpect

    assert AWS_CLI
    env = plugin_env(sm, tmp_path)
    env["PATH"] = os.pathsep.join([str(Path(plugin).parent), env.get("PATH", "")])
    child = pexpect.spawn(AWS_CLI, [*command, "--endpoint-url", sm.endpoint_url], env=env,
                          timeout=30, encoding="utf-8", codec_errors="replace",
                          dimensions=(30, 100))
    child.logfile_read = open(tmp_path / "plugin-output.txt", "w")  # noqa: SIM115
    if "plain" not in command:
        child.expect_exact("This session is encrypted using AWS KMS.")
    child.expect_exact(PROMPT)
    child.sendline("echo hi-$((2+3))")
    child.expect_exact("hi-5")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
