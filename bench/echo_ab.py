"""Keystroke echo of two trees, measured in turn: did a change make the echo faster?

Run: ``.venv/bin/python bench/echo_ab.py REV [--runs 5] [--keys 200]`` (about 1 min per
run pair).

On this VM the echo moves by more from one minute to the next than most changes
move it, so one tree measured after the other says little. This runs the (c⁗)
measurement of ``bench/session.py`` (a keystroke, then a raw websocket round trip,
20 ms apart; the local SM in a process of its own) alternately with ``REV`` (from
``git archive``) and the working tree, ssmshell and the local SM both from the tree
under test, and prints each run and the pooled over-raw figures of each tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import session as bench  # bench/, the script's folder, is first on sys.path
from trees import ROOT, copy_tree, use_tree


def one_run(tree: Path, env: dict[str, str], keys: int) -> bench.Interleaved:
    """One (c⁗) run with ssmshell and the local SM of ``tree``."""
    out = bench.Interleaved()
    bench.interleaved(use_tree(bench, tree, env), keys, 0.02, None, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("--runs", type=int, default=5, help="runs of each tree (default 5)")
    parser.add_argument("--keys", type=int, default=200, help="keystrokes per run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssmshell-ab-"))
    home = work / "home"
    home.mkdir()
    trees = {args.rev: copy_tree(args.rev, work / "rev"), "working tree": ROOT}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env = bench.client_env(str(home))
    os.chdir(home)
    pooled = {name: bench.Interleaved() for name in trees}
    try:
        for tree in trees.values():
            one_run(tree, env, 10)  # warm-up: bytecode caches
        for n in range(args.runs):
            for name in (list(trees) if n % 2 == 0 else list(trees)[::-1]):
                run = one_run(trees[name], env, args.keys)
                print(f"{name:>14}: echo {bench.p50_p99(run.echo, 'keys')}, raw "
                      f"{bench.p50_p99(run.raw, 'msgs')}, over raw "
                      f"{bench.over_text(run.echo, run.raw)}", flush=True)
                pooled[name].echo += run.echo
                pooled[name].raw += run.raw
        print("pooled:")
        for name, runs in pooled.items():
            print(f"{name:>14}: echo − raw RTT, p50 / p99 {bench.over_text(runs.echo, runs.raw)}"
                  f" (echo {bench.p50_p99(runs.echo, 'keys')})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
