"""Throughput of ``ssmshell cp`` with one session and with parallel sessions.

Run: ``.venv/bin/python bench/cp.py [--mb 16] [--parallel 1,4] [--target ecs|instance]``
(about 1 minute with the defaults).

The local Session Manager runs in a thread of this process with the real agent's
pacing (``AgentOptions()`` defaults: one 1024-byte PTY read per 1 ms, so about
1 KiB/ms per session for output, and the 1 s initial PTY read delay); ``ssmshell
cp`` runs as a child process, so client and agent each have their own core.

For each ``--parallel`` value a random file of ``--mb`` MB (10^6 bytes) is uploaded
(``cp FILE TARGET:PATH``) and downloaded back (``cp TARGET:PATH FILE``); the figure
is the file size over the wall time of the whole ``ssmshell cp`` process (start-up,
AWS calls, the sessions' 1 s read delay, the SHA-256 check included). Every copy is
compared with the original. The ratio is each figure over the ``--parallel 1`` one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ssmshell.local.agent import AgentOptions  # noqa: E402
from ssmshell.local.server import LocalSessionManager  # noqa: E402

TARGETS = {"ecs": "ecs:demo/0a1b2c3d4e5f60718293a4b5c6d7e8f9/app",
           "instance": "i-0123456789abcdef0"}
#: The agent's nominal output rate per session: 1024 bytes per 1 ms read.
CAP_MBPS = 1024 / 0.001 / 1e6


def ssmshell_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssmshell", *args]


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def timed_cp(env: dict[str, str], *args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run(ssmshell_argv("cp", *args), env=env, capture_output=True,
                          stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"cp {' '.join(args)} failed ({proc.returncode}): "
                         f"{proc.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=16.0, help="file size in MB (default 16)")
    parser.add_argument("--parallel", default="1,4",
                        help="comma-separated --parallel values (default 1,4)")
    parser.add_argument("--target", choices=sorted(TARGETS), default="ecs")
    parser.add_argument("--pacing", type=float, default=AgentOptions.pacing,
                        help="agent seconds per 1024-byte read (default: the real 0.001)")
    args = parser.parse_args()
    values = [int(v) for v in args.parallel.split(",")]
    size = int(args.mb * 1e6)

    sm = LocalSessionManager(agent_options=AgentOptions(pacing=args.pacing, shell="/bin/sh"))
    sm.start_in_thread()
    try:
        with tempfile.TemporaryDirectory(prefix="ssmshell-bench-cp-") as tmp:
            work = Path(tmp)
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(sm.client_env())
            env.update(HOME=tmp, AWS_CONFIG_FILE=str(work / "none"),
                       AWS_SHARED_CREDENTIALS_FILE=str(work / "none"))
            src = work / "src.bin"
            src.write_bytes(os.urandom(size))
            want = sha(src)
            target = TARGETS[args.target]
            print(f"ssmshell cp, {size / 1e6:.1f} MB file, target {args.target} ({target}), "
                  f"agent pacing {args.pacing * 1000:g} ms per 1024-byte read "
                  f"(nominal cap {CAP_MBPS:.2f} MB/s per session for downloads)")
            print(f"{'parallel':>8}  {'upload s':>9}  {'MB/s':>6}  {'x':>5}  "
                  f"{'download s':>10}  {'MB/s':>6}  {'x':>5}")
            base: tuple[float, float] | None = None
            for n in values:
                remote = work / f"remote-{n}.bin"
                back = work / f"back-{n}.bin"
                up = timed_cp(env, "--parallel", str(n), str(src), f"{target}:{remote}")
                down = timed_cp(env, "--parallel", str(n), f"{target}:{remote}", str(back))
                if sha(remote) != want or sha(back) != want:
                    raise SystemExit(f"--parallel {n}: copy differs from the original")
                up_rate, down_rate = size / up / 1e6, size / down / 1e6
                base = base or (up_rate, down_rate)
                print(f"{n:>8}  {up:>9.2f}  {up_rate:>6.2f}  {up_rate / base[0]:>5.2f}  "
                      f"{down:>10.2f}  {down_rate:>6.2f}  {down_rate / base[1]:>5.2f}")
                remote.unlink()
                back.unlink()
    finally:
        sm.stop_thread()


if __name__ == "__main__":
    main()
