"""Non-interactive commands with real exit codes (§9.3).

NonInteractiveCommands with ``separateOutputStream``: Output (1) → stdout,
StdErr (11) → stderr, ``EXIT_CODE: n`` (12) → our exit status. We still wait
for channel_closed (or a short drain) after the exit code, so late output is
not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ssmshell.channel import Channel, ChannelError
from ssmshell.protocol import events as ev
from ssmshell.protocol.payloads import PayloadType
from ssmshell.sessions.stdio import write_all

#: After EXIT_CODE, how long to wait for channel_closed.
DRAIN_AFTER_EXIT = 2.0


class CommandSession:
    """Runs one NonInteractiveCommands session to completion.

    Args:
        channel: an unopened :class:`Channel`.
        stdout, stderr: where the two remote streams go.
        notice: one line to the user's stderr.
    """

    def __init__(self, channel: Channel, *, stdout: int = 1, stderr: int = 2,
                 notice: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.stdout, self.stderr = stdout, stderr
        self.notice = notice or (lambda line: None)
        self.exit_code: int | None = None
        self.started = False

    async def run(self) -> int | None:
        """Returns the remote exit code, or None when the agent sent none."""
        await self.channel.open()
        events = self.channel.events()
        while True:
            try:
                if self.exit_code is None:
                    event = await events.__anext__()
                else:
                    event = await asyncio.wait_for(events.__anext__(), DRAIN_AFTER_EXIT)
            except (StopAsyncIteration, asyncio.TimeoutError, TimeoutError):
                return self.exit_code
            if isinstance(event, ev.SessionStarted):
                self.started = True
            elif isinstance(event, ev.StreamData):
                fd = self.stderr if event.payload_type == PayloadType.STDERR else self.stdout
                with contextlib.suppress(BrokenPipeError):
                    await write_all(fd, event.data)
            elif isinstance(event, ev.ExitCode):
                self.exit_code = event.code
            elif isinstance(event, ev.ChannelClosed):
                if not self.started:
                    raise ChannelError("the session ended during setup: "
                                       + (event.output or "no reason given"))
                if event.output:
                    self.notice(f"session closed: {event.output}")
                return self.exit_code
