"""NonInteractiveCommands: a command without PTY or stdin (§9.3)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from ssmshell.local.plugin import AgentIO, Plugin
from ssmshell.protocol.payloads import PayloadType

READ_SIZE = 1024


class NonInteractivePlugin(Plugin):
    """Runs ``argv`` with pipes.

    With ``separate`` (the document's ``separateOutputStream``) stdout goes out as
    Output (1) and stderr as StdErr (11) while the command runs, each prefixed as
    §9.3 says, then ``EXIT_CODE: n``. Without it both go to one buffer that is
    sent when the command has exited, and no exit code is sent.
    """

    def __init__(self, io: AgentIO, argv: list[str], *, separate: bool,
                 stdout_prefix: str = "", stderr_prefix: str = "",
                 env: dict[str, str] | None = None) -> None:
        super().__init__(io)
        self.argv = argv
        self.separate = separate
        self.prefixes = (stdout_prefix.encode(), stderr_prefix.encode())
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self) -> str:
        self.io.set_ready(True)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE if self.separate else asyncio.subprocess.STDOUT,
                start_new_session=True, env=self.env)
        except OSError as exc:
            if self.separate:  # §9.3: EXIT_CODE 1 first, the error text about 1 s later
                self.io.send_exit_code(1)
                await asyncio.sleep(1.0)
            self.io.send(f"failed to run commands: {exc}".encode(), PayloadType.STDERR)
            return ""
        assert self.proc.stdout is not None
        if self.separate:
            assert self.proc.stderr is not None
            await asyncio.gather(
                self._pump(self.proc.stdout, PayloadType.OUTPUT, self.prefixes[0]),
                self._pump(self.proc.stderr, PayloadType.STDERR, self.prefixes[1]))
            code = await self.proc.wait()
            self.io.send_exit_code(code if code >= 0 else -1)
        else:
            output = await self.proc.stdout.read()
            await self.proc.wait()
            self.io.send(output)
        return ""

    async def _pump(self, stream: asyncio.StreamReader, payload_type: int, prefix: bytes) -> None:
        at_line_start = True
        while True:
            await self.io.wait_writable()
            chunk = await stream.read(READ_SIZE - len(prefix))
            if not chunk:
                return
            if prefix and at_line_start:
                chunk = prefix + chunk
            at_line_start = chunk.endswith(b"\n")
            self.io.send(chunk, payload_type)
            if self.io.pacing:
                await asyncio.sleep(self.io.pacing)

    def on_input(self, data: bytes) -> None:
        # §9.3: input is only scanned for control characters.
        if self.proc is None or self.proc.returncode is not None:
            return
        for byte, sig in ((0x03, signal.SIGINT), (0x1C, signal.SIGQUIT)):
            if byte in data:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, sig)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
