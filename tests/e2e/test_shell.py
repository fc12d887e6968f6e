"""Interactive sessions end to end: ssmshell under a real PTY, through the local Session Manager.

The complete real path: boto3 → local AWS endpoints → websocket → protocol core → raw TTY,
and on the other side the agent emulator running /bin/sh on a PTY.
"""

from __future__ import annotations

import time

import pexpect
import pytest

from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

TIMEOUT = 20


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    argv = ssmshell_argv(*args)
    return pexpect.spawn(argv[0], argv[1:], env=env, dimensions=(24, 80), timeout=TIMEOUT)


def online_instance(sm: LocalSessionManager) -> str:
    return next(i.instance_id for i in sm.config.instances if i.ping_status == "Online")


def exec_target(sm: LocalSessionManager) -> tuple[str, str, str]:
    """(cluster, task id, container) of a task with ECS Exec enabled and several containers."""
    for task in sm.config.tasks:
        if task.enable_execute_command and len(task.containers) > 1:
            return task.cluster, task.task_id, task.containers[0].name
    raise AssertionError("the default config has no multi-container exec task")


def drive_shell(child: pexpect.spawn, kms: bool) -> None:
    if kms:
        child.expect("This session is encrypted using AWS KMS.")
    child.sendline("PS1='READY> '")
    child.expect("READY> ")
    # A command and its output.
    child.sendline("echo result=$((6*7))")
    child.expect("result=42")
    child.expect("READY> ")
    # The initial size is the real one (80x24), not a default.
    child.sendline("stty size")
    child.expect(r"24 80\r\n")
    child.expect("READY> ")
    # Resize: SIGWINCH → Size message → the remote PTY's size changes.
    child.setwinsize(40, 132)
    time.sleep(0.3)
    child.sendline("stty size")
    child.expect(r"40 132\r\n")
    child.expect("READY> ")
    # Ctrl-C reaches the remote PTY as 0x03 and interrupts the command.
    child.sendline("sleep 100")
    time.sleep(0.5)
    started = time.monotonic()
    child.sendcontrol("c")
    child.expect("READY> ")
    assert time.monotonic() - started < 5
    child.sendline("echo after=$((1+1))")
    child.expect("after=2")
    child.expect("READY> ")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


@pytest.mark.parametrize("kms", [True, False], ids=["kms", "plain"])
def test_start_session_shell(local_sm: LocalSessionManager, cli_env: dict[str, str],
                             kms: bool) -> None:
    if not kms:
        local_sm.config.session_kms_key_id = None
    child = spawn(cli_env, "start-session", online_instance(local_sm))
    drive_shell(child, kms)


@pytest.mark.parametrize("kms", [True, False], ids=["kms", "plain"])
def test_exec_shell(local_sm: LocalSessionManager, cli_env: dict[str, str], kms: bool) -> None:
    cluster, task, container = exec_target(local_sm)
    if not kms:
        for c in local_sm.config.clusters:
            c.kms_key_id = None
    child = spawn(cli_env, "exec", "--cluster", cluster, "--task", task,
                  "--container", container, "--command", "/bin/sh")
    drive_shell(child, kms)


def test_piped_stdin_runs_and_ends(local_sm: LocalSessionManager,
                                   cli_env: dict[str, str]) -> None:
    import subprocess

    proc = subprocess.run(
        ssmshell_argv("start-session", online_instance(local_sm)),
        input=b"echo piped=$((2+3))\n", env=cli_env, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert b"piped=5" in proc.stdout
    assert b"encrypted" not in proc.stdout  # banners go to stderr
    assert b"This session is encrypted using AWS KMS." in proc.stderr
