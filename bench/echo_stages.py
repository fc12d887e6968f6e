"""Where a keystroke's echo goes, step by step, in ssmshell and in the agent emulator.

Run: ``.venv/bin/python bench/echo_stages.py [--rev REV] [--keys 300]`` (about 20 s).

A copy of the tree (the working tree, or ``git archive REV``) goes to a temporary
folder, and one-line stamps are inserted there at fixed points of the keystroke's
path (nothing under ``ssmshell/`` is edited): ``time.perf_counter()`` into a list,
written out at exit, so a stamp costs a list append. The copy then runs the (c⁗)
layout of ``bench/session.py``: the local SM in a process of its own, ssmshell under a
PTY, one keystroke every 20 ms, a raw websocket probe in turn. The table gives, for
the keystrokes whose echo the agent read at once (every stamp present, in order),
the median time between neighbouring stamps, in µs, over them all and over the
slowest 5% of them. ``perf_counter`` is
``CLOCK_MONOTONIC`` on Linux, so stamps compare across processes.
"""

from __future__ import annotations

import argparse
import bisect
import glob
import itertools
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import session as bench  # bench/, the script's folder, is first on sys.path
from trees import copy_tree, use_tree

STAMP_MODULE = '''import atexit, os, time
_out = []
_now = time.perf_counter
def s(name):
    _out.append((_now(), name))
def _dump():
    folder = os.environ.get("ECHO_STAMPS")
    if folder:
        with open(f"{folder}/{os.getpid()}.txt", "w") as f:
            f.writelines(f"{t!r} {n}\\n" for t, n in _out)
atexit.register(_dump)
'''

#: (file, line text, where, stamp): a stamp goes before/after the first line whose
#: stripped text starts with ``line text``; "R" names a role-prefixed stamp (client
#: or agent, from ``self.role``). "return" turns ``return X`` into a stamped return.
POINTS = [
    ("ssmshell/sessions/stdio.py", "data = os.read(self.fd, READ_SIZE)", "before", "c0"),
    ("ssmshell/sessions/stdio.py", "data = os.read(self.fd, READ_SIZE)", "after", "c1"),
    ("ssmshell/protocol/state.py", "if self.cipher is not None and self.cipher.encrypts(",
     "before", "R:E0"),
    ("ssmshell/protocol/state.py", "seq = self._out_seq", "before", "R:E1"),
    ("ssmshell/protocol/state.py", "self._out_seq += 1", "before", "R:E2"),
    ("ssmshell/protocol/state.py", "msg = m.decode(frame, verify_digest=self.verify_digest)",
     "before", "R:D0"),
    ("ssmshell/protocol/state.py", "msg = m.decode(frame, verify_digest=self.verify_digest)",
     "after", "R:D1"),
    ("ssmshell/protocol/state.py", "payload = self.cipher.decrypt(payload)", "after", "R:D2"),
    ("ssmshell/channel.py", "ws.protocol.send_binary(frame)", "before-block", "W0"),
    ("ssmshell/channel.py", "ws.send_data()", "before", "W1"),
    ("ssmshell/channel.py", "ws.send_data()", "after", "W2"),
    ("ssmshell/channel.py", '"""A binary websocket message, straight from', "after", "cF"),
    ("ssmshell/sessions/shell.py", "return write_now(self._fd_for(event), event.data)",
     "return", "cO"),
    ("ssmshell/local/agent.py", "if self.ws is not ws:  # (acks still count", "before", "aF"),
    ("ssmshell/local/shell.py", "self._write()", "before", "aI0"),
    ("ssmshell/local/shell.py", "self._write()", "after", "aI1"),
    ("ssmshell/local/shell.py", "data, self._held = split_utf8_tail(", "before", "aR"),
]

#: websockets' data_received, stamped in the connection subclass of channel.py.
RECEIVED = '''
def data_received(self, data: bytes) -> None:
    _st.s(side[0] + "R")
    super().data_received(data)
'''

#: The path of one keystroke, in order (W*/E*/D* stamps of the client, then the agent).
ORDER = ["c0", "c1", "cE0", "cE1", "cE2", "cW0", "cW1", "cW2", "sR", "aF", "aD0", "aD1",
         "aD2", "aI0", "aI1", "aR", "aE0", "aE1", "aE2", "aW0", "aW1", "aW2", "cR", "cF",
         "cD0", "cD1", "cD2", "cO0", "cO1"]
LABELS = {
    "c0": "bench writes the key → ssmshell's stdin callback (PTY, wake-up, asyncio)",
    "c1": "os.read", "cE0": "→ the core's send (reader, session, channel, core)",
    "cE1": "AES-GCM seal", "cE2": "MessageId, CreatedDate, header, digest",
    "cW0": "→ write_frames", "cW1": "websockets' send_binary (frame, mask)",
    "cW2": "the socket write", "sR": "→ the agent's data_received (kernel, wake-up)",
    "aF": "websockets' parse (agent)", "aD0": "→ receive_frame", "aD1": "agent: decode",
    "aD2": "agent: decrypt", "aI0": "agent: → shell plugin", "aI1": "agent: PTY write",
    "aR": "agent: echo read", "aE0": "agent: → send", "aE1": "agent: AES-GCM seal",
    "aE2": "agent: header, digest", "aW0": "→ write_frames", "aW1": "agent: send_binary",
    "aW2": "agent: the socket write", "cR": "→ ssmshell's data_received (kernel, wake-up)",
    "cF": "websockets' parse (ssmshell)", "cD0": "→ receive_frame", "cD1": "decode",
    "cD2": "decrypt", "cO0": "→ the terminal write", "cO1": "os.write to stdout",
    "echoed": "→ the bench reads the echo (PTY)",
}


