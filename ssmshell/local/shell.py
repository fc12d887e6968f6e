"""Standard_Stream and InteractiveCommands: a real PTY running a real program (§9.1, §9.2)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios

from ssmshell.local.plugin import AgentIO, Plugin

READ_SIZE = 1024  # §6.8: the agent reads at most 1024 bytes per message
INITIAL_READ_DELAY = 1.0  # §9.1: the agent waits 1 s before it reads pty output
MAX_PENDING_INPUT = 64 * 1024  # beyond this, stop acking input (back-pressure)


def split_utf8_tail(data: bytes) -> tuple[bytes, bytes]:
    """Hold back an incomplete UTF-8 sequence at the end of ``data`` (§6.8).

    Returns:
        ``(complete, tail)`` with ``tail`` at most 3 bytes; invalid bytes pass through.
    """
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else (
            4 if byte & 0xF8 == 0xF0 else 1)
        if need > back:
            return data[:-back], data[-back:]
        break
    return data, b""


def _controlling_tty() -> None:  # runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class ShellPlugin(Plugin):
    """Runs ``argv`` on a PTY; Output both ways, Size resizes the PTY.

    Args:
        io: the agent session.
        argv: the program and its arguments.
        env: the environment (TERM/LANG are set as the agent does).
        initial_delay: seconds before the first read of PTY output.
    """

    echoes = True

    def __init__(self, io: AgentIO, argv: list[str], *, env: dict[str, str] | None = None,
                 initial_delay: float = INITIAL_READ_DELAY) -> None:
        super().__init__(io)
        self.argv = argv
        self.env = dict(os.environ if env is None else env)
        self.env["TERM"] = "xterm-256color"
        self.env.setdefault("LANG", "C.UTF-8")
        self.initial_delay = initial_delay
        self.master = -1
        self.proc: asyncio.subprocess.Process | None = None
        self._size = (80, 24)
        self._wbuf = bytearray()
        self._writer_on = False
        self._pumped: asyncio.Future[None] | None = None  # set at the end of output
        self._watching = False  # the PTY is registered for reading
        self._held = b""  # an incomplete UTF-8 sequence, sent with the next read
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> str:
        self.master, slave = pty.openpty()
        self._apply_size()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=slave, stdout=slave, stderr=slave, env=self.env,
                preexec_fn=_controlling_tty, close_fds=True)
        except OSError as exc:
            os.close(slave)
            return f"Unable to start command: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.close(slave)
        os.set_blocking(self.master, False)
        self.io.set_ready(True)
        await asyncio.sleep(self.initial_delay)
        pump = asyncio.create_task(self._pump())
        await self.proc.wait()
        # Background children may keep the PTY open: read what is left, briefly.
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), 0.5)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        self._close()
        return ""

    async def _pump(self) -> None:
        """Read the PTY as the agent does, a read then ``pacing`` of rest, from readiness
        callbacks: output leaves in the callback that sees it, with no task switch.
        Returns at the end of output."""
        self._pumped = asyncio.get_running_loop().create_future()
        self._watch()
        try:
            await self._pumped
        finally:
            self._unwatch()
        if self._held:
            self.io.send(self._held)
            self._held = b""

    def _watch(self) -> None:
        if self.master >= 0 and not self._watching and self._pumped is not None \
                and not self._pumped.done():
            asyncio.get_running_loop().add_reader(self.master, self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            # Before the fd is closed: a closed fd leaves epoll but not asyncio's
            # selector map, and a socket reusing the number would never be read.
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.master)

    def _end_of_output(self) -> None:
        self._unwatch()
        if self._pumped is not None and not self._pumped.done():
            self._pumped.set_result(None)

    def _on_readable(self) -> None:
        if not self.io.writable:  # the unacked window is full: stop reading until it is not
            self._unwatch()
            task = asyncio.get_running_loop().create_task(self._watch_when_writable())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except (ValueError, OSError):  # closed under us, or EIO: every slave fd is closed
            data = b""
        if not data:
            self._end_of_output()
            return
        data, self._held = split_utf8_tail(self._held + data)
        if data:
            self.io.send(data)
        if self.io.pacing:
            self._unwatch()
            asyncio.get_running_loop().call_later(self.io.pacing, self._watch)

    async def _watch_when_writable(self) -> None:
        await self.io.wait_writable()
        self._watch()

    def on_input(self, data: bytes) -> None:
        if self.master < 0:
            return
        self._wbuf += data
        self._write()
        if self._watching:
            # The terminal's echo is often readable at once. The real agent reads the PTY
            # in a goroutine of its own, beside the receive loop; read now rather than
            # after this message's ack and a turn of the event loop.
            self._on_readable()

    def _write(self) -> None:
        try:
            written = os.write(self.master, self._wbuf)
        except BlockingIOError:
            written = 0
        except OSError:
            self._wbuf.clear()
            written = 0
        del self._wbuf[:written]
        loop = asyncio.get_running_loop()
        if self._wbuf and not self._writer_on:
            loop.add_writer(self.master, self._write)
            self._writer_on = True
        elif not self._wbuf and self._writer_on:
            loop.remove_writer(self.master)
            self._writer_on = False
        self.io.set_ready(len(self._wbuf) < MAX_PENDING_INPUT)

    def on_size(self, cols: int, rows: int) -> None:
        # §9.1: cols and rows are cast to 16 bits.
        self._size = (cols & 0xFFFF, rows & 0xFFFF)
        if self.master >= 0:
            self._apply_size()

    def _apply_size(self) -> None:
        cols, rows = self._size
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._close()

    def _close(self) -> None:
        if self.master >= 0:
            loop = asyncio.get_running_loop()
            if self._writer_on:
                loop.remove_writer(self.master)
                self._writer_on = False
            self._end_of_output()
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = -1
