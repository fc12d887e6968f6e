"""Shared fixtures: the embedded local Session Manager, and ssmshell under a real PTY."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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
