"""Non-blocking local stdin/stdout for the session types.

Pollable descriptors (TTYs, pipes, sockets) are read through the event loop;
regular files and anything epoll refuses are read by a daemon thread, which
never keeps the process alive at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable

READ_SIZE = 64 * 1024


class Reader:
    """Reads chunks from a file descriptor without blocking the event loop.

    Args:
        fd: the descriptor (usually 0).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._pollable = True  # the event loop can watch fd (else a thread reads it)
        try:
            self._loop.add_reader(fd, lambda: None)
            self._loop.remove_reader(fd)
        except (OSError, ValueError, NotImplementedError):
            self._pollable = False

    async def read(self, consume: Callable[[bytes], bool] | None = None) -> bytes:
        """The next chunk; ``b""`` at end of file.

        Args:
            consume: offered each chunk as it is read, in the event loop's readiness
                callback (no task switch per chunk); a chunk it takes (True) is not
                returned and reading goes on. Not used for descriptors a thread reads.
        """
        if self._pollable:
            return await self._read_polled(consume)
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, daemon=True,
                                            name="ssmshell-stdin")
            self._thread.start()
        return await self._queue.get()

    async def _read_polled(self, consume: Callable[[bytes], bool] | None) -> bytes:
        # Wait for readiness first: stdin is usually in blocking mode, and we do not
        # switch it to O_NONBLOCK (that flag is shared with the parent shell).
        loop = self._loop
        waiting: asyncio.Future[bytes] = loop.create_future()

        def on_readable() -> None:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO on a vanished terminal: treat as end of input
                data = b""
            if data and consume is not None and consume(data):
                return
            loop.remove_reader(self.fd)  # now: a later readiness must not read and drop
            if not waiting.done():
                waiting.set_result(data)

        loop.add_reader(self.fd, on_readable)
        try:
            return await waiting
        finally:
            loop.remove_reader(self.fd)

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except OSError:
                data = b""
            future = asyncio.run_coroutine_threadsafe(self._queue.put(data), self._loop)
            with contextlib.suppress(Exception):
                future.result()
            if not data:
                return


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def write_now(fd: int, data: bytes) -> bytes:
    """Write what ``fd`` takes without waiting; returns the rest (``b""`` when all went).

    An error leaves the rest for :func:`write_all`, which raises it where the caller
    can handle it.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            break
        view = view[written:]
    return bytes(view)


async def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, waiting (not spinning) when it would block."""
    view = memoryview(data)
    loop = asyncio.get_running_loop()
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            raise
        view = view[written:]
        if view:
            ready = loop.create_future()
            try:
                loop.add_writer(fd, _set_once, ready)
            except (OSError, ValueError):
                await asyncio.sleep(0.001)
                continue
            try:
                await ready
            finally:
                loop.remove_writer(fd)
