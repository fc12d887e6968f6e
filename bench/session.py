"""Interactive-session latencies of ``ssmshell start-session`` against the local Session Manager.

Run: ``.venv/bin/python bench/session.py [--sessions 5] [--keys 200] [--gap 0.02]
[--rounds 3]`` (about 1.5 min; 2 min with the official plugin).

The local Session Manager runs in a thread of this bench process, with the real
agent's behaviour (1 ms read pacing, 1 s initial PTY read delay, ``/bin/sh``).
``ssmshell start-session i-0123456789abcdef0`` runs as a separate process under
a PTY (``pty.fork``), with the local endpoint's environment and ``HOME`` set to
a temporary directory, and is driven through the PTY master.

Measured (``time.monotonic``: ``CLOCK_MONOTONIC``, comparable across processes):

a. launch → StartSession on the wire: the local endpoint's HTTP handler is
   wrapped in this process and stamps every request as soon as the HTTP server
   has read it (headers and body), before dispatching it. "Launch" is the
   instant before ``pty.fork()``.
b. launch → first byte of the remote prompt on ssmshell's stdout: the remote
   shell's ``PS1`` is a marker; each PTY read is stamped and the read that holds
   the marker's first byte counts. Includes the agent's 1 s initial read delay.
c. keystroke echo: one byte written to the PTY master → the same byte read back
   (ssmshell → websocket → agent → remote PTY echo → agent → websocket →
   ssmshell → local PTY), one keystroke every ``--gap`` seconds (so the agent's
   1 ms pacing sleep never delays an echo). Compared with a raw websocket round
   trip on loopback: a ``websockets`` echo server in a thread of this process
   (where the gateway runs) and an asyncio ``websockets`` client in another
   process (as ssmshell is), same message size as an encrypted 1-byte frame,
   same gap.
c′. the same two figures with every party in a process of its own (the local SM
   and the echo server started by this script in ``--serve`` child processes), as
   in real use where the agent is on another host: shows whether sharing the
   bench's GIL with the agent or the echo server skews (c).
c‴. when the official session-manager-plugin is installed (on PATH or named by
   ``SSMSHELL_OFFICIAL_PLUGIN``): its echo in the same layout (started as the AWS
   CLI starts it, on a StartSession made with boto3) and its peak RSS.
c⁗. the verdict on the echo target: the (c′) layout with the measurements
   interleaved, so that the machine's drift (on this VM the raw RTT itself moves by
   2× between minutes) hits both sides alike: a keystroke to ssmshell, a raw
   websocket round trip (from a probe process that waits on a pipe for each turn),
   in turn, ``--gap`` apart. Figures of ``--rounds`` such runs, each with a fresh
   local SM. With the plugin installed, as many runs again with a keystroke to the
   plugin's session in the turn as well, for the comparison (kept out of the
   verdict: the plugin's process wakes every 100 ms and disturbs its neighbours).
d. remote ``exit`` → ssmshell gone: pidfds (``os.pidfd_open``) of the remote
   shell and of ssmshell become readable when each process ends; also stamped:
   when the agent emulator sends channel_closed.
e. peak RSS of ssmshell: ``ru_maxrss`` from ``os.wait4`` (``VmHWM`` of
   ``/proc/<pid>/status`` read just before ``exit`` as a cross-check).
f. ``ssmshell --help`` wall time, median of 10 (plus ``python -c pass``).

Context and diagnosis, printed after the figures:

* a PTY-only echo round trip (a raw-mode Python echo loop, no network), the
  floor that any terminal path pays;
* where the time to StartSession goes: the path replayed step by step under a
  PTY with the same ssmshell calls (``cli._instance``, ``Aws``), with VmRSS;
* one more session through a tracing wrapper that monkeypatches ssmshell from
  outside (nothing under ``ssmshell/`` is edited): the steps from channel_closed
  to the process being gone, and the stages of a keystroke's echo;
* interpreter finalisation with boto3's clients loaded: normal exit,
  ``gc.freeze()`` first, ``os._exit``;
* ``-X importtime`` of a whole (piped) start-session run and of ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import json
import os
import pty
import re
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import Load, wait_quiet  # noqa: E402  (bench/, the script's folder)

INSTANCE = "i-0123456789abcdef0"
PROMPT = "BENCHPROMPT$ "
TARGET_START_SESSION = 0.15
TARGET_HELP = 0.15
TARGET_ECHO_OVER_RAW = 0.001
TARGET_GONE = 0.1
TARGET_RSS_MB = 45.0
#: An encrypted Output message carrying one byte: 116-byte header + 12 nonce + 1 + 16 tag.
FRAME_SIZE = 145


def ssmshell_argv(*args: str) -> list[str]:
    """The console script of this venv if there is one, else ``python -m ssmshell``."""
    script = Path(sys.executable).with_name("ssmshell")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "ssmshell", *args]


def client_env(home: str) -> dict[str, str]:
    """This environment for an ssmshell under test: no AWS_* variables (the local SM's
    are added per session), ``HOME`` and the AWS files in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PS1"}
    env.update(HOME=home, AWS_CONFIG_FILE=os.path.join(home, "config"), TERM="xterm",
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "credentials"))
    return env


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def p50_p99(values: list[float], unit: str) -> str:
    """``values`` (seconds) as "p50 / p99 ms (n unit)"."""
    return f"{pct(values, 50) * 1000:.2f} / {pct(values, 99) * 1000:.2f} ms ({len(values)} {unit})"


def over(values: list[float], base: list[float]) -> tuple[float, float]:
    """How far ``values`` lie above ``base`` at p50 and at p99, in seconds."""
    return pct(values, 50) - pct(base, 50), pct(values, 99) - pct(base, 99)


def over_text(values: list[float], base: list[float]) -> str:
    at50, at99 = over(values, base)
    return f"{at50 * 1000:+.2f} / {at99 * 1000:+.2f} ms"


