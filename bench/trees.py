"""Copies of an ssmshell tree, run by ``bench/session.py``'s (c⁗) measurement: the
helpers of ``bench/echo_ab.py`` (two trees in turn) and ``bench/echo_stages.py`` (an
instrumented copy)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def copy_tree(rev: str | None, into: Path) -> Path:
    """``ssmshell/`` and ``bench/`` of git revision ``rev`` (None: the working tree)."""
    if rev is None:
        for part in ("ssmshell", "bench"):
            shutil.copytree(ROOT / part, into / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        return into
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ssmshell", "bench"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def use_tree(bench: ModuleType, tree: Path, env: dict[str, str]) -> dict[str, str]:
    """Point ``bench`` (the ``session`` module) at ``tree``: its local SM (``--serve``
    children run that tree's bench/session.py) and its ssmshell (``python -m ssmshell``
    with ``PYTHONPATH``, not this checkout's console script). Returns the client
    environment for it; the caller runs from a folder that holds no ssmshell (``-m``
    puts the current folder first on sys.path)."""
    bench.__file__ = str(tree / "bench" / "session.py")
    bench.ssmshell_argv = lambda *args: [sys.executable, "-m", "ssmshell", *args]
    os.environ["PYTHONPATH"] = str(tree)  # the --serve children inherit it
    return dict(env, PYTHONPATH=str(tree))
