"""How busy the machine is: shared by the benchmarks that report it with their figures."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Load:
    """How busy the whole machine was during a measurement, and how much of it was us.

    Other sessions may run tests on the same 2 cores; the figures say so when they did.
    """

    def __init__(self) -> None:
        self._ticks = _cpu_ticks()
        self._own = _own_cpu()
        self._wall = time.monotonic()

    def report(self) -> str:
        busy, total = _cpu_ticks()
        cpus = os.cpu_count() or 1
        machine = (busy - self._ticks[0]) / max(1, total - self._ticks[1])
        own = (_own_cpu() - self._own) / max(1e-9, (time.monotonic() - self._wall) * cpus)
        return (f"machine {machine:.0%} busy over {cpus} CPUs during the run, "
                f"this bench and its children {own:.0%}, others ~{max(0.0, machine - own):.0%}")


def wait_quiet(limit: float, threshold: float = 0.10) -> float:
    """Wait up to ``limit`` seconds for a second in which the machine is < threshold busy."""
    deadline = time.monotonic() + limit
    while True:
        before = _cpu_ticks()
        time.sleep(1.0)
        after = _cpu_ticks()
        busy = (after[0] - before[0]) / max(1, after[1] - before[1])
        if busy < threshold or time.monotonic() >= deadline:
            return busy
