"""Non-interactive commands with real exit codes: ``run`` and ``exec --command`` without a
terminal, on the NonInteractiveCommands path (instances) and the in-band marker path
(ECS, or no ssmshell document, or piped stdin), against the local Session Manager.

The agent emulator runs commands on this machine, so a file written here is the remote
file, and what comes back can be compared byte for byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ssmshell.aws.documents import COMMAND_DOCUMENT
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

TIMEOUT = 60
INSTANCE = "demo-web"
ECS_TARGET = "ecs:demo/0a1b2c3d4e5f60718293a4b5c6d7e8f9/app"
EXEC = ["exec", "--cluster", "demo", "--service", "web", "--container", "app"]


def cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssmshell_argv(*args), input=stdin, env=env, capture_output=True,
                          timeout=TIMEOUT)


SCRIPTS = [("true", 0), ("false", 1), ("echo out; echo err >&2; exit 42", 42),
           ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9)]
IDS = ["0", "1", "42", "sigterm", "sigkill"]


@pytest.mark.parametrize("script,code", SCRIPTS, ids=IDS)
def test_instance_exit_codes_and_separate_streams(local_sm: LocalSessionManager,
                                                  cli_env: dict[str, str], script: str,
                                                  code: int) -> None:
    proc = cli(cli_env, "run", INSTANCE, "--", "sh", "-c", script)
    assert proc.returncode == code, proc.stderr
    if code == 42:
        assert proc.stdout == b"out\n"  # stderr kept apart (separateOutputStream)
        assert proc.stderr == b"err\n"
    assert local_sm.registry.sessions()[0].document_name == COMMAND_DOCUMENT


@pytest.mark.parametrize("script,code", SCRIPTS, ids=IDS)
def test_ecs_exit_codes(local_sm: LocalSessionManager, cli_env: dict[str, str], script: str,
                        code: int) -> None:
    proc = cli(cli_env, "run", ECS_TARGET, "--", "sh", "-c", script)
    assert proc.returncode == code, proc.stderr
    if code == 42:
        assert proc.stdout == b"out\nerr\n"  # one PTY stream, but no \r\n and no markers
        assert proc.stderr == b""
    assert local_sm.registry.sessions()[0].is_ecs


def test_exec_command_without_terminal(local_sm: LocalSessionManager,
                                       cli_env: dict[str, str]) -> None:
    proc = cli(cli_env, *EXEC, "--command", "printf 'a\\nb'; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"a\nb"


def test_marker_is_per_run_and_never_shown(local_sm: LocalSessionManager,
                                           cli_env: dict[str, str]) -> None:
    """Output that looks like a marker of another run passes through untouched."""
    fake = "__SSMSHELL_0123456789abcdef0123456789abcdef_EXIT__7"
    proc = cli(cli_env, "run", ECS_TARGET, "--", "echo", fake)
    assert proc.returncode == 0
    assert proc.stdout == (fake + "\n").encode()
    commands = [r.command or "" for r in local_sm.registry.sessions()]
    proc = cli(cli_env, "run", ECS_TARGET, "--", "true")
    tokens = {c.split("__SSMSHELL_")[1][:32] for c in
              commands + [r.command or "" for r in local_sm.registry.sessions()]}
    assert len(tokens) == 2


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """1 MB with every byte value, CR/LF pairs and control characters included."""
    data = bytes(range(256)) * 64 + b"\r\n\n\r\x03\x04\x1a\x1c" * 1000 + os.urandom(1_000_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("target", [INSTANCE, ECS_TARGET], ids=["instance", "ecs"])
def test_output_pipeline_byte_exact(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                    blob: Path, target: str) -> None:
    proc = cli(cli_env, "run", target, "--", "cat", str(blob))
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(
        blob.read_bytes()).hexdigest()


@pytest.mark.parametrize("target", [INSTANCE, ECS_TARGET], ids=["instance", "ecs"])
def test_input_pipeline_byte_exact(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                   blob: Path, target: str, tmp_path: Path) -> None:
    """``cat blob | ssmshell run T -- sha256sum`` and a copy written remotely."""
    data = blob.read_bytes()
    proc = cli(cli_env, "run", target, "--", "sha256sum", stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    copy = tmp_path / "copy.bin"
    proc = cli(cli_env, "run", target, "--", f"cat > {copy}; exit 5", stdin=data)
    assert proc.returncode == 5
    assert copy.read_bytes() == data


def test_wc_pipeline_like_ssh(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    """``ssmshell run i-… -- cat /etc/hostname | wc -c``"""
    line = " ".join(ssmshell_argv("run", "-n", INSTANCE, "--", "cat", "/etc/hostname"))
    out = subprocess.run(["/bin/sh", "-c", f"{line} | wc -c"], env=cli_env,
                         capture_output=True, timeout=TIMEOUT)
    assert int(out.stdout) == len(Path("/etc/hostname").read_bytes())


def test_no_document_falls_back_to_markers_once(local_sm: LocalSessionManager,
                                                cli_env: dict[str, str]) -> None:
    del local_sm.config.documents[COMMAND_DOCUMENT]
    proc = cli(cli_env, "run", INSTANCE, "--", "sh", "-c", "echo out; exit 42")
    assert proc.returncode == 42
    assert proc.stdout == b"out\n"
    assert proc.stderr.decode().count("ssmshell setup") == 1
    # setup creates it (once), then the separate-stream path is back.
    assert cli(cli_env, "setup").returncode == 0
    again = cli(cli_env, "setup")
    assert again.returncode == 0 and b"already exists" in again.stderr
    proc = cli(cli_env, "run", INSTANCE, "--", "sh", "-c", "echo out; echo err >&2; exit 42")
    assert (proc.returncode, proc.stdout, proc.stderr) == (42, b"out\n", b"err\n")


def test_bad_ecs_target(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    proc = cli(cli_env, "run", "ecs:demo", "--", "true")
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("ssmshell: bad ECS target")
