"""Output throughput of the local agent emulator on one session.

Run: ``.venv/bin/python bench/emulator.py [--mb 50] [--paced-mb 4] [--repeat 3] [--no-kms]
[--profile]`` (about a minute; ``--no-kms --profile`` about two).

A NonInteractiveCommands session (document ``SSMShell-NonInteractiveCommand``)
runs ``head -c N /dev/zero`` in the agent emulator; the protocol-core client
(:func:`ssmshell.runner.make_channel`) collects it and acknowledges every
frame. The figure is payload bytes received between the first and the last
Output message, in MB/s (10^6 bytes), against the 20 MB/s target with the
agent's 1024-byte read pacing off (``AgentOptions(pacing=0)``); the same with
the real agent's 1 ms pacing is printed for reference. Each configuration runs
``--repeat`` times and the best run counts: other work on the machine only ever
slows a run down; the load during the runs is printed.

Layouts measured:

* ``process``: the local Session Manager in a child process, the client in this
  one, so each side has its own core (the 2-core bench machine) and its own GIL;
* ``thread``: the local Session Manager in a thread of this process, as the
  tests run it, so agent and client share one GIL.

Sessions are KMS-encrypted as the default local world has it (AES-GCM on every
frame); ``--no-kms`` adds plain runs. ``--profile`` runs the unpaced process
layout once more under cProfile in both processes and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing as mp
import os
import pstats
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import Load, wait_quiet  # noqa: E402  (bench/, the script's folder)

from ssmshell.aws.api import Aws, SessionInfo  # noqa: E402
from ssmshell.local.agent import AgentOptions  # noqa: E402
from ssmshell.local.server import LocalSessionManager  # noqa: E402
from ssmshell.protocol import events as ev  # noqa: E402
from ssmshell.runner import make_channel  # noqa: E402

TARGET_MBPS = 20.0
INSTANCE = "i-0123456789abcdef0"
DOCUMENT = "SSMShell-NonInteractiveCommand"


@dataclass
class Result:
    """One measured session."""

    layout: str
    pacing: float
    kms: bool
    nbytes: int
    frames: int
    first_to_last: float
    open_to_closed: float
    exit_code: int | None
    client_cpu: float
    server_cpu: float | None  # None: same process as the client (thread layout)

    @property
    def mbps(self) -> float:
        return self.nbytes / self.first_to_last / 1e6 if self.first_to_last > 0 else 0.0




# ---------------------------------------------------------------------------- server side


def _make_sm(pacing: float, kms: bool) -> LocalSessionManager:
    sm = LocalSessionManager(agent_options=AgentOptions(pacing=pacing, shell="/bin/sh"))
    if not kms:
        sm.config.session_kms_key_id = None
    return sm


def _serve_child(conn: Connection, pacing: float, kms: bool, profile_path: str | None) -> None:
    """Child process: run a local Session Manager on its main thread until told to stop."""

    async def serve() -> None:
        sm = _make_sm(pacing, kms)
        await sm.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_message() -> None:
            if conn.recv() == "cpu":
                conn.send(time.process_time())
            else:
                stop.set()

        loop.add_reader(conn.fileno(), on_message)
        conn.send(sm.client_env())
        await stop.wait()
        await sm.close()

    profiler = cProfile.Profile() if profile_path else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(serve())
    if profiler is not None and profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path)
    conn.send("done")


class Server:
    """A local Session Manager in a child process or in a thread of this one.

    The thread layout uses :meth:`LocalSessionManager.start_in_thread`, or, when
    profiling, an equivalent thread of its own (a private event loop) run under
    cProfile, since cProfile only sees the thread that enabled it.
    """

    def __init__(self, layout: str, pacing: float, kms: bool,
                 profile_path: str | None = None) -> None:
        self.layout = layout
        self._sm: LocalSessionManager | None = None
        self._worker: Any = None
        self._conn: Connection | None = None
        self._remote = layout == "process"
        if layout == "thread" and profile_path is None:
            self._sm = _make_sm(pacing, kms).start_in_thread()
            self.env = self._sm.client_env()
            return
        args = (pacing, kms, profile_path)
        if self._remote:
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._worker = ctx.Process(target=_serve_child, args=(child, *args))
        else:
            parent, child = mp.Pipe()
            self._worker = threading.Thread(target=_serve_child, args=(child, *args),
                                            daemon=True)
        self._worker.start()
        self._conn = parent
        self.env = parent.recv()

    def cpu(self) -> float | None:
        """CPU seconds used so far by the server process (None in the thread layout)."""
        if self._conn is None or not self._remote:
            return None
        self._conn.send("cpu")
        value: float = self._conn.recv()
        return value

    def stop(self) -> None:
        if self._sm is not None:
            self._sm.stop_thread()
        if self._worker is not None and self._conn is not None:
            self._conn.send("stop")
            if self._conn.poll(30):
                self._conn.recv()
            self._worker.join(30)


# ---------------------------------------------------------------------------- client side


def _aws(env: dict[str, str]) -> Aws:
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    return Aws(region=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])


async def _collect(aws: Aws, info: SessionInfo) -> tuple[int, int, float, float, int | None]:
    channel = make_channel(aws, info)
    nbytes = frames = 0
    first = last = 0.0
    code: int | None = None
    opened = time.perf_counter()
    await channel.open()
    try:
        async for event in channel.events():
            if isinstance(event, ev.StreamData):
                now = time.perf_counter()
                if not frames:
                    first = now
                last = now
                nbytes += len(event.data)
                frames += 1
            elif isinstance(event, ev.ExitCode):
                code = event.code
    finally:
        await channel.close()
    closed = time.perf_counter()
    return nbytes, frames, last - first, closed - opened, code


def measure(layout: str, pacing: float, kms: bool, size: int,
            profile_dir: str | None = None) -> Result:
    server_prof = os.path.join(profile_dir, "server.prof") if profile_dir else None
    server = Server(layout, pacing, kms, server_prof)
    try:
        aws = _aws(server.env)
        info = aws.start_session(INSTANCE, DOCUMENT, {"command": [f"head -c {size} /dev/zero"]})
        profiler = cProfile.Profile() if profile_dir else None
        if profiler is not None:
            profiler.enable()
        server_cpu0, client_cpu0 = server.cpu(), time.process_time()
        nbytes, frames, span, total, code = asyncio.run(
            asyncio.wait_for(_collect(aws, info), 120))
        client_cpu = time.process_time() - client_cpu0
        server_cpu1 = server.cpu()
        server_cpu = None if server_cpu0 is None or server_cpu1 is None else (
            server_cpu1 - server_cpu0)
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, "client.prof"))
    finally:
        server.stop()
    if nbytes != size:
        print(f"  warning: received {nbytes} of {size} bytes", file=sys.stderr)
    return Result(layout, pacing, kms, nbytes, frames, span, total, code, client_cpu,
                  server_cpu)


def _report(r: Result, tries: list[float] | None = None) -> None:
    pacing = "off" if not r.pacing else f"{r.pacing * 1000:g} ms"
    verdict = ""
    if not r.pacing:
        verdict = f"  {r.mbps / TARGET_MBPS:5.2f}x target ({TARGET_MBPS:g} MB/s)"
        verdict += "  MET" if r.mbps >= TARGET_MBPS else "  MISSED"
    print(f"{r.layout:8s} pacing {pacing:6s} {'kms' if r.kms else 'plain':5s} "
          f"{r.nbytes / 1e6:6.1f} MB in {r.first_to_last:6.2f} s  {r.mbps:7.2f} MB/s  "
          f"({r.frames / r.first_to_last if r.first_to_last else 0:8,.0f} frames/s, "
          f"open→closed {r.open_to_closed:5.2f} s){verdict}", flush=True)
    if tries and len(tries) > 1:
        print(f"{'':8s} best of {len(tries)}: " + ", ".join(f"{x:.2f}" for x in tries) + " MB/s",
              flush=True)
    if r.server_cpu is None:
        cpu = f"client+server (one process) {r.client_cpu:5.2f} s"
    else:
        cpu = f"client {r.client_cpu:5.2f} s, server {r.server_cpu:5.2f} s"
    per_frame = (r.client_cpu + (r.server_cpu or 0.0)) / max(r.frames, 1) * 1e6
    print(f"{'':8s} CPU {cpu} (+ the command); {per_frame:5.1f} µs CPU per frame in all",
          flush=True)


def _print_profile(path: str, title: str, limit: int) -> None:
    stats = pstats.Stats(path)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    by_file: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in raw.items():
        key = _short(filename)
        by_file[key] = by_file.get(key, 0.0) + tottime
    print(f"\n--- {title}: own time by file ({total:.2f} s profiled) ---")
    for name, secs in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {secs / total:6.1%}  {secs:6.3f} s  {name}")
    print(f"--- {title}: top {limit} functions by own time, with cumulative time ---")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:limit]
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in rows:
        print(f"  {tottime / total:6.1%}  own {tottime:6.3f} s  cum {cumtime:6.3f} s  "
              f"{ncalls:>8,}x  {_short(filename)}:{line}({func})")


def _short(filename: str) -> str:
    """``ssmshell/protocol/state.py``, ``websockets/frames.py``, ``<built-in>``, …"""
    if filename == "~":
        return "<built-in>"
    for marker in ("/site-packages/", f"{ROOT}/", "/lib/python3"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return os.path.basename(filename)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50.0, help="MB per unpaced run (default 50)")
    parser.add_argument("--paced-mb", type=float, default=4.0,
                        help="MB per run with 1 ms pacing (default 4)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per configuration; the best counts (default 3)")
    parser.add_argument("--no-kms", action="store_true", help="also measure plain sessions")
    parser.add_argument("--profile", action="store_true",
                        help="profile an unpaced process-layout run (client and server)")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                        help="first wait up to S s for the machine to be idle (default 60)")
    args = parser.parse_args()
    idle = wait_quiet(args.wait_quiet)

    with tempfile.TemporaryDirectory() as home:
        os.environ["HOME"] = home
        os.environ["AWS_CONFIG_FILE"] = os.path.join(home, "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(home, "credentials")
        size = int(args.mb * 1e6)
        paced = int(args.paced_mb * 1e6)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
              f"one NonInteractiveCommands session, `head -c N /dev/zero`; "
              f"machine {idle:.0%} busy just before")
        load = Load()
        runs: list[tuple[str, float, bool, int]] = [
            ("process", 0.0, True, size), ("thread", 0.0, True, size)]
        if args.no_kms:
            runs += [("process", 0.0, False, size), ("thread", 0.0, False, size)]
        runs += [("process", 0.001, True, paced)]
        for layout, pacing, kms, n in runs:
            tries = [measure(layout, pacing, kms, n) for _ in range(args.repeat)]
            best = max(tries, key=lambda r: r.mbps)
            _report(best, [r.mbps for r in tries])
        print(load.report())
        if args.profile:
            for layout in ("process", "thread"):
                with tempfile.TemporaryDirectory() as prof:
                    print(f"\nprofiling: {layout} layout, pacing off, kms "
                          f"(cProfile slows it down)")
                    _report(measure(layout, 0.0, True, size // 2, prof))
                    _print_profile(os.path.join(prof, "server.prof"),
                                   f"{layout}: server (gateway + agent emulator)",
                                   args.profile_lines)
                    _print_profile(os.path.join(prof, "client.prof"),
                                   f"{layout}: client (Channel)", args.profile_lines)


if __name__ == "__main__":
    main()