def ratio_text(values: list[float], base: list[float]) -> str:
    return (f"{pct(values, 50) / pct(base, 50):.2f}x / "
            f"{pct(values, 99) / pct(base, 99):.2f}x")


# ---------------------------------------------------------------------------- instrumentation


@dataclass
class Stamps:
    """Instants recorded inside the local Session Manager (its thread, this process)."""

    requests: list[tuple[float, str]] = field(default_factory=list)  # (t, X-Amz-Target)
    attached: list[float] = field(default_factory=list)  # websocket attached to the agent
    channel_closed: list[float] = field(default_factory=list)  # agent sent channel_closed
    shell_input: list[float] = field(default_factory=list)  # input bytes reach the shell plugin
    agent_output: list[float] = field(default_factory=list)  # the agent queues PTY output

    def first_after(self, items: list[Any], since: float, name: str | None = None) -> float:
        for item in items:
            t, what = item if isinstance(item, tuple) else (item, None)
            if t >= since and (name is None or what == name):
                return float(t)
        return float("nan")


def instrument(sm: Any, stamps: Stamps) -> None:
    """Wrap the HTTP handler and a few agent methods; call before start_in_thread."""
    from ssmshell.local.agent import AgentSession
    from ssmshell.local.shell import ShellPlugin

    http = sm.endpoints._http
    inner = http._handler

    async def stamped(request: Any) -> Any:
        stamps.requests.append((time.monotonic(), request.headers.get("x-amz-target", "")))
        return await inner(request)

    http._handler = stamped

    attach = AgentSession.attach
    send_closed = AgentSession._send_channel_closed

    async def stamped_attach(self: Any, ws: Any) -> None:
        stamps.attached.append(time.monotonic())
        await attach(self, ws)

    async def stamped_closed(self: Any, reason: str) -> None:
        stamps.channel_closed.append(time.monotonic())
        await send_closed(self, reason)

    on_input = ShellPlugin.on_input
    send = AgentSession.send

    def stamped_input(self: Any, data: bytes) -> None:
        stamps.shell_input.append(time.monotonic())
        on_input(self, data)

    def stamped_send(self: Any, data: bytes, payload_type: int = 1) -> None:
        stamps.agent_output.append(time.monotonic())
        send(self, data, payload_type)

    AgentSession.attach = stamped_attach  # type: ignore[method-assign]
    AgentSession._send_channel_closed = stamped_closed  # type: ignore[method-assign]
    AgentSession.send = stamped_send  # type: ignore[method-assign]
    ShellPlugin.on_input = stamped_input  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- one session


@dataclass
class Run:
    """One ``ssmshell start-session`` from launch to exit."""

    start_session: float = float("nan")
    attached: float = float("nan")
    first_prompt: float = float("nan")
    echo: list[float] = field(default_factory=list)
    echo_in: list[float] = field(default_factory=list)  # typed → input at the shell plugin
    echo_agent: list[float] = field(default_factory=list)  # → the agent queues the echo
    echo_out: list[float] = field(default_factory=list)  # → the echo read from ssmshell's PTY
    sent: list[float] = field(default_factory=list)
    echoed: list[float] = field(default_factory=list)
    exit_sent_to_shell_exit: float = float("nan")
    shell_exit_to_closed_sent: float = float("nan")
    shell_exit_to_gone: float = float("nan")
    closed_sent_to_gone: float = float("nan")
    exit_sent_to_gone: float = float("nan")
    max_rss_mb: float = float("nan")
    vm_hwm_mb: float = float("nan")
    status: int = -1


class Pty:
    """The PTY master of a child process, read with timestamps."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.chunks: list[tuple[float, int]] = []  # (t, offset of the chunk's first byte)
        self.eof = False

    def read_once(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child side is closed
            data = b""
        now = time.monotonic()
        if not data:
            self.eof = True
            return False
        self.chunks.append((now, len(self.buffer)))
        self.buffer += data
        return True

    def wait_for(self, needle: bytes, start: int, timeout: float) -> tuple[int, float]:
        """Read until ``needle`` appears at or after ``start``: (its offset, read time)."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.buffer.find(needle, start)
            if at >= 0:
                return at, self.time_of(at)
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                tail = bytes(self.buffer[-300:])
                raise TimeoutError(f"{needle!r} not seen; last output: {tail!r}")
            self.read_once(left)

    def time_of(self, offset: int) -> float:
        when = float("nan")
        for t, first in self.chunks:
            if first > offset:
                break
            when = t
        return when

    def drain(self, quiet: float) -> None:
        while self.read_once(quiet):
            pass


def vm_hwm_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def spawn(argv: list[str], env: dict[str, str], cols: int = 80, rows: int = 24) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # child: the PTY slave is fds 0-2 and the controlling terminal
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, fd


