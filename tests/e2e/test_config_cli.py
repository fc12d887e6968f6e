"""The config file in use: aliases and defaults reach the session commands; opaque
not-connected errors suggest the exact doctor command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ssmshell.errors import Exit
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

CONFIG = """
[defaults]
container = "sidecar"

[alias.api]
cluster = "demo"
service = "web"
container = "app"
command = "echo alias-command-ran"

[alias.bastion]
target = "demo-db"
"""


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssmshell_argv(*args), input=b"", env=env, capture_output=True,
                          timeout=60)


def with_config(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return dict(cli_env, SSMSHELL_CONFIG=str(path))


def test_exec_alias(local_sm: LocalSessionManager, cli_env: dict[str, str],
                    tmp_path: Path) -> None:
    proc = cli(with_config(cli_env, tmp_path), "exec", "api")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"alias-command-ran\n"
    assert local_sm.registry.sessions()[0].target.endswith("-1234567890")  # app


def test_default_container(local_sm: LocalSessionManager, cli_env: dict[str, str],
                           tmp_path: Path) -> None:
    proc = cli(with_config(cli_env, tmp_path), "exec", "--cluster", "demo", "--service", "web",
               "--command", "true")
    assert proc.returncode == 0, proc.stderr
    assert local_sm.registry.sessions()[0].target.endswith("-2345678901")  # sidecar


def test_instance_alias(local_sm: LocalSessionManager, cli_env: dict[str, str],
                        tmp_path: Path) -> None:
    proc = cli(with_config(cli_env, tmp_path), "run", "bastion", "--", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, b"hi\n")
    assert local_sm.registry.sessions()[0].target == "i-0fedcba9876543210"


def test_unknown_alias(local_sm: LocalSessionManager, cli_env: dict[str, str],
                       tmp_path: Path) -> None:
    proc = cli(with_config(cli_env, tmp_path), "exec", "nope")
    assert proc.returncode == Exit.USAGE
    assert b"no ECS alias 'nope'" in proc.stderr and b"api" in proc.stderr


def test_not_connected_suggests_doctor(local_sm: LocalSessionManager,
                                       cli_env: dict[str, str]) -> None:
    proc = cli(cli_env, "start-session", "i-00000000000000bad")
    assert proc.returncode == Exit.TARGET_NOT_CONNECTED
    assert b"(check it with: ssmshell doctor i-00000000000000bad)" in proc.stderr
    proc = cli(cli_env, "exec", "--cluster", "demo", "--task",
               "2c3d4e5f60718293a4b5c6d7e8f90a1b")
    assert proc.returncode == Exit.EXEC_NOT_ENABLED
    assert (b"ssmshell doctor --cluster demo --task 2c3d4e5f60718293a4b5c6d7e8f90a1b"
            in proc.stderr)
