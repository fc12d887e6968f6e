"""Local stdin/stdout helpers of the session types (ssmshell/sessions/stdio.py)."""

from __future__ import annotations

import asyncio
import fcntl
import os

from ssmshell.sessions.stdio import write_all, write_now


def _nonblocking_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(w, False)
    return r, w


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_write_now_writes_all_that_fits() -> None:
    r, w = _nonblocking_pipe()
    try:
        assert write_now(w, b"echo") == b""
        assert os.read(r, 10) == b"echo"
    finally:
        os.close(r)
        os.close(w)


def test_write_now_returns_what_the_descriptor_did_not_take() -> None:
    r, w = _nonblocking_pipe()
    try:
        size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        data = bytes(range(256)) * (size // 256 + 100)
        rest = write_now(w, data)
        assert 0 < len(rest) < len(data)
        assert write_now(w, b"full") == b"full"  # nothing taken
        assert _read_all(r) + rest == data
        assert write_now(w, b"more") == b""  # room again
    finally:
        os.close(r)
        os.close(w)


def test_write_now_on_a_closed_reader_leaves_everything_for_write_all() -> None:
    r, w = _nonblocking_pipe()
    os.close(r)
    try:
        assert write_now(w, b"lost?") == b"lost?"
        try:
            asyncio.run(write_all(w, b"lost?"))
        except BrokenPipeError:
            pass
        else:
            raise AssertionError("write_all must raise the error write_now left")
    finally:
        os.close(w)
