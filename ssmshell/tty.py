"""The local terminal: raw mode, size, and restoring it on every way out.

Raw mode (ISIG, ICANON, ECHO, ICRNL, OPOST off — ``cfmakeraw``) hands every
byte to the remote side untouched: Ctrl-C, Ctrl-Z and Ctrl-\\ become the bytes
0x03, 0x1a and 0x1c and the remote PTY turns them into signals (§9.5), and
Enter arrives as CR, so no newline rewriting is needed.

POSIX only for now; a Windows console implementation would live here behind
the same :class:`Terminal` interface (ENABLE_VIRTUAL_TERMINAL_INPUT).
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import TracebackType

#: §9.4: the plugin's size when none can be read.
FALLBACK_SIZE = (300, 100)


def terminal_size(fd: int | None = None) -> tuple[int, int]:
    """Columns and rows of the terminal on ``fd`` (default: stdout, then stdin, then stderr)."""
    candidates = [fd] if fd is not None else [1, 0, 2]
    for candidate in candidates:
        with contextlib.suppress(OSError, ValueError):
            size = os.get_terminal_size(candidate)
            if size.columns and size.lines:
                return size.columns, size.lines
    return FALLBACK_SIZE


class Terminal:
    """Puts ``fd`` in raw mode for the duration of a ``with`` block, if it is a TTY.

    Restoring is idempotent and also registered with :mod:`atexit`, so the
    terminal comes back on a normal exit, an exception, or a signal that the
    caller turns into an exception or a cancellation.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.is_tty = _isatty(fd)
        self._saved: list[object] | None = None

    def __enter__(self) -> Terminal:
        self.enter_raw()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()

    def enter_raw(self) -> None:
        """Switch to raw mode (no-op if not a TTY or already raw)."""
        if not self.is_tty or self._saved is not None or sys.platform == "win32":
            return
        import atexit
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        atexit.register(self.restore)
        tty.setraw(self.fd, termios.TCSANOW)

    def restore(self) -> None:
        """Put the saved attributes back (idempotent)."""
        if self._saved is None:
            return
        import termios

        saved, self._saved = self._saved, None
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
