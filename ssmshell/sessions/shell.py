"""Interactive shell sessions (Standard_Stream / InteractiveCommands, §9.1, §9.2).

Raw terminal in, remote PTY bytes out. The size is sent right after the
session starts and again on every SIGWINCH (no polling). Banners go to stderr,
so stdout carries only remote output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable

from ssmshell.channel import Channel, ChannelError
from ssmshell.protocol import events as ev
from ssmshell.protocol.payloads import PayloadType
from ssmshell.sessions.stdio import Reader, write_all, write_now
from ssmshell.tty import Terminal, terminal_size

#: Sent on end of piped input so the remote shell sees end-of-file (Ctrl-D).
EOT = b"\x04"
#: After piped input ends: send EOT again whenever the remote side was quiet this long.
EOF_QUIET = 1.0
#: ... at most this many times in all.
EOF_TRIES = 3


class ShellSession:
    """Bridges the local terminal (or pipes) and a shell-type session.

    Args:
        channel: an unopened :class:`Channel`.
        stdin: local input descriptor.
        stdout: local output descriptor.
        stderr: descriptor for remote StdErr payloads.
        notice: prints one line to the user's stderr (banners, close reason).
    """

    def __init__(self, channel: Channel, *, stdin: int = 0, stdout: int = 1, stderr: int = 2,
                 notice: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.terminal = Terminal(stdin)
        self.notice = notice or (lambda line: None)
        self.exit_code: int | None = None
        self.close_reason: str | None = None
        self._started = False
        self._pump: asyncio.Task[None] | None = None
        self._last_output = 0.0
        self._wrote = False

    async def run(self) -> int:
        """Run the session until the remote side closes it.

        Returns:
            0, or the remote exit status when the agent sent one (§9.3).

        Raises:
            ChannelError: the channel failed (the terminal is restored first).
        """
        loop = asyncio.get_running_loop()
        with self.terminal:
            winch = False
            if self.terminal.is_tty and sys.platform != "win32":
                loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
                winch = True
            try:
                self.channel.sink = self._sink
                await self.channel.open()
                async for event in self.channel.events():
                    await self._on_event(event)
            except BaseException:
                if self._wrote and self.terminal.is_tty:
                    # The error line must not land after a remote prompt.
                    with contextlib.suppress(OSError):
                        os.write(self.stderr, b"\r\n")
                raise
            finally:
                if winch:
                    loop.remove_signal_handler(signal.SIGWINCH)
                if self._pump is not None:
                    self._pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await self._pump
        if self.close_reason:
            self.notice(f"session {self.channel.session_id} closed by the remote side: "
                        f"{self.close_reason}")
        elif self.terminal.is_tty:
            self.notice(f"session {self.channel.session_id} ended")
        return self.exit_code or 0

    async def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.StreamData):
            rest = self._sink(event)
            if rest:
                await write_all(self._fd_for(event), rest)
        elif isinstance(event, ev.SessionStarted):
            self._started = True
            if event.customer_message:
                self.notice(event.customer_message)
            cols, rows = terminal_size()
            await self.channel.send_size(cols, rows)
            self._pump = asyncio.create_task(self._pump_input())
        elif isinstance(event, ev.ExitCode):
            self.exit_code = event.code
        elif isinstance(event, ev.ChannelClosed):
            if not self._started:
                # The agent gave up during the handshake (KMS, challenge, …), §7.6.
                raise ChannelError("the session ended during setup: "
                                   + (event.output or "no reason given"))
            self.close_reason = event.output

    def _sink(self, event: ev.StreamData) -> bytes:
        """Remote output, written as far as it goes without waiting; the rest is returned
        (the channel calls this as frames arrive while the session is idle)."""
        self._last_output = asyncio.get_running_loop().time()
        self._wrote = True
        return write_now(self._fd_for(event), event.data)

    def _fd_for(self, event: ev.StreamData) -> int:
        return self.stderr if event.payload_type == PayloadType.STDERR else self.stdout

    def _on_winch(self) -> None:
        if self._started:
            cols, rows = terminal_size()
            asyncio.get_running_loop().create_task(self._send_size(cols, rows))

    async def _send_size(self, cols: int, rows: int) -> None:
        with contextlib.suppress(Exception):
            await self.channel.send_size(cols, rows)

    async def _pump_input(self) -> None:
        reader = Reader(self.stdin)
        while True:
            data = await reader.read(self._send_now)
            if not data:
                if not self.terminal.is_tty:
                    await self._end_of_input()
                return
            await self.channel.send_output(data)  # it had to wait (window, socket buffer)

    def _send_now(self, data: bytes) -> bool:
        """A keystroke (or a paste) straight from stdin's readiness callback."""
        try:
            return self.channel.send_output_now(data)
        except Exception:  # send_output raises it again, in the task
            return False

    async def _end_of_input(self) -> None:
        """Piped input ended: pass end-of-file on as Ctrl-D (EOT).

        A remote shell may not have been reading yet when the first EOT arrived (a
        shell that switches its terminal to raw mode discards a pending EOF), so
        EOT is sent again each time the remote side has been quiet for
        :data:`EOF_QUIET` seconds, :data:`EOF_TRIES` times in all.
        """
        loop = asyncio.get_running_loop()
        for _ in range(EOF_TRIES):
            await self.channel.send_output(EOT)
            sent = loop.time()
            while True:
                quiet_for = loop.time() - max(sent, self._last_output)
                if quiet_for >= EOF_QUIET:
                    break
                await asyncio.sleep(EOF_QUIET - quiet_for)
