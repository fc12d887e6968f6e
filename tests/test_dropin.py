"""ssmshell under the name session-manager-plugin: the calling convention's edges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssmshell import dropin


@pytest.fixture
def plugin(tmp_path: Path) -> str:
    script = shutil.which("ssmshell", path=str(Path(sys.executable).parent))
    assert script
    link = tmp_path / "session-manager-plugin"
    link.symlink_to(script)
    return str(link)


def run(plugin: str, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([plugin, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def test_no_arguments_is_the_installed_check(plugin: str) -> None:
    out = run(plugin)
    assert (out.returncode, out.stdout.strip()) == (0, dropin.INSTALLED)


def test_version_is_the_protocol_version_spoken(plugin: str) -> None:
    from ssmshell.protocol.state import CLIENT_VERSION

    out = run(plugin, "--version")
    assert (out.returncode, out.stdout.strip()) == (0, CLIENT_VERSION)


@pytest.mark.parametrize(("args", "message"), [
    (["{}", "us-east-1", "Frobnicate"], "unknown operation 'Frobnicate'"),
    (["not json", "us-east-1", "StartSession"], "neither JSON nor a set environment"),
    (["{oops", "us-east-1", "StartSession"], "the session response is not valid JSON"),
    (['{"SessionId": "s"}', "us-east-1", "StartSession"], "the session response has no"),
    (['{"SessionId": "s", "StreamUrl": "ws://x", "TokenValue": "t"}', "us-east-1",
      "StartSession", "", "[1]"], "the request is not a JSON object"),
    (["x", "y"], "usage: session-manager-plugin"),
])
def test_bad_calls_get_one_line_and_exit_2(plugin: str, args: list[str],
                                           message: str) -> None:
    out = run(plugin, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr
    assert "Traceback" not in out.stderr


def test_response_from_the_environment_with_execute_command_spelling(
        plugin: str, tmp_path: Path) -> None:
    """The AWS CLI passes the variable's name; ExecuteCommand spells the keys in
    camelCase. An unreachable stream URL then fails in one line, not a hang."""
    response = {"sessionId": "s-1", "streamUrl": "ws://127.0.0.1:9/v1/data-channel/s-1",
                "tokenValue": "secret-token-value"}
    out = run(plugin, "AWS_SSM_START_SESSION_RESPONSE", "us-east-1", "StartSession", "",
              json.dumps({"Target": "i-0123456789abcdef0"}), "http://127.0.0.1:9",
              env={"AWS_SSM_START_SESSION_RESPONSE": json.dumps(response),
                   "SSMSHELL_CONNECT_TIMEOUT": "2", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                   "AWS_SECRET_ACCESS_KEY": "secret", "HOME": str(tmp_path)})
    assert "Starting session with SessionId: s-1" in out.stderr
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "secret-token-value" not in out.stderr + out.stdout
