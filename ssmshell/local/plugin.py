"""What a session plugin of the agent emulator sees, and what it must offer.

The agent runs one plugin per session, chosen by session type (§9, §10):
:mod:`ssmshell.local.shell` for Standard_Stream and InteractiveCommands,
:mod:`ssmshell.local.noninteractive` for NonInteractiveCommands and
:mod:`ssmshell.local.port` for Port.
"""

from __future__ import annotations

import abc
from typing import Protocol


class AgentIO(Protocol):
    """The agent session's side of a plugin: output and readiness."""

    def send(self, data: bytes, payload_type: int = 1) -> None:
        """Queue ``data`` as Output (1) or StdErr (11) stream messages."""

    def send_exit_code(self, code: int) -> None:
        """Queue ``EXIT_CODE: n`` (§9.3)."""

    def send_flag(self, flag: int) -> None:
        """Queue a Flag message (§4.5)."""

    async def wait_writable(self) -> None:
        """Wait while the unacked window is full (the real agent's producers stop reading)."""

    @property
    def writable(self) -> bool:
        """Whether output may be queued now (the condition :meth:`wait_writable` awaits)."""

    def set_ready(self, ready: bool) -> None:
        """Input is not acked while not ready, so the client retransmits it (§6.4)."""

    @property
    def pacing(self) -> float:
        """Seconds to sleep between 1024-byte reads (0 = off, for benchmarks)."""


class Plugin(abc.ABC):
    """One running session plugin."""

    #: Whether input comes back as output at once (a terminal's echo): the agent then
    #: lets that output leave before the input's ack (:data:`agent.ECHO_WAIT`).
    echoes = False

    def __init__(self, io: AgentIO) -> None:
        self.io = io

    @abc.abstractmethod
    async def run(self) -> str:
        """Run until the session's work is done.

        Returns:
            "" on success, otherwise the failure text for channel_closed's Output.
        """

    def on_input(self, data: bytes) -> None:  # noqa: B027 - optional hook
        """Output bytes from the client."""

    def on_size(self, cols: int, rows: int) -> None:  # noqa: B027 - optional hook
        """A Size message from the client."""

    def on_flag(self, flag: int) -> None:  # noqa: B027 - optional hook
        """A Flag message from the client."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Cancel: kill processes, close connections (TerminateSession, §13)."""
