"""ssh through ``ssmshell proxy`` (§10.5): a real OpenSSH client and server on this machine.

The test runs its own ``sshd`` on a loopback port as the current user, with keys
made for it in a temporary directory. ``ssh -o ProxyCommand='ssmshell proxy %h %p'``
then reaches it through the local Session Manager: AWS-StartSSHSession for the
instance id ``%h`` makes the agent emulator dial ``localhost:%p``, i.e. that sshd.
Nothing is skipped: without OpenSSH the tests fail and say what to install.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ssmshell.local.server import LocalSessionManager
from tests.conftest import free_port, serve_threads, ssmshell_argv

INSTANCE = "i-0123456789abcdef0"
TIMEOUT = 60
SSHD = "/usr/sbin/sshd"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server")


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or (SSHD if name == "sshd" and os.access(SSHD, os.X_OK)
                                   else None)
    if found is None:
        pytest.fail(f"{name} is missing: install {package} (apt-get install "
                    f"openssh-server openssh-client) to run the ssh tests", pytrace=False)
    return found


@dataclass
class Sshd:
    port: int
    key: Path
    user: str
    sftp: bool


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A private sshd on 127.0.0.1, public-key login for the current user only."""
    sshd_path = tool("sshd", "openssh-server")
    keygen = tool("ssh-keygen", "openssh-client")
    tool("ssh", "openssh-client")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
    host_key, user_key = tmp_path / "host_ed25519", tmp_path / "id_ed25519"
    for key in (host_key, user_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    sftp = next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"PidFile {tmp_path / 'sshd.pid'}", f"AuthorizedKeysFile {tmp_path}/authorized_keys",
        "UsePAM no", "StrictModes no", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "LogLevel ERROR",
        *([f"Subsystem sftp {sftp}"] if sftp else []), ""]))
    log = tmp_path / "sshd.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([sshd_path, "-D", "-e", "-f", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {log.read_text()}", pytrace=False)
            time.sleep(0.05)
        yield Sshd(port, user_key, getpass.getuser(), sftp is not None)
    finally:
        proc.terminate()
        proc.wait(10)


def ssh_options(sshd: Sshd) -> list[str]:
    proxy = shlex.join(ssmshell_argv("proxy")) + " %h %p"
    return ["-F", "/dev/null", "-o", f"ProxyCommand={proxy}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", str(sshd.key)]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT)


def test_ssh_echo_through_proxy(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                sshd: Sshd) -> None:
    ssh = tool("ssh", "openssh-client")
    started = time.monotonic()
    proc = run([ssh, *ssh_options(sshd), "-p", str(sshd.port),
                f"{sshd.user}@{INSTANCE}", "echo hello"], cli_env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"hello\n"
    # Nothing from the proxy either: ssh's SIGHUP at the end is its normal end.
    assert proc.stderr == b"", proc.stderr.decode()
    records = local_sm.registry.sessions()
    assert [(r.document_name, r.target) for r in records] == [("AWS-StartSSHSession", INSTANCE)]
    assert records[0].properties["portNumber"] == str(sshd.port)
    assert wait_ended(local_sm) == [""]  # ended cleanly on the agent's side too
    print(f"\nssh echo through ssmshell proxy: {elapsed:.2f} s")


def test_scp_five_megabytes_up_and_back(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                        sshd: Sshd, tmp_path: Path) -> None:
    scp = tool("scp", "openssh-client")
    original = tmp_path / "original.bin"
    original.write_bytes(os.urandom(5 * 1024 * 1024))
    remote = tmp_path / "remote.bin"
    back = tmp_path / "back.bin"
    legacy = [] if sshd.sftp else ["-O"]  # the SCP protocol when there is no sftp-server
    base = [scp, *legacy, *ssh_options(sshd), "-P", str(sshd.port)]
    where = f"{sshd.user}@{INSTANCE}"
    started = time.monotonic()
    up = run([*base, str(original), f"{where}:{remote}"], cli_env)
    assert (up.returncode, up.stderr) == (0, b""), up.stderr.decode()
    down = run([*base, f"{where}:{remote}", str(back)], cli_env)
    assert (down.returncode, down.stderr) == (0, b""), down.stderr.decode()
    elapsed = time.monotonic() - started
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    assert hashlib.sha256(remote.read_bytes()).hexdigest() == digest
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert [r.document_name for r in local_sm.registry.sessions()] == [
        "AWS-StartSSHSession"] * 2
    print(f"\nscp 5 MB up and back ({'sftp' if sshd.sftp else 'scp'} protocol): "
          f"{elapsed:.2f} s")


# ------------------------------------------------------------------ the proxy on its own


class Proxy:
    """``ssmshell proxy INSTANCE PORT`` with pipes, as ssh runs it."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.proc = subprocess.Popen(ssmshell_argv("proxy", INSTANCE, str(port)), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def read(self, size: int, timeout: float = TIMEOUT) -> bytes:
        """Exactly ``size`` bytes of the proxy's stdout (fewer only at EOF)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {got!r} from the proxy in {timeout} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, size - len(got))
                if not chunk:
                    break
                got += chunk
        return got

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, timeout: float = 15) -> tuple[int, str]:
        """Wait for the exit; (status, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the proxy did not exit") from None
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return self.proc.returncode, err


class BannerServer:
    """Speaks first (a banner, as SMTP or MySQL servers do), then echoes; or, with
    ``flood``, sends that many bytes and echoes nothing."""

    def __init__(self, banner: bytes = b"220 banner from the server\n", flood: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.banner, self.flood = banner, flood
        serve_threads(self.sock, self._serve)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(self.banner)
            if self.flood:
                block = os.urandom(64 * 1024)
                for _ in range(self.flood // len(block)):
                    conn.sendall(block)
                return
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def banner_server() -> Iterator[BannerServer]:
    server = BannerServer()
    yield server
    server.close()


def wait_ended(sm: LocalSessionManager, timeout: float = 10) -> list[str | None]:
    """Wait until every agent session has ended; their channel_closed reasons."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = list(sm.gateway.sessions.values())
        if sessions and all(s.ended.is_set() for s in sessions):
            return [s.close_reason for s in sessions]
        time.sleep(0.05)
    raise AssertionError("the session did not end on the agent")


