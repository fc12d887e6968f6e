"""Standard-stream port sessions: stdin/stdout bridged to the target's port (§10.5).

This is what ``ssh -o ProxyCommand='ssmshell proxy %h %p'`` runs. Bytes pass
untouched both ways (no newline rewriting, §16.16), the terminal is not
touched, and no Size is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ssmshell.channel import Channel, ChannelError
from ssmshell.protocol import events as ev
from ssmshell.protocol.payloads import Flag, PayloadType
from ssmshell.protocol.versions import TERMINATE_SESSION_FLAG_AFTER, plugin_greater
from ssmshell.sessions.stdio import Reader, write_all

#: After stdin ends, how long remaining output may still arrive before we close.
LINGER = 1.0


class StdioSession:
    """Bridges ``stdin``/``stdout`` to a standard-stream Port session."""

    def __init__(self, channel: Channel, *, stdin: int = 0, stdout: int = 1,
                 notice: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.stdin, self.stdout = stdin, stdout
        self.notice = notice or (lambda line: None)
        self.agent_version = ""
        self._pump: asyncio.Task[None] | None = None
        self._input_done = asyncio.Event()

    async def run(self) -> int:
        """Run until the remote side closes or our input ends; returns 0."""
        await self.channel.open()
        events = self.channel.events()
        try:
            while True:
                next_event = asyncio.ensure_future(events.__anext__())
                done_wait = asyncio.ensure_future(self._input_done.wait())
                done, _ = await asyncio.wait({next_event, done_wait},
                                             return_when=asyncio.FIRST_COMPLETED)
                if next_event in done:
                    done_wait.cancel()
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        return 0
                    if await self._on_event(event):
                        return 0
                else:
                    next_event.cancel()
                    await self._finish_after_eof()
                    return 0
        finally:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump

    async def _on_event(self, event: ev.Event) -> bool:
        if isinstance(event, ev.SessionStarted):
            self.agent_version = event.agent_version
            self._pump = asyncio.create_task(self._pump_input())
        elif isinstance(event, ev.StreamData) and event.payload_type == PayloadType.OUTPUT:
            await write_all(self.stdout, event.data)
        elif isinstance(event, ev.ChannelClosed):
            if event.output:
                self.notice(f"session closed: {event.output}")
            return True
        return False

    async def _pump_input(self) -> None:
        reader = Reader(self.stdin)
        try:
            while True:
                data = await reader.read()
                if not data:
                    break
                await self.channel.send_output(data)
        except ChannelError:
            pass
        self._input_done.set()

    async def _finish_after_eof(self) -> None:
        """§10.5: on stdin EOF wait briefly for output, then end the session."""
        await self.channel.drain(LINGER)
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self._drain_output(), LINGER)
        if plugin_greater(self.agent_version, TERMINATE_SESSION_FLAG_AFTER):
            with contextlib.suppress(Exception):
                await self.channel.send_flag(Flag.TERMINATE_SESSION)
                await self.channel.drain(1.0)

    async def _drain_output(self) -> None:
        async for event in self.channel.events():
            if await self._on_event(event):
                return
