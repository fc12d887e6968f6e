"""``port-forward`` to an ECS task: ssm:StartSession on the §2.3 ``ecs:`` target."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv


def test_port_forward_to_ecs_task(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                  echo_port: int) -> None:
    proc = subprocess.Popen(
        ssmshell_argv("port-forward", "--cluster", "demo", "--service", "web", "--container",
                      "sidecar", "-L", f"0:{echo_port}"),
        env=cli_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        match = re.search(r"forwarding 127\.0\.0\.1:(\d+) ->", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=20) as conn:
            conn.sendall(b"hello ecs")
            assert conn.recv(100) == b"hello ecs"
        record = local_sm.registry.sessions()[0]
        assert record.session_type == "Port"
        assert record.target == ("ecs:demo_0a1b2c3d4e5f60718293a4b5c6d7e8f9_"
                                 "0a1b2c3d4e5f60718293a4b5c6d7e8f9-2345678901")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0


def test_target_and_cluster_conflict(local_sm: LocalSessionManager,
                                     cli_env: dict[str, str]) -> None:
    proc = subprocess.run(ssmshell_argv("port-forward", "demo-web", "--cluster", "demo",
                                        "-L", "0:80"), env=cli_env, capture_output=True,
                          timeout=30)
    assert proc.returncode == 2
    assert b"not both" in proc.stderr
