"""One socket read after idle, the way a keystroke's frame meets it: the CPU has slept
20 ms since the last read.

Run: ``.venv/bin/python bench/cold.py [--calls 200]`` (about 10 s).

A read as asyncio makes it for a plain ``asyncio.Protocol`` (``recv(256 KiB)``:
CPython allocates the result with ``mmap`` and gives it back with
``mremap``/``munmap``) against ``recv_into`` one kept buffer, as for an
``asyncio.BufferedProtocol`` (what ``ssmshell.channel`` does since 2026-11-29).
A second thread sleeps in the process, as the client has one: ``munmap`` in a
multi-threaded process may need a TLB shoot-down.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable

GAP = 0.02
READ = 256 * 1024


def cold(calls: int, prepare: Callable[[], None], call: Callable[[], None]) -> list[float]:
    """µs of ``call`` each time ``GAP`` after the last, ``prepare`` run (untimed) first."""
    out = []
    for _ in range(calls):
        prepare()
        time.sleep(GAP)
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def line(name: str, values: list[float], base: list[float] | None = None) -> str:
    values = sorted(values)
    p50, p95 = statistics.median(values), values[int(len(values) * 0.95)]
    ratio = f"  {p50 / statistics.median(base):.2f}x" if base else ""
    return f"  {name:44s} p50 {p50:6.1f} µs  p95 {p95:6.1f} µs{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    threading.Thread(target=threading.Event().wait, daemon=True).start()

    a, b = socket.socketpair()
    kept = memoryview(bytearray(READ))
    frame = os.urandom(300)  # an output frame and an ack: what one read takes
    send: Callable[[], None] = lambda: a.sendall(frame)  # noqa: E731
    fresh = cold(args.calls, send, lambda: b.recv(READ))
    into = cold(args.calls, send, lambda: bytes(kept[:b.recv_into(kept)]))
    print("one socket read of 300 bytes, 20 ms after the last:")
    print(line("recv(256 KiB) (plain asyncio.Protocol)", fresh))
    print(line("recv_into a kept buffer (BufferedProtocol)", into, fresh))



if __name__ == "__main__":
    main()
