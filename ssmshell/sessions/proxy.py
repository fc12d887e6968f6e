"""Standard-stream port sessions: stdin/stdout bridged to the target's port (§10.5).

This is what ``ssh -o ProxyCommand='ssmshell proxy %h %p'`` runs. Bytes pass
untouched both ways (no newline rewriting, §16.16), the terminal is not
touched, and no Size is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from ssmshell.channel import Channel, ChannelError
from ssmshell.errors import Exit
from ssmshell.protocol import events as ev
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import Flag, PayloadType
from ssmshell.protocol.versions import TERMINATE_SESSION_FLAG_AFTER, plugin_greater
from ssmshell.sessions.stdio import Reader, write_all

#: After stdin ends, how long remaining output may still arrive before we close.
LINGER = 1.0


class StdioSession:
    """Bridges ``stdin``/``stdout`` to a standard-stream Port session.

    The session ends when the remote side closes (``channel_closed``), when stdin
    ends (§10.5: remaining output is awaited briefly, then TerminateSession), when
    ssh hangs up on its ProxyCommand (SIGHUP, which ssh sends when it is done) or
    when nobody reads stdout any more (EPIPE). The last two are normal ends of a
    ProxyCommand: no message.
    """

    def __init__(self, channel: Channel, *, stdin: int = 0, stdout: int = 1,
                 notice: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.stdin, self.stdout = stdin, stdout
        self.notice = notice or (lambda line: None)
        self.agent_version = ""
        self._pump: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._input_ended = False
        self._hung_up = False
        self._output_gone = False
        self._status = 0
        self._hangup_installed = False

    async def run(self) -> int:
        """Run until the session ends; 0, or 1 when the session was closed with an error
        text (for example the agent could not connect to the port)."""
        await self.channel.open()
        self._catch_hangup()
        events = self.channel.events()
        try:
            while True:
                next_event = asyncio.ensure_future(events.__anext__())
                stop_wait = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait({next_event, stop_wait},
                                             return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                if next_event in done:
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        return self._status
                    if await self._on_event(event):
                        return self._status
                    continue
                next_event.cancel()
                await self._finish()
                return self._status
        finally:
            self._release_hangup()
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump

    def _catch_hangup(self) -> None:
        """ssh ends its ProxyCommand with SIGHUP once the connection is over: that is our
        cue to end the session, quietly (the handler replaces the runner's, which would
        report "terminated by signal SIGHUP" after every ssh command)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            return  # not the main thread, or no SIGHUP on this platform
        self._hangup_installed = True

    def _release_hangup(self) -> None:
        if self._hangup_installed:
            self._hangup_installed = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def _on_hangup(self) -> None:
        self._hung_up = True
        self._stop.set()

    async def _on_event(self, event: ev.Event) -> bool:
        if isinstance(event, ev.SessionStarted):
            self.agent_version = event.agent_version
            if self._pump is None:
                self._pump = asyncio.create_task(self._pump_input())
        elif isinstance(event, ev.StreamData) and event.payload_type == PayloadType.OUTPUT:
            if not self._output_gone:
                try:
                    await write_all(self.stdout, event.data)
                except OSError:  # EPIPE: whoever read our stdout (ssh) is gone
                    self._output_gone = True
                    self._stop.set()
        elif isinstance(event, ev.ChannelClosed):
            if event.output:
                self.notice(f"session closed: {event.output}")
                self._status = Exit.ERROR
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
        except (ChannelError, ProtocolError):  # the session is over or failed
            pass
        self._input_ended = True
        self._stop.set()

    async def _finish(self) -> None:
        """End the session from our side (§10.5): after stdin EOF wait briefly for the
        remaining output; after a hang-up or with stdout gone nobody wants it. Then
        TerminateSession (the runner calls the TerminateSession API as well)."""
        await self.channel.drain(LINGER)
        if not (self._hung_up or self._output_gone):
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                if await asyncio.wait_for(self._drain_output(), LINGER):
                    return  # the remote side closed meanwhile
        if plugin_greater(self.agent_version, TERMINATE_SESSION_FLAG_AFTER):
            with contextlib.suppress(Exception):
                await self.channel.send_flag(Flag.TERMINATE_SESSION)
                await self.channel.drain(1.0)

    async def _drain_output(self) -> bool:
        """Pass output on until channel_closed (True) or a hang-up / EPIPE (False)."""
        async for event in self.channel.events():
            if await self._on_event(event):
                return True
            if self._hung_up or self._output_gone:
                return False
        return True