def test_proxy_server_speaks_first(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                   banner_server: BannerServer) -> None:
    """§10.1: the agent dials at once, so a banner arrives before we send anything;
    stdin EOF then ends the session (§10.5) and the proxy exits 0, quietly."""
    proxy = Proxy(cli_env, banner_server.port)
    banner = banner_server.banner
    assert proxy.read(len(banner), timeout=10) == banner
    proxy.write(b"ping\n")
    assert proxy.read(5) == b"ping\n"
    assert proxy.proc.stdin is not None
    proxy.proc.stdin.close()
    started = time.monotonic()
    status, err = proxy.finish()
    assert (status, err) == (0, "")
    assert time.monotonic() - started < 5
    assert wait_ended(local_sm) == [""]


def test_proxy_hangup_from_ssh_is_quiet(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                        banner_server: BannerServer) -> None:
    """ssh ends its ProxyCommand with SIGHUP: no message, the session is ended."""
    proxy = Proxy(cli_env, banner_server.port)
    assert proxy.read(len(banner_server.banner))
    proxy.proc.send_signal(signal.SIGHUP)
    status, err = proxy.finish()
    assert err == ""
    assert status in (0, 128 + signal.SIGHUP)
    wait_ended(local_sm)
    assert [r.status for r in local_sm.registry.sessions("History")] == ["Terminated"]


def test_proxy_reader_gone(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    """Whoever reads the proxy's stdout goes away mid-stream: the proxy ends the session
    and exits without a traceback."""
    server = BannerServer(b"", flood=20 * 1024 * 1024)
    try:
        proxy = Proxy(cli_env, server.port)
        assert len(proxy.read(1000)) == 1000
        assert proxy.proc.stdout is not None
        proxy.proc.stdout.close()
        status, err = proxy.finish()
    finally:
        server.close()
    assert (status, err) == (0, ""), err
    wait_ended(local_sm)


def test_proxy_port_refused(local_sm: LocalSessionManager, cli_env: dict[str, str]) -> None:
    """Nothing listens on the port: one line saying so, a failure status."""
    port = free_port()
    proxy = Proxy(cli_env, port)
    status, err = proxy.finish()
    assert status != 0
    assert err.startswith("ssmshell: ") and err.count("\n") == 1, err
    assert "Unable to connect to specified port" in err, err


def test_ssh_config_snippet(local_sm: LocalSessionManager, cli_env: dict[str, str],
                            sshd: Sshd, tmp_path: Path) -> None:
    """What ``ssmshell ssh-config`` prints, used as is: ``ssh i-…`` works, the host key is
    learnt on first use (accept-new) and checked the next time."""
    ssh = tool("ssh", "openssh-client")
    env = dict(cli_env, PATH=os.pathsep.join([os.path.dirname(sys.executable),
                                              cli_env.get("PATH", "")]))
    snippet = subprocess.run(ssmshell_argv("ssh-config", "--region", local_sm.region),
                             env=env, capture_output=True, check=True).stdout.decode()
    assert f"ProxyCommand ssmshell proxy --region {local_sm.region} %h %p" in snippet
    known = tmp_path / "known_hosts"
    config = tmp_path / "ssh_config"
    config.write_text(snippet + "".join(f"    {line}\n" for line in (
        f"Port {sshd.port}", f"User {sshd.user}", f"IdentityFile {sshd.key}",
        f"UserKnownHostsFile {known}", "BatchMode yes", "LogLevel ERROR")))
    for n in (1, 2):
        proc = run([ssh, "-F", str(config), INSTANCE, f"echo run {n}"], env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"run {n}\n".encode(), b""), \
            proc.stderr.decode()
    assert known.read_text().startswith(f"[{INSTANCE}]:{sshd.port} ")