def run_session(sm: Any, stamps: Stamps, env: dict[str, str], keys: int, gap: float,
                argv: list[str] | None = None) -> Run:
    run = Run()
    launch = time.monotonic()
    pid, fd = spawn(argv or ssmshell_argv("start-session", INSTANCE), env)
    term = Pty(fd)
    gone_fd = os.pidfd_open(pid)
    try:
        _, prompt_t = term.wait_for(PROMPT.encode(), 0, 30)
        run.first_prompt = prompt_t - launch
        run.start_session = stamps.first_after(stamps.requests, launch,
                                               "AmazonSSM.StartSession") - launch
        run.attached = stamps.first_after(stamps.attached, launch) - launch
        term.drain(0.05)

        # (c) keystroke echo: letters typed one at a time, line killed now and then.
        for sent, echoed in type_keys(fd, term, keys, gap):
            run.echo.append(echoed - sent)
            run.sent.append(sent)
            run.echoed.append(echoed)
            got = stamps.first_after(stamps.shell_input, sent)
            queued = stamps.first_after(stamps.agent_output, got)
            run.echo_in.append(got - sent)
            run.echo_agent.append(queued - got)
            run.echo_out.append(echoed - queued)

        # (d) and (e): exit the remote shell, watch both processes end.
        session = list(sm.gateway.sessions.values())[-1]  # the newest
        shell_fd = os.pidfd_open(session.plugin.proc.pid)
        run.vm_hwm_mb = vm_hwm_mb(pid)
        exit_sent = time.monotonic()
        os.write(fd, b"exit\r")
        shell_gone = ssmshell_gone = float("nan")
        watch = {shell_fd, gone_fd}
        deadline = exit_sent + 20
        while watch and time.monotonic() < deadline:
            ready, _, _ = select.select([*watch, fd] if not term.eof else list(watch), [], [],
                                        deadline - time.monotonic())
            now = time.monotonic()
            if fd in ready:
                term.read_once(0)
            if shell_fd in ready:
                shell_gone = now
                watch.discard(shell_fd)
            if gone_fd in ready:
                ssmshell_gone = now
                watch.discard(gone_fd)
        os.close(shell_fd)
        closed_sent = stamps.first_after(stamps.channel_closed, exit_sent)
        run.exit_sent_to_shell_exit = shell_gone - exit_sent
        run.shell_exit_to_closed_sent = closed_sent - shell_gone
        run.shell_exit_to_gone = ssmshell_gone - shell_gone
        run.closed_sent_to_gone = ssmshell_gone - closed_sent
        run.exit_sent_to_gone = ssmshell_gone - exit_sent
        _, status, usage = os.wait4(pid, 0)
        run.status = os.waitstatus_to_exitcode(status)
        run.max_rss_mb = usage.ru_maxrss / 1024
    finally:
        os.close(gone_fd)
        reap(pid)
        os.close(fd)
    return run


# ---------------------------------------------------------------------------- raw websocket


def start_echo_server() -> tuple[str, Callable[[], None]]:
    """A websockets echo server on loopback, on its own loop in a thread of this process."""
    from websockets.asyncio.server import ServerConnection, serve

    loop = asyncio.new_event_loop()
    ready: list[str] = []
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None,
                         ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            ready.append(f"ws://127.0.0.1:{port}/")
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    started.wait(10)

    def close() -> None:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)

    return ready[0], close


class RawClient:
    """A websockets client of the raw echo server, warmed up; :meth:`round_trip` times
    one message there and back."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.payload = os.urandom(size)

    async def __aenter__(self) -> RawClient:
        from websockets.asyncio.client import connect

        self._connect = connect(self.url, compression=None, max_size=None, ping_interval=None)
        self.ws = await self._connect.__aenter__()
        for _ in range(5):  # warm-up
            await self.round_trip()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connect.__aexit__(*exc)

    async def round_trip(self) -> float:
        sent = time.monotonic()
        await self.ws.send(self.payload)
        await self.ws.recv()
        return time.monotonic() - sent


async def ws_client(url: str, count: int, gap: float, size: int) -> list[float]:
    out: list[float] = []
    async with RawClient(url, size) as client:
        for _ in range(count):
            await asyncio.sleep(gap)
            out.append(await client.round_trip())
    return out


def raw_ws_rtt(count: int, gap: float) -> list[float]:
    url, close = start_echo_server()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--ws-client", url, "--keys", str(count),
             "--gap", str(gap)], capture_output=True, text=True, timeout=120, check=True)
    finally:
        close()
    values: list[float] = json.loads(proc.stdout)
    return values


# ---------------------------------------------------------------------------- own processes


def serve_in_process(what: str) -> None:
    """``--serve``: the local SM (or a raw websocket echo server) in this process; prints
    its client environment (or URL) as one JSON line and serves until stdin closes."""
    if what == "sm":
        from ssmshell.local.agent import AgentOptions
        from ssmshell.local.server import LocalSessionManager

        os.environ["PS1"] = PROMPT
        os.environ["ENV"] = ""
        sm = LocalSessionManager(agent_options=AgentOptions(shell="/bin/sh"))
        sm.start_in_thread()
        gc.freeze()  # as `ssmshell local serve` does: no full collection over startup objects
        print(json.dumps(sm.client_env()), flush=True)
        sys.stdin.read()
        sm.stop_thread()
    else:
        url, close = start_echo_server()
        print(json.dumps(url), flush=True)
        sys.stdin.read()
        close()


class Served:
    """A ``--serve`` child process; ``value`` is what it printed."""

    def __init__(self, what: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", what],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     text=True)
        assert self.proc.stdout is not None
        self.value = json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def type_keys(fd: int, term: Pty, keys: int, gap: float) -> list[tuple[float, float]]:
    """Type ``keys`` letters one at a time (line killed now and then): (sent, echoed) each."""
    out = [type_key(fd, term, i, gap) for i in range(keys)]
    os.write(fd, b"\x15")
    term.drain(0.05)
    return out


def type_key(fd: int, term: Pty, i: int, gap: float) -> tuple[float, float]:
    """The ``i``-th keystroke, ``gap`` after the last: (sent, echoed)."""
    if i and i % 50 == 0:
        os.write(fd, b"\x15")  # Ctrl-U: kill the line, keep it short
        term.drain(0.05)
    key = bytes([ord("a") + i % 26])
    time.sleep(gap)
    start = len(term.buffer)
    sent = time.monotonic()
    os.write(fd, key)
    _, echoed = term.wait_for(key, start, 10)
    return sent, echoed


def reap(pid: int) -> None:
    """Kill ``pid`` if it is still running, and wait for it."""
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def plugin_argv(plugin: str, sm_env: dict[str, str]) -> list[str]:
    """The official plugin started as the AWS CLI starts it, on a fresh StartSession."""
    import boto3

    ssm = boto3.client("ssm", endpoint_url=sm_env["AWS_ENDPOINT_URL"],
                       region_name=sm_env["AWS_REGION"],
                       aws_access_key_id=sm_env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=sm_env["AWS_SECRET_ACCESS_KEY"])
    session = ssm.start_session(Target=INSTANCE)
    session.pop("ResponseMetadata", None)
    return [plugin, json.dumps(session), sm_env["AWS_REGION"], "StartSession", "",
            json.dumps({"Target": INSTANCE}), sm_env["AWS_ENDPOINT_URL"]]


def echo_own_processes(env: dict[str, str], keys: int, gap: float,
                       plugin: str | None = None) -> tuple[list[float], float, float]:
    """Keystroke echo with every party in a process of its own, as in real use (the
    terminal, the client, the agent on another host): no party waits for another's
    GIL. The client is ssmshell, or the official ``plugin``. Returns (echo in seconds,
    the client's peak RSS in MB, the client's CPU time per keystroke in seconds)."""
    sm = Served("sm", {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"})
    try:
        session_env = {**env, **sm.value}
        argv = plugin_argv(plugin, sm.value) if plugin else \
            ssmshell_argv("start-session", INSTANCE)
        pid, fd = spawn(argv, session_env)
        term = Pty(fd)
        try:
            term.wait_for(PROMPT.encode(), 0, 30)
            term.drain(0.05)
            cpu_before = cpu_ns(pid)
            echo = [echoed - sent for sent, echoed in type_keys(fd, term, keys, gap)]
            cpu_per_key = (cpu_ns(pid) - cpu_before) / 1e9 / keys
            os.write(fd, b"exit\r")
            term.drain(0.5)
            _, _, usage = os.wait4(pid, 0)
        finally:
            reap(pid)
            os.close(fd)
    finally:
        sm.close()
    return echo, usage.ru_maxrss / 1024, cpu_per_key


def cpu_ns(pid: int) -> int:
    """CPU time of all of ``pid``'s threads so far, in ns (``/proc/*/task/*/schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def raw_rtt_own_processes(keys: int, gap: float) -> list[float]:
    """The raw websocket RTT with the echo server in a process of its own."""
    server = Served("ws-echo")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--ws-client", server.value, "--keys", str(keys),
             "--gap", str(gap)], capture_output=True, text=True, timeout=120, check=True)
    finally:
        server.close()
    raw: list[float] = json.loads(proc.stdout)
    return raw


