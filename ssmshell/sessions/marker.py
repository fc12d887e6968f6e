"""Commands with exit codes over an interactive (PTY) session: the in-band marker path.

ECS Exec only runs commands interactively, on a PTY, and nothing in the protocol
carries an exit status there (PROTOCOL.md §9.6). So the command is wrapped:

    stty raw -echo; printf '<START>\\n'; <stdin part> ( <command> ); printf '<END>%d\\n' $?

``<START>``/``<END>`` contain a random 128-bit per-run token, so remote output cannot
forge them. ``stty raw -echo`` makes the PTY transparent: no echo of what we send, no
``\\n`` → ``\\r\\n`` on output, no signal characters, no flow control. What reaches
local stdout is exactly what the command wrote between the markers.

Stdin (when given) is read completely first, then sent raw after ``<START>`` and fed
to the command by ``head -c N``, so it is byte-exact and the command sees its end.

What is *not* exact in this mode (documented in the README): stdout and stderr are
one stream (the PTY's); if ``stty`` is missing on the target the PTY stays cooked,
and ssmshell then turns ``\\r\\n`` back into ``\\n`` (a ``\\r\\n`` the command wrote
itself becomes ``\\n`` too) and cannot send stdin.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
from collections.abc import Callable

from ssmshell.channel import Channel, ChannelError
from ssmshell.protocol import events as ev
from ssmshell.sessions.stdio import write_all


class Markers:
    """The per-run start and end markers."""

    def __init__(self, token: str | None = None) -> None:
        token = token or secrets.token_hex(16)
        self.start = f"__SSMSHELL_{token}_START__".encode()
        self.end = f"__SSMSHELL_{token}_EXIT__".encode()


def wrap(command: str, markers: Markers, stdin_size: int | None) -> str:
    """The ``sh`` script that runs ``command`` between the markers.

    Args:
        command: the user's command line (a shell command).
        markers: this run's markers.
        stdin_size: bytes of stdin ssmshell will send, or None for ``</dev/null``.
    """
    feed = f"head -c {stdin_size} | " if stdin_size else ""
    redirect = "" if stdin_size else " </dev/null"
    start, end = markers.start.decode(), markers.end.decode()
    return (f"stty raw -echo 2>/dev/null; printf '%s\\n' '{start}'; "
            f"{feed}( {command} ){redirect}; printf '{end}%d\\n' $?")


def ecs_command(command: str, markers: Markers, stdin_size: int | None) -> str:
    """The ExecuteCommand ``command`` for ``command``: the agent splits it shell-style
    and executes it directly (§9.2), so the script goes to ``/bin/sh -c``."""
    return "/bin/sh -c " + shlex.quote(wrap(command, markers, stdin_size))


class MarkerSession:
    """Runs one wrapped command on an interactive session and returns its exit status.

    Args:
        channel: an unopened :class:`Channel` whose session runs :func:`wrap`'s script.
        markers: the markers used in that script.
        stdin: bytes to send once the command has started (None: nothing).
        stdout: where the command's output goes.
        notice: one line to the user's stderr.
    """

    def __init__(self, channel: Channel, markers: Markers, *, stdin: bytes | None = None,
                 stdout: int = 1, notice: Callable[[str], None] | None = None,
                 on_output: Callable[[bytes], None] | None = None) -> None:
        self.channel = channel
        self.markers = markers
        self.stdin = stdin
        self.stdout = stdout
        self.notice = notice or (lambda line: None)
        self.on_output = on_output
        self._buffer = b""
        self._started = False
        self._cooked = False
        self._done = False
        self.exit_code: int | None = None

    async def run(self) -> int:
        """Returns the command's exit status (128+n when a signal n killed it).

        Raises:
            ChannelError: the session ended before the command reported its status.
        """
        await self.channel.open()
        try:
            async for event in self.channel.events():
                if isinstance(event, ev.SessionStarted):
                    # The PTY must know a size; some programs misbehave with 0x0.
                    await self.channel.send_size(200, 50)
                elif isinstance(event, ev.StreamData):
                    await self._on_output(event.data)
                    if self._done:
                        break
                elif isinstance(event, ev.ChannelClosed):
                    break
        finally:
            await self._flush_tail()
        if self.exit_code is None:
            raise ChannelError("the session ended before the command reported its exit "
                               "status")
        return self.exit_code

    async def _emit(self, data: bytes) -> None:
        if not data:
            return
        if self._cooked:
            data = data.replace(b"\r\n", b"\n")
        if self.on_output is not None:
            self.on_output(data)
            return
        with contextlib.suppress(BrokenPipeError):
            await write_all(self.stdout, data)

    async def _on_output(self, data: bytes) -> None:
        self._buffer += data
        if not self._started:
            at = self._buffer.find(self.markers.start)
            if at < 0:
                # Keep only what could be the start of a split marker.
                self._buffer = self._buffer[-len(self.markers.start):]
                return
            rest = self._buffer[at + len(self.markers.start):]
            if rest.startswith(b"\r\n"):  # stty failed: the PTY is cooked
                self._cooked = True
                rest = rest[2:]
            elif rest.startswith(b"\n"):
                rest = rest[1:]
            elif not rest or rest == b"\r":
                return  # wait for the rest of the line
            self._started = True
            self._buffer = rest
            if self.stdin:
                if self._cooked:
                    self.notice("the target has no 'stty': input could not be sent")
                else:
                    await self.channel.send_output(self.stdin)
        at = self._buffer.find(self.markers.end)
        if at >= 0:
            await self._emit(self._buffer[:at])
            tail = self._buffer[at + len(self.markers.end):]
            line_end = tail.find(b"\n")
            if line_end < 0:
                self._buffer = self._buffer[at:]
                return
            digits = tail[:line_end].strip()
            try:
                self.exit_code = int(digits)
            except ValueError:
                self.exit_code = 1
            self._buffer = b""
            self._done = True
            return
        # Everything except a possible partial end marker can go out now.
        keep = len(self.markers.end) - 1
        if len(self._buffer) > keep:
            await self._emit(self._buffer[:-keep])
            self._buffer = self._buffer[-keep:]

    async def _flush_tail(self) -> None:
        if self._started and not self._done and self._buffer:
            await self._emit(self._buffer)
            self._buffer = b""