def instrument(tree: Path) -> None:
    """Insert the stamps of :data:`POINTS` (and :data:`RECEIVED`) into the copy."""
    (tree / "ssmshell" / "_stamp.py").write_text(STAMP_MODULE)
    files: dict[str, list[str]] = {}
    for name, text, where, stamp in POINTS:
        lines = files.setdefault(name, (tree / name).read_text().splitlines())
        at = next((i for i, line in enumerate(lines) if line.strip().startswith(text)), None)
        if at is None:
            raise SystemExit(f"{name}: no line starting with {text!r} (the tree moved on)")
        line = lines[at]
        indent = line[:len(line) - len(line.lstrip())]
        call = (f"_st.s(self.role.value[0] + {stamp[2:]!r})" if stamp.startswith("R:")
                else f"_st.s({stamp!r})")
        if where == "before":
            lines.insert(at, indent + call)
        elif where == "after":
            lines.insert(at + 1, indent + call)
        elif where == "before-block":  # before the loop holding the line
            outer = at - 1
            lines.insert(outer, lines[outer][:len(lines[outer]) - len(lines[outer].lstrip())]
                         + call)
        else:  # "return": stamp before and after the returned call
            value = line.strip()[len("return "):]
            lines[at:at + 1] = [indent + f"_st.s({stamp + '0'!r})", indent + f"_r = {value}",
                                indent + f"_st.s({stamp + '1'!r})", indent + "return _r"]
    channel = files["ssmshell/channel.py"]
    at = next(i for i, line in enumerate(channel) if "on_binary: Callable[[bytes], None]" in line)
    indent = channel[at][:len(channel[at]) - len(channel[at].lstrip())]
    channel[at + 1:at + 1] = [indent + line if line else "" for line in RECEIVED.splitlines()]
    for name, lines in files.items():
        text = "\n".join(lines) + "\n"
        future = "from __future__ import annotations\n"
        text = text.replace(future, future + "\nfrom ssmshell import _stamp as _st\n", 1)
        (tree / name).write_text(text)


def measure(tree: Path, keys: int, stamps: Path) -> bench.Interleaved:
    """One (c⁗) run with the instrumented copy, its stamps going to ``stamps``."""
    os.environ["ECHO_STAMPS"] = str(stamps)  # the local SM and ssmshell inherit it
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    home = tempfile.mkdtemp(prefix="ssmshell-stages-")
    os.chdir(home)
    try:
        out = bench.Interleaved()
        bench.interleaved(use_tree(bench, tree, bench.client_env(home)), keys, 0.02, None, out)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def chains(typed: list[tuple[float, float]], stamps: Path) -> list[list[float]]:
    """Per keystroke whose every stamp came in order: [sent, *ORDER stamps, echoed]."""
    found = sorted((float(t), name) for path in glob.glob(f"{stamps}/*.txt")
                   for t, name in (line.split() for line in Path(path).read_text().splitlines()))
    times = [t for t, _ in found]
    rows = []
    for sent, echoed in typed:
        seen: dict[str, float] = {}
        for t, name in found[bisect.bisect_left(times, sent):bisect.bisect_right(times, echoed)]:
            if name[0] == "W":  # write_frames of the client, then of the agent
                name = ("a" if "aF" in seen else "c") + name
            seen.setdefault(name, t)
        chain = [sent] + [seen.get(name, float("nan")) for name in ORDER] + [echoed]
        if all(a <= b for a, b in itertools.pairwise(chain)):  # NaN fails too
            rows.append(chain)
    return rows


def stage_table(rows: list[list[float]]) -> list[str]:
    """The median of each step over ``rows``, and over their slowest 5% (by echo)."""
    slow = sorted(rows, key=lambda row: row[-1] - row[0])[-max(1, len(rows) // 20):]
    lines = ["   median  slowest 5%  step"]
    for i, name in enumerate([*ORDER, "echoed"], start=1):
        steps = [statistics.median(row[i] - row[i - 1] for row in some) if some
                 else float("nan") for some in (rows, slow)]
        lines.append(f"  {steps[0] * 1e6:7.1f}  {steps[1] * 1e6:10.1f}  {LABELS[name]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="a git revision to measure (default: the working tree)")
    parser.add_argument("--keys", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssmshell-stages-tree-"))
    try:
        copy_tree(args.rev, work)
        instrument(work)
        stamps = work / "stamps"
        stamps.mkdir()
        run = measure(work, args.keys, stamps)
        rows = chains(run.typed, stamps)
        print(f"tree {args.rev or 'working tree'}: echo {bench.p50_p99(run.echo, 'keys')}, "
              f"raw {bench.p50_p99(run.raw, 'msgs')}, over raw "
              f"{bench.over_text(run.echo, run.raw)} (instrumented)")
        print(f"each step in µs, over the {len(rows)} keystrokes whose every stamp came in "
              f"order, and over the slowest 5% of them:")
        print("\n".join(stage_table(rows)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
