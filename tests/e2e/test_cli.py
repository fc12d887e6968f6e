"""The CLI end to end against the local Session Manager: target resolution, the picker,
every error a user meets (one line, its exit code, no traceback), terminal restoration
and the secrecy of tokens and keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from ssmshell.errors import Exit
from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

TIMEOUT = 30
WEB = "i-0123456789abcdef0"  # demo-web, 10.0.0.11, 203.0.113.11
DB = "i-0fedcba9876543210"  # demo-db
ON_PREM = "mi-0123456789abcdef0"  # on-prem-box, 192.168.1.20


def run_cli(env: dict[str, str], *args: str, stdin: bytes = b"echo out=$((6*7))\n",
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssmshell_argv(*args), input=stdin, env=env, capture_output=True,
                          timeout=timeout)


def targets_of(sm: LocalSessionManager) -> list[str]:
    return [r.target for r in sm.registry.sessions()]


# ------------------------------------------------------------------ target resolution


@pytest.mark.parametrize("typed,expected", [
    (WEB, WEB), ("demo-web", WEB), ("10.0.0.11", WEB), ("203.0.113.11", WEB),
    ("ip-10-0-0-12.ec2.internal", DB), ("on-prem-box", ON_PREM), ("192.168.1.20", ON_PREM),
], ids=["id", "name-tag", "private-ip", "public-ip", "private-dns", "managed-name",
        "managed-ip"])
def test_start_session_resolves_target(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                       typed: str, expected: str) -> None:
    proc = run_cli(cli_env, "start-session", typed)
    assert proc.returncode == 0, proc.stderr
    assert b"out=42" in proc.stdout
    assert targets_of(local_sm) == [expected]


def test_exec_by_service(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    proc = run_cli(cli_env, "exec", "--cluster", "demo", "--service", "web", "--container",
                   "app")
    assert proc.returncode == 0, proc.stderr
    assert b"out=42" in proc.stdout
    # §2.3: ecs:<cluster>_<task id>_<runtime id>, through ecs:ExecuteCommand.
    assert targets_of(local_sm) == [
        "ecs:demo_0a1b2c3d4e5f60718293a4b5c6d7e8f9_0a1b2c3d4e5f60718293a4b5c6d7e8f9-1234567890"]
    assert local_sm.registry.sessions()[0].is_ecs


def test_exec_single_container_task_needs_no_container(local_sm: LocalSessionManager,
                                                       cli_env: dict[str, str]) -> None:
    proc = run_cli(cli_env, "exec", "--cluster", "plain", "--task",
                   "arn:aws:ecs:us-east-1:123456789012:task/plain/"
                   "3d4e5f60718293a4b5c6d7e8f90a1b2c")
    assert proc.returncode == 0, proc.stderr
    assert targets_of(local_sm)[0].startswith("ecs:plain_3d4e5f60718293a4b5c6d7e8f90a1b2c_")


def test_ambiguous_without_terminal_lists_candidates(local_sm: LocalSessionManager,
                                                     cli_env: dict[str, str]) -> None:
    proc = run_cli(cli_env, "exec", "--cluster", "demo", "--task",
                   "0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    assert proc.returncode == Exit.AMBIGUOUS_TARGET
    line = proc.stderr.decode()
    assert line.count("\n") == 1 and "app" in line and "sidecar" in line
    proc = run_cli(cli_env, "start-session", "demo-*")
    assert proc.returncode == Exit.AMBIGUOUS_TARGET
    assert WEB in proc.stderr.decode() and DB in proc.stderr.decode()


def test_picker_with_keystrokes(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    """No TARGET on a terminal: the picker lists instances; typing filters, Enter picks."""
    argv = ssmshell_argv("start-session")
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, dimensions=(30, 100),
                          timeout=TIMEOUT)
    child.expect("demo-db")
    child.send("on-prem")
    time.sleep(0.3)
    child.send("\r")
    child.expect("This session is encrypted using AWS KMS.")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert targets_of(local_sm) == [ON_PREM]


def test_exec_picker_cluster_task_container(local_sm: LocalSessionManager,
                                            cli_env: dict[str, str]) -> None:
    """exec with nothing given: clusters → tasks → containers, moved with the arrow keys."""
    argv = ssmshell_argv("exec")
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, dimensions=(30, 120),
                          timeout=TIMEOUT)
    child.expect("plain")
    child.send("plain\r")  # filter the clusters to "plain": one left
    child.expect(r"\$ |# ")  # a single task with a single container: straight to the shell
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert targets_of(local_sm)[0].startswith("ecs:plain_")

    argv = ssmshell_argv("exec", "--cluster", "demo", "--service", "web")
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, dimensions=(30, 120),
                          timeout=TIMEOUT)
    child.expect("sidecar")
    child.send("\x1b[B")  # down: the second container
    time.sleep(0.3)
    child.send("\r")
    child.expect("encrypted using AWS KMS")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert targets_of(local_sm)[1].endswith("-2345678901")  # sidecar's runtime id


def test_picker_escape_cancels(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    argv = ssmshell_argv("start-session")
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, timeout=TIMEOUT)
    child.expect("demo-db")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == Exit.INTERRUPTED
    assert "Traceback" not in (child.before or b"").decode(errors="replace")
    assert targets_of(local_sm) == []


# ------------------------------------------------------------------ errors


@pytest.fixture
def no_credentials(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def assert_one_line(proc: subprocess.CompletedProcess[bytes], code: int, *words: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert err.startswith("ssmshell: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    assert proc.stdout == b""


def test_no_credentials(local_sm: LocalSessionManager, no_credentials: dict[str, str]) -> None:
    assert_one_line(run_cli(no_credentials, "start-session", WEB), Exit.NO_CREDENTIALS,
                    "no AWS credentials")


def test_expired_sso_token(local_sm: LocalSessionManager, no_credentials: dict[str, str]) -> None:
    Path(no_credentials["AWS_CONFIG_FILE"]).write_text(
        "[profile work]\nsso_start_url = https://example.awsapps.com/start\n"
        "sso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = Admin\n"
        "region = us-east-1\n")
    assert_one_line(run_cli(no_credentials, "start-session", "--profile", "work", WEB),
                    Exit.SSO_EXPIRED, "aws sso login --profile work")


@pytest.mark.parametrize("action,args", [
    ("ssm:StartSession", ["start-session", WEB]),
    ("ecs:ExecuteCommand", ["exec", "--cluster", "demo", "--task",
                            "1b2c3d4e5f60718293a4b5c6d7e8f90a"]),
], ids=["start-session", "execute-command"])
def test_access_denied_names_the_permission(local_sm: LocalSessionManager,
                                            cli_env: dict[str, str], action: str,
                                            args: list[str]) -> None:
    local_sm.config.denied_actions = {action}
    assert_one_line(run_cli(cli_env, *args), Exit.ACCESS_DENIED, f"lacks the {action} permission")


def test_generate_data_key_denied(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    """Denied during the handshake, GenerateDataKey is an access denial like the others
    (the issue lists the three together); KMS_FAILED is for the other KMS failures."""
    local_sm.config.denied_actions = {"kms:GenerateDataKey"}
    assert_one_line(run_cli(cli_env, "start-session", WEB), Exit.ACCESS_DENIED,
                    "lacks the kms:GenerateDataKey permission")


@pytest.mark.parametrize("args,code,words", [
    (["start-session", "no-such-name"], Exit.TARGET_NOT_FOUND, ["no instance matches"]),
    (["start-session", "i-0000000000000abcd"], Exit.TARGET_NOT_FOUND, ["target not found"]),
    (["start-session", "i-00000000000000bad"], Exit.TARGET_NOT_CONNECTED, ["not connected"]),
    (["exec", "--cluster", "nope", "--task", "1b2c3d4e5f60718293a4b5c6d7e8f90a"],
     Exit.TARGET_NOT_FOUND, []),
    (["exec", "--cluster", "demo", "--task", "2c3d4e5f60718293a4b5c6d7e8f90a1b"],
     Exit.EXEC_NOT_ENABLED, ["ECS Exec is not enabled", "--enable-execute-command"]),
], ids=["name", "instance-id", "offline", "cluster", "exec-disabled"])
def test_target_errors(local_sm: LocalSessionManager, cli_env: dict[str, str], args: list[str],
                       code: int, words: list[str]) -> None:
    assert_one_line(run_cli(cli_env, *args), code, *words)


def test_managed_agent_not_running(local_sm: LocalSessionManager,
                                   cli_env: dict[str, str]) -> None:
    task = next(t for t in local_sm.config.tasks if t.task_id.startswith("1b2c"))
    task.containers[0].managed_agent_status = "STOPPED"
    assert_one_line(run_cli(cli_env, "exec", "--cluster", "demo", "--task", task.task_id),
                    Exit.EXEC_NOT_ENABLED, "ECS Exec agent", "STOPPED")


def test_kms_context_failure(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    local_sm.default_faults = Faults(kms_decrypt_fail=True)
    assert_one_line(run_cli(cli_env, "start-session", WEB), Exit.KMS_FAILED,
                    "InvalidCiphertextException")


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_websocket_unreachable_times_out(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                         blackhole: int) -> None:
    local_sm.registry._stream_url_for = (  # type: ignore[method-assign]
        lambda sid: f"ws://127.0.0.1:{blackhole}/v1/data-channel/{sid}?role=publish_subscribe")
    env = dict(cli_env, SSMSHELL_CONNECT_TIMEOUT="2")
    started = time.monotonic()
    proc = run_cli(env, "start-session", WEB)
    assert time.monotonic() - started < 10
    assert_one_line(proc, Exit.UNREACHABLE, "cannot reach the data channel",
                    f"127.0.0.1:{blackhole}")
    assert "token" not in proc.stderr.decode().lower()


def test_session_closed_by_remote_side(local_sm: LocalSessionManager,
                                       cli_env: dict[str, str]) -> None:
    """TerminateSession from elsewhere: channel_closed → exit 0, the end is said."""
    argv = ssmshell_argv("start-session", WEB)
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, timeout=TIMEOUT)
    child.expect("encrypted using AWS KMS")
    child.sendline("PS1='READY> '")
    child.expect("READY> ")
    session_id = local_sm.registry.sessions()[0].session_id
    local_sm.registry.terminate(session_id)
    child.expect(f"session {session_id} ended")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# ------------------------------------------------------------------ terminal restored


def stty_after(env: dict[str, str], args: list[str], action: str) -> tuple[int, str]:
    """Run ssmshell in a shell under a PTY, do ``action`` to it, return (ssmshell's exit
    status, the terminal's ``stty -a`` afterwards)."""
    line = " ".join(ssmshell_argv(*args))
    child = pexpect.spawn("/bin/sh", ["-c", f"{line}; echo STATUS=$?; stty -a; echo DONE"],
                          env=env, timeout=TIMEOUT)
    child.expect("encrypted using AWS KMS")
    child.sendline("PS1='READY> '")
    child.expect("READY> ")
    if action == "exit":
        child.sendline("exit 3")
    elif action == "sigterm":
        pid = int(subprocess.check_output(["pgrep", "-P", str(child.pid), "-f", "ssmshell"]))
        os.kill(pid, signal.SIGTERM)
    elif action == "sighup":
        pid = int(subprocess.check_output(["pgrep", "-P", str(child.pid), "-f", "ssmshell"]))
        os.kill(pid, signal.SIGHUP)
    child.expect(r"STATUS=(\d+)")
    status = int(child.match.group(1))
    child.expect("DONE")
    settings = child.before.decode()
    child.expect(pexpect.EOF)
    return status, settings


@pytest.mark.parametrize("action,status", [("exit", 0), ("sigterm", 128 + 15),
                                           ("sighup", 128 + 1)])
def test_terminal_restored(local_sm: LocalSessionManager, cli_env: dict[str, str],
                           action: str, status: int) -> None:
    got, settings = stty_after(cli_env, ["start-session", WEB], action)
    assert got == status
    words = settings.split()
    assert "icanon" in words and "echo" in words and "isig" in words, settings


# ------------------------------------------------------------------ secrets


def test_tokens_and_keys_never_leak(local_sm: LocalSessionManager,
                                    cli_env: dict[str, str]) -> None:
    """The session token, the KMS data key and the secret key are never in ssmshell's argv,
    environment or --debug log."""
    local_sm.registry.keep_tokens = True
    local_sm.kms.keep_data_keys = True
    argv = ssmshell_argv("start-session", "--debug", WEB)
    child = pexpect.spawn(argv[0], argv[1:], env=cli_env, timeout=TIMEOUT)
    child.expect("encrypted using AWS KMS")
    child.sendline("PS1='READY> '")
    child.expect("READY> ")
    pid = child.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    child.sendline("exit")
    child.expect(pexpect.EOF)
    log = child.before or b""
    child.close()
    assert b"ssmshell debug:" in log  # the debug log was on
    tokens = local_sm.registry.issued_tokens
    assert tokens
    secrets = [t.encode() for t in tokens] + [cli_env["AWS_SECRET_ACCESS_KEY"].encode()]
    keys = local_sm.kms.issued_data_keys
    assert keys
    for secret in secrets:
        for where in (cmdline, log):
            assert secret not in where
    for token in tokens:
        assert token.encode() not in environ
    for key in keys:
        for form in (key, key.hex().encode(), __import__("base64").b64encode(key)):
            assert form not in log and form not in cmdline and form not in environ