async def ws_probe(url: str, size: int) -> None:
    """``--ws-probe``: one raw round trip per line on stdin; prints each RTT."""
    loop = asyncio.get_running_loop()
    async with RawClient(url, size) as client:
        print("ready", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(repr(await client.round_trip()), flush=True)


@dataclass
class Interleaved:
    """(c⁗): echo and raw RTT measured in turn, in seconds."""

    echo: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    plugin: list[float] = field(default_factory=list)
    #: ssmshell's keystrokes as (written, echo read) instants, for bench/echo_stages.py.
    typed: list[tuple[float, float]] = field(default_factory=list)


def interleaved(env: dict[str, str], keys: int, gap: float, plugin: str | None,
                into: Interleaved) -> None:
    """One (c⁗) run: ssmshell (and the plugin) in sessions of a local SM of its own,
    a raw websocket probe against an echo server of its own, measured in turn."""
    sm = Served("sm", {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"})
    server = Served("ws-echo")
    probe = subprocess.Popen([sys.executable, __file__, "--ws-probe", server.value],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert probe.stdin is not None and probe.stdout is not None
    sessions: list[tuple[int, int, Pty]] = []
    try:
        assert probe.stdout.readline().strip() == "ready"
        session_env = {**env, **sm.value}
        for argv in [ssmshell_argv("start-session", INSTANCE),
                     *([plugin_argv(plugin, sm.value)] if plugin else [])]:
            pid, fd = spawn(argv, session_env)
            term = Pty(fd)
            sessions.append((pid, fd, term))
            term.wait_for(PROMPT.encode(), 0, 30)
            term.drain(0.05)
        for i in range(keys):
            for n, (_, fd, term) in enumerate(sessions):
                sent, echoed = type_key(fd, term, i, gap)
                if n == 0:
                    into.echo.append(echoed - sent)
                    into.typed.append((sent, echoed))
                else:
                    into.plugin.append(echoed - sent)
            time.sleep(gap)
            probe.stdin.write("\n")
            probe.stdin.flush()
            into.raw.append(float(probe.stdout.readline()))
        for _, fd, term in sessions:
            os.write(fd, b"\x15exit\r")
            term.drain(0.3)
    finally:
        probe.stdin.close()
        probe.wait(30)
        for pid, fd, _ in sessions:
            reap(pid)
            os.close(fd)
        server.close()
        sm.close()


# ---------------------------------------------------------------------------- start-up


def help_times(runs: int, argv: list[str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.monotonic() - start)
    return times


STEPS = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def stamp(name): print(f"STEP {time.monotonic()!r} {rss():.1f} {name}", flush=True)
stamp("interpreter ready (site, .pth)")
import ssmshell.cli as cli
stamp("import ssmshell.cli (click)")
from ssmshell.aws.api import Aws
aws = Aws(region=None, endpoint_url=None)
stamp("import ssmshell.aws.api; Aws()")
target = cli._instance(aws, sys.argv[1]) if hasattr(cli, "_instance") else sys.argv[1]
stamp("cli._instance(): on a TTY its _chooser() imports ssmshell.picker (prompt_toolkit)")
import boto3
stamp("import boto3 (botocore, s3transfer, urllib3)")
aws.session
stamp("boto3.session.Session()")
aws.client("ssm")
stamp("session.client('ssm') (service model, endpoint rules)")
info = aws.start_session(target)
stamp("start_session() returned")
import ssmshell.runner, ssmshell.sessions.shell
from websockets.asyncio.client import connect
stamp("import runner, channel, protocol, cryptography, websockets (after StartSession)")
aws.client("kms")
stamp("session.client('kms') (for GenerateDataKey in the handshake)")
"""


def startup_steps(env: dict[str, str], stamps: Stamps) -> list[tuple[str, float, float]]:
    """The path to StartSession replayed with the same ssmshell calls, step by step, under a
    PTY as the real run is: (step, t since launch, VmRSS MB after it)."""
    launch = time.monotonic()
    pid, fd = spawn([sys.executable, "-c", STEPS, INSTANCE], env)
    term = Pty(fd)
    try:
        while not term.eof:
            term.read_once(30)
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    rows: list[tuple[str, float, float]] = []
    for line in term.buffer.decode(errors="replace").splitlines():
        if line.startswith("STEP "):
            _, t, mb, name = line.rstrip("\r").split(" ", 3)
            rows.append((name, float(t) - launch, float(mb)))
    arrived = stamps.first_after(stamps.requests, launch, "AmazonSSM.StartSession") - launch
    at = next(i for i, row in enumerate(rows) if row[0].startswith("start_session()"))
    rows.insert(at, ("StartSession on the wire (server stamp): serialise, sign, connect, send",
                     arrived, float("nan")))
    return rows


#: An interpreter holding boto3's ssm and kms clients (what ssmshell holds at its end).
FINALISE = r"""
import gc, os, sys, time, boto3
session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="AKIAX",
                                aws_secret_access_key="x")
clients = [session.client(s, endpoint_url="http://127.0.0.1:9") for s in ("ssm", "kms")]
import ssmshell.runner, ssmshell.sessions.shell
if sys.argv[1] == "gc.freeze()":
    gc.freeze()
print(repr(time.monotonic()), flush=True)
if sys.argv[1] == "os._exit(0)":
    os._exit(0)
"""


def finalisation(runs: int = 5) -> dict[str, list[float]]:
    """From the last line of a script to the process being gone, three ways."""
    out: dict[str, list[float]] = {}
    for mode in ("normal exit", "gc.freeze()", "os._exit(0)"):
        for _ in range(runs):
            proc = subprocess.Popen([sys.executable, "-c", FINALISE, mode],
                                    stdout=subprocess.PIPE, text=True)
            gone = os.pidfd_open(proc.pid)
            assert proc.stdout is not None
            last = float(proc.stdout.readline())
            select.select([gone], [], [], 30)
            out.setdefault(mode, []).append(time.monotonic() - last)
            os.close(gone)
            proc.wait()
    return out


#: A raw-mode echo loop: the PTY round trip floor, without any network or protocol.
PTY_ECHO = r"""
import os, tty
tty.setraw(0)
os.write(1, b"READY\n")
while True:
    data = os.read(0, 1024)
    if not data or b"\x04" in data:
        break
    os.write(1, data)
"""


def pty_rtt(count: int, gap: float) -> list[float]:
    """Keystroke → echo through one PTY and a Python process in raw mode (no ssmshell)."""
    pid, fd = spawn([sys.executable, "-c", PTY_ECHO], dict(os.environ))
    term = Pty(fd)
    try:
        term.wait_for(b"READY", 0, 10)
        out = [echoed - sent for sent, echoed in type_keys(fd, term, count, gap)]
        os.write(fd, b"\x04")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    return out


@dataclass
class Import:
    """One line of ``-X importtime``."""

    name: str
    own: float
    total: float
    children: list[Import] = field(default_factory=list)


def importtime(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> list[Import]:
    """The top-level imports of a run under ``-X importtime``, with their trees."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, input=stdin,
                          capture_output=True, timeout=60)
    pending: dict[int, list[Import]] = {}
    pattern = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
    for line in proc.stderr.decode(errors="replace").splitlines():
        match = pattern.match(line)
        if match is None:
            continue
        depth = len(match.group(3)) // 2
        item = Import(match.group(4), int(match.group(1)) / 1e6, int(match.group(2)) / 1e6)
        item.children = pending.pop(depth + 1, [])
        pending.setdefault(depth, []).append(item)
    return pending.get(0, [])


def print_imports(title: str, imports: list[Import], top: int = 10, expand: int = 3) -> None:
    total = sum(i.total for i in imports)
    print(f"\n{title}: {total * 1000:.1f} ms in imports (-X importtime inflates a little); "
          f"top-level imports, cumulative ms (biggest expanded two levels):")
    ranked = sorted(imports, key=lambda i: -i.total)
    for n, item in enumerate(ranked[:top]):
        print(f"  {item.total * 1000:7.1f}  {item.name}")
        if n >= expand:
            continue
        for child in sorted(item.children, key=lambda i: -i.total)[:4]:
            if child.total < 0.002:
                break
            print(f"  {child.total * 1000:9.1f}    {child.name}")
            for grandchild in sorted(child.children, key=lambda i: -i.total)[:3]:
                if grandchild.total < 0.004:
                    break
                print(f"  {grandchild.total * 1000:11.1f}      {grandchild.name}")


#: ssmshell with stamps (bench-only monkeypatching from outside; ssmshell is not edited):
#: the keystroke path and the way out, for the breakdowns. Stamps go to a file.
CLIENT_TRACE = r"""
import atexit, os, sys, time
out = open(os.environ["BENCH_STAMPS"], "a", buffering=1)
def stamp(name): out.write(f"{time.monotonic()!r} {name}\n")
atexit.register(stamp, "atexit handlers run (interpreter finalising)")
import websockets.asyncio.connection as wsc
import ssmshell.channel as ch, ssmshell.runner as rn, ssmshell.sessions.shell as sh
import websockets.protocol as wsp
def is_data(frame):  # a stream data message, not an acknowledge
    return isinstance(frame, (bytes, bytearray)) and bytes(frame[4:36]).rstrip(b" \0") in (
        b"input_stream_data", b"output_stream_data")
send_now = ch.Channel.send_output_now
def traced_send_now(self, data):
    stamp("k:stdin")
    return send_now(self, data)
ch.Channel.send_output_now = traced_send_now
sending = []
send_binary = wsp.Protocol.send_binary
def traced_send_binary(self, data, *args, **kwargs):
    if is_data(data):
        stamp("k:ws.send called")
        sending.append(1)
    return send_binary(self, data, *args, **kwargs)
wsp.Protocol.send_binary = traced_send_binary
send_data = wsc.Connection.send_data
def traced_send_data(self):
    send_data(self)
    if sending:
        sending.clear()
        stamp("k:ws.send returned")
wsc.Connection.send_data = traced_send_data
on_frame = ch.Channel._on_frame
def traced_on_frame(self, frame):
    if is_data(frame):
        stamp("k:frame from websocket")
    on_frame(self, frame)
ch.Channel._on_frame = traced_on_frame
write_now = sh.write_now
def traced_write_now(fd, data):
    stamp("k:stdout write")
    return write_now(fd, data)
sh.write_now = traced_write_now
write_all = sh.write_all
async def traced_write_all(fd, data):
    stamp("k:stdout write")
    await write_all(fd, data)
sh.write_all = traced_write_all
on_event = sh.ShellSession._on_event
async def traced_event(self, event):
    if type(event).__name__ == "ChannelClosed":
        stamp("channel_closed event reaches ShellSession")
    return await on_event(self, event)
sh.ShellSession._on_event = traced_event
run = sh.ShellSession.run
async def traced_run(self):
    try:
        return await run(self)
    finally:
        stamp("ShellSession.run returned")
sh.ShellSession.run = traced_run
close = ch.Channel.close
async def traced_close(self):
    stamp("Channel.close() starts (tasks cancelled, websocket close)")
    await close(self)
    stamp("Channel.close() done")
ch.Channel.close = traced_close
run_session = rn.run_session
def traced_run_session(*args, **kwargs):
    try:
        return run_session(*args, **kwargs)
    finally:
        stamp("asyncio.run() returned (loop and executor shut down)")
rn.run_session = traced_run_session
sys.argv = ["ssmshell", *sys.argv[1:]]
from ssmshell.cli import main
try:
    main()
finally:
    stamp("SystemExit raised: threads joined, atexit, module teardown next")
"""

#: The keystroke path: (label, where the stamp comes from, its name). Client stamps are of
#: data frames only (not acknowledgements).
ECHO_STAGES = [
    ("ssmshell reads the key from its stdin (PTY)", "client", "k:stdin"),
    ("ssmshell: frame encrypted, encoded, handed to websockets", "client", "k:ws.send called"),
    ("ssmshell: websocket frame written to the socket", "client", "k:ws.send returned"),
    ("agent: frame decoded, decrypted; input written to the shell PTY", "server", "input"),
    ("agent: remote PTY echo read, Output queued", "server", "output"),
    ("ssmshell: Output frame from websocket", "client", "k:frame from websocket"),
    ("ssmshell: decoded, decrypted, acked; stdout write", "client", "k:stdout write"),
]


@dataclass
class Trace:
    """What the traced session gave: exit steps and the keystroke stage medians."""

    exit_steps: list[tuple[str, float]]
    echo_stages: list[tuple[str, float]]
    echo: list[float]


def traced_session(sm: Any, stamps: Stamps, env: dict[str, str], keys: int,
                   gap: float) -> Trace:
    """One more session through :data:`CLIENT_TRACE` (its figures are not the headline ones)."""
    with tempfile.NamedTemporaryFile("r", suffix=".stamps") as trace:
        traced_env = dict(env, BENCH_STAMPS=trace.name)
        run = run_session(sm, stamps, traced_env, keys, gap,
                          [sys.executable, "-c", CLIENT_TRACE, "start-session", INSTANCE])
        client: dict[str, list[float]] = {}
        exit_rows: list[tuple[str, float]] = []
        for line in trace.readlines():
            t, name = line.rstrip("\n").split(" ", 1)
            if name.startswith("k:"):
                client.setdefault(name, []).append(float(t))
            else:
                exit_rows.append((name, float(t)))
    closed = stamps.channel_closed[-1]
    exit_steps = [("agent sends channel_closed", 0.0)]
    exit_steps += [(name, t - closed) for name, t in exit_rows]
    exit_steps.append(("process gone (pidfd)", run.closed_sent_to_gone))
    server = {"input": stamps.shell_input, "output": stamps.agent_output}
    since: list[list[float]] = [[] for _ in range(len(ECHO_STAGES) + 1)]
    for sent, echoed in zip(run.sent, run.echoed, strict=True):
        found: dict[str, float] = {}
        for _, side, name in ECHO_STAGES:
            source = client.get(name, []) if side == "client" else server[name]
            after = found["input"] if name == "output" else sent
            found[name] = next((x for x in source if after <= x <= echoed), float("nan"))
        chain = [found[name] - sent for _, _, name in ECHO_STAGES] + [echoed - sent]
        if all(d == d for d in chain):
            for bucket, d in zip(since, chain, strict=True):
                bucket.append(d)
    labels = [label for label, _, _ in ECHO_STAGES] + ["bench reads the echo from the PTY"]
    stages = [(label, statistics.median(d) if d else float("nan"))
              for label, d in zip(labels, since, strict=True)]
    return Trace(exit_steps, stages, run.echo)


# ---------------------------------------------------------------------------- main


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5, help="start-session runs (default 5)")
    parser.add_argument("--keys", type=int, default=200, help="keystrokes (first session)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between keystrokes")
    parser.add_argument("--help-runs", type=int, default=10)
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                        help="first wait up to S s for the machine to be idle (default 60)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved (c⁗) runs of --keys keystrokes each (default 3)")
    parser.add_argument("--ws-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--ws-probe", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["sm", "ws-echo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_client:  # helper mode: the raw websocket client process
        print(json.dumps(asyncio.run(ws_client(args.ws_client, args.keys, args.gap,
                                               FRAME_SIZE))))
        return
    if args.ws_probe:  # helper mode: the interleaved raw websocket probe
        asyncio.run(ws_probe(args.ws_probe, FRAME_SIZE))
        return
    if args.serve:  # helper mode: a server in a process of its own, until stdin closes
        serve_in_process(args.serve)
        return

    # Bytecode as an installed ssmshell has it: this machine's environment may set
    # PYTHONDONTWRITEBYTECODE, which would recompile ssmshell's own modules on every run.
    # The caches go to a temporary prefix (nothing is written under ssmshell/), warmed
    # by an unmeasured first session.
    pycache = tempfile.mkdtemp(prefix="ssmshell-bench-pyc-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = pycache

    from ssmshell.local.agent import AgentOptions
    from ssmshell.local.server import LocalSessionManager

    home = tempfile.mkdtemp(prefix="ssmshell-bench-")
    os.environ["PS1"] = PROMPT  # the remote /bin/sh inherits the agent's environment
    os.environ["ENV"] = ""
    sm = LocalSessionManager(agent_options=AgentOptions(shell="/bin/sh"))  # real pacing/delay
    stamps = Stamps()
    instrument(sm, stamps)
    sm.start_in_thread()
    env = {**client_env(home), **sm.client_env()}
    opts = sm.gateway.options
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; local SM in a thread, "
          f"agent pacing {opts.pacing * 1000:g} ms, initial read delay {opts.initial_read_delay:g}"
          f" s, shell {opts.shell}; KMS-encrypted sessions; argv {ssmshell_argv()[0]}",
          flush=True)
    try:
        run_session(sm, stamps, env, 0, args.gap)  # warm-up: fills the bytecode cache
        help_times(1, ssmshell_argv("--help"))
        idle = wait_quiet(args.wait_quiet)
        print(f"machine {idle:.0%} busy just before measuring", flush=True)
        load = Load()
        runs = []
        for n in range(args.sessions):
            run = run_session(sm, stamps, env, args.keys if n == 0 else 0, args.gap)
            runs.append(run)
            print(f"session {n + 1}: StartSession {run.start_session * 1000:6.1f} ms, "
                  f"ws attached {run.attached * 1000:6.1f} ms, "
                  f"prompt {run.first_prompt * 1000:6.1f} ms, "
                  f"exit→shell gone {run.exit_sent_to_shell_exit * 1000:5.1f} ms, "
                  f"shell gone→channel_closed sent {run.shell_exit_to_closed_sent * 1000:5.1f} ms"
                  f", →ssmshell gone {run.closed_sent_to_gone * 1000:5.1f} ms "
                  f"(shell gone→ssmshell gone {run.shell_exit_to_gone * 1000:5.1f} ms), "
                  f"maxrss {run.max_rss_mb:5.1f} MB (VmHWM before exit {run.vm_hwm_mb:5.1f}), "
                  f"status {run.status}", flush=True)
        raw = raw_ws_rtt(len(runs[0].echo) or 200, args.gap)
        pty_only = pty_rtt(len(runs[0].echo) or 200, args.gap)
        keys = len(runs[0].echo) or 200
        own_echo, _, own_cpu = echo_own_processes(env, keys, args.gap)
        own_raw = raw_rtt_own_processes(keys, args.gap)
        plugin = os.environ.get("SSMSHELL_OFFICIAL_PLUGIN") or \
            shutil.which("session-manager-plugin")
        plugin_echo, plugin_rss, plugin_cpu = echo_own_processes(
            env, keys, args.gap, plugin) if plugin else ([], float("nan"), float("nan"))
        turns, versus = Interleaved(), Interleaved()
        for _ in range(args.rounds):
            interleaved(env, keys, args.gap, None, turns)
        if plugin:  # the plugin's process (its 100 ms resend ticker) stays out of the verdict
            for _ in range(args.rounds):
                interleaved(env, keys, args.gap, plugin, versus)
        final = finalisation()
        helps = help_times(args.help_runs, ssmshell_argv("--help"))
        bare = help_times(args.help_runs, [sys.executable, "-c", "pass"])
        load_text = load.report()
        steps = startup_steps(env, stamps)
        trace = traced_session(sm, stamps, env, min(args.keys, 100), args.gap)
        start_imports = importtime(["-m", "ssmshell", "start-session", INSTANCE], env, b"exit\n")
        help_imports = importtime(["-m", "ssmshell", "--help"], env)
    finally:
        sm.stop_thread()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(pycache, ignore_errors=True)

    def med(get: Callable[[Run], float]) -> float:
        return statistics.median(get(r) for r in runs)

    echo = runs[0].echo
    start_session = med(lambda r: r.start_session)
    gone = med(lambda r: r.shell_exit_to_gone)
    rss = max(r.max_rss_mb for r in runs)
    help_median = statistics.median(helps)
    echo_met = all(x <= TARGET_ECHO_OVER_RAW for x in over(turns.echo, turns.raw))
    print(f"\nfigures (median of {len(runs)} sessions unless said otherwise; {load_text}):")
    rows = [
        ("(a) launch → StartSession on the wire", f"{start_session * 1000:.0f} ms",
         f"≤ {TARGET_START_SESSION * 1000:.0f} ms", start_session <= TARGET_START_SESSION),
        ("(b) launch → first remote prompt byte", f"{med(lambda r: r.first_prompt) * 1000:.0f} ms"
         f" (incl. the 1 s initial read delay)", "—", None),
        ("(c) keystroke echo p50 / p99", p50_p99(echo, "keys"), "", None),
        ("    raw websocket RTT p50 / p99", p50_p99(raw, "msgs"), "", None),
        ("    PTY-only echo RTT p50 / p99 (context)", p50_p99(pty_only, "keys"), "", None),
        ("    echo − raw RTT, p50 / p99", over_text(echo, raw), "(see c⁗)", None),
        ("(c′) the same, every party in its own process", "", "", None),
        ("    keystroke echo p50 / p99", p50_p99(own_echo, "keys"), "", None),
        ("    raw websocket RTT p50 / p99", p50_p99(own_raw, "msgs"), "", None),
        ("    echo − raw RTT, p50 / p99", over_text(own_echo, own_raw), "(see c⁗)", None),
        ("    ssmshell CPU per keystroke (all threads)", f"{own_cpu * 1e6:.0f} µs", "", None),
        *([("(c‴) the official plugin, same layout", "", "", None),
           ("    keystroke echo p50 / p99", p50_p99(plugin_echo, "keys"), "", None),
           ("    echo − raw RTT, p50 / p99", over_text(plugin_echo, own_raw), "", None),
           ("    ssmshell echo / plugin echo, p50 / p99", ratio_text(own_echo, plugin_echo),
            "", None),
           ("    plugin CPU per keystroke (all threads)", f"{plugin_cpu * 1e6:.0f} µs", "", None),
           ("    peak RSS of the plugin", f"{plugin_rss:.1f} MB", "", None)]
          if plugin_echo else []),
        (f"(c⁗) interleaved, {args.rounds} runs (the verdict)", "", "", None),
        ("    keystroke echo p50 / p99", p50_p99(turns.echo, "keys"), "", None),
        ("    raw websocket RTT p50 / p99", p50_p99(turns.raw, "msgs"), "", None),
        ("    echo − raw RTT, p50 / p99", over_text(turns.echo, turns.raw),
         f"≤ +{TARGET_ECHO_OVER_RAW * 1000:.0f} ms", echo_met),
        *([("    with the plugin's session in turn too:", "", "", None),
           ("    ssmshell echo − raw RTT, p50 / p99", over_text(versus.echo, versus.raw),
            "", None),
           ("    plugin echo − raw RTT, p50 / p99", over_text(versus.plugin, versus.raw),
            "", None),
           ("    ssmshell echo / plugin echo, p50 / p99", ratio_text(versus.echo, versus.plugin),
            "", None)]
          if versus.plugin else []),
        ("(d) remote shell exit → ssmshell gone", f"{gone * 1000:.0f} ms",
         f"≤ {TARGET_GONE * 1000:.0f} ms", gone <= TARGET_GONE),
        ("(e) peak RSS of ssmshell (max)", f"{rss:.1f} MB", f"≤ {TARGET_RSS_MB:.0f} MB",
         rss <= TARGET_RSS_MB),
        ("(f) ssmshell --help, median of " + str(len(helps)), f"{help_median * 1000:.0f} ms",
         f"< {TARGET_HELP * 1000:.0f} ms", help_median < TARGET_HELP),
        ("    python -c pass, median", f"{statistics.median(bare) * 1000:.0f} ms", "", None),
    ]
    for name, value, target, ok in rows:
        mark = "" if ok is None else verdict(ok)
        print(f"  {name:42s} {value:44s} {target:10s} {mark}")
    ratio = start_session / TARGET_START_SESSION
    print(f"  ratios: StartSession {ratio:.2f}x target, --help "
          f"{help_median / TARGET_HELP:.2f}x target, exit {gone / TARGET_GONE:.2f}x target, "
          f"RSS {rss / TARGET_RSS_MB:.2f}x target")
    print("\nexit breakdown (median): exit typed → remote shell gone "
          f"{med(lambda r: r.exit_sent_to_shell_exit) * 1000:.1f} ms; shell gone → agent sends "
          f"channel_closed {med(lambda r: r.shell_exit_to_closed_sent) * 1000:.1f} ms; "
          f"channel_closed sent → ssmshell gone {med(lambda r: r.closed_sent_to_gone) * 1000:.1f}"
          " ms")
    print("\nwhere the time to StartSession goes (a fresh interpreter replays the path with "
          "the same calls; t from launch, VmRSS after each step):")
    previous = 0.0
    for name, t, mb in steps:
        rss_text = f"{mb:5.1f} MB" if mb == mb else " " * 8
        print(f"  {t * 1000:7.1f} ms  (+{(t - previous) * 1000:6.1f})  {rss_text}  {name}")
        previous = t
    print("\nwhere the time from channel_closed to exit goes (one more session, traced; "
          "ms after the agent sent channel_closed):")
    previous = 0.0
    for name, t in trace.exit_steps:
        print(f"  {t * 1000:7.1f} ms  (+{(t - previous) * 1000:6.1f})  {name}")
        previous = t
    print("\ninterpreter finalisation with boto3's ssm+kms clients loaded (last line → "
          "process gone, median of 5):  " + ";  ".join(
              f"{mode} {statistics.median(v) * 1000:.1f} ms" for mode, v in final.items()))
    print(f"\nwhere a keystroke's echo goes (traced session, {len(trace.echo)} keys, echo p50 "
          f"{pct(trace.echo, 50) * 1000:.2f} ms with the tracing; median ms since the key was "
          f"written; two processes, so neighbouring steps may overlap):")
    for label, d in trace.echo_stages:
        print(f"  {d * 1000:6.2f}  {label}")
    print(f"\necho breakdown (medians, ms): typed → input at the agent's shell plugin "
          f"{statistics.median(runs[0].echo_in) * 1000:.2f}; → agent queues the echo "
          f"{statistics.median(runs[0].echo_agent) * 1000:.2f}; → echo read from ssmshell's PTY "
          f"{statistics.median(runs[0].echo_out) * 1000:.2f}; raw websocket one way "
          f"≈ {pct(raw, 50) / 2 * 1000:.2f}")
    print_imports("start-session (piped, to its end)", start_imports)
    print_imports("--help", help_imports, top=6, expand=2)


if __name__ == "__main__":
    main()
