"""Composition: an AWS session (from :mod:`ssmshell.aws`) run as a session type.

Here the boto3 side and the channel meet: KMS and ResumeSession calls are
handed to the channel as coroutines (run in threads, so the event loop never
blocks), signals become cancellation, and every failure becomes a
:class:`~ssmshell.errors.UserError` with its exit code. On every way out the
terminal is restored (by the session's ``with Terminal``) and, unless the
remote side already closed it, the session is terminated on the AWS side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ssmshell.aws.api import Aws, SessionInfo
from ssmshell.channel import Channel, ChannelError, ChannelOptions, ConnectError, Resumed
from ssmshell.errors import Exit, UserError

if TYPE_CHECKING:
    from ssmshell.sessions.ports import Listen

T = TypeVar("T")


def notice(line: str) -> None:
    """One line for the user on stderr (``\\r\\n`` so it also reads right in raw mode)."""
    end = "\r\n" if sys.stderr.isatty() else "\n"
    sys.stderr.write(f"ssmshell: {line}{end}" if line else "")
    sys.stderr.flush()


def make_channel(aws: Aws, info: SessionInfo, options: ChannelOptions | None = None,
                 status: Callable[[str], None] | None = None) -> Channel:
    """A :class:`Channel` for ``info`` whose KMS and resume calls go through ``aws``."""

    async def data_key(key_id: str, context: dict[str, str]) -> tuple[bytes, bytes]:
        try:
            return await asyncio.to_thread(aws.generate_data_key, key_id, context)
        except UserError as exc:
            raise ChannelError(exc.message, exc.exit_code) from None

    async def resume() -> Resumed:
        try:
            token, url = await asyncio.to_thread(aws.resume_session, info.session_id)
        except UserError as exc:
            if exc.exit_code in (Exit.UNREACHABLE, Exit.THROTTLED):
                raise ConnectError(exc.message) from None  # retryable
            raise ChannelError(exc.message, exc.exit_code) from None
        return Resumed(token, url)

    return Channel(info.stream_url, info.token, session_id=info.session_id,
                   target_id=info.target_id, data_key=data_key, resume=resume,
                   options=options, status=status or _status_line)


def _status_line(line: str) -> None:
    if line:
        notice(line)


def run_session(aws: Aws, info: SessionInfo,
                body: Callable[[Channel], Awaitable[int]],
                options: ChannelOptions | None = None) -> int:
    """Run ``body(channel)`` to completion with signal handling and cleanup.

    Returns:
        The session's exit status.

    Raises:
        UserError: the session failed; the terminal is already restored.
    """
    return asyncio.run(_run(aws, info, body, options))


async def guarded(body: Awaitable[int]) -> int:
    """Await ``body`` with SIGTERM/SIGHUP ending it and channel failures mapped to
    :class:`UserError` s (one line, an exit code). Cleanup is the caller's ``finally``.

    Raises:
        UserError: a signal (exit 128+n), an unreachable websocket, a channel failure.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        task.cancel()

    handled = [] if sys.platform == "win32" else [signal.SIGTERM, signal.SIGHUP]
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await body
    except asyncio.CancelledError:
        if received:
            raise UserError(f"terminated by signal {signal.Signals(received[0]).name}",
                            128 + received[0]) from None
        raise
    except ConnectError as exc:
        raise UserError(str(exc), Exit.UNREACHABLE) from None
    except ChannelError as exc:
        raise UserError(str(exc), exc.exit_code or exit_for(str(exc))) from None
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _run(aws: Aws, info: SessionInfo, body: Callable[[Channel], Awaitable[int]],
               options: ChannelOptions | None) -> int:
    channel = make_channel(aws, info, options)
    # What exists now (modules, clients, the AWS calls) lives as long as the process:
    # the cyclic collector need not walk it again. A full collection of it takes 6-8 ms,
    # which otherwise lands on a keystroke's echo now and then (docs/PERFORMANCE.md).
    gc.freeze()
    try:
        return await guarded(body(channel))
    finally:
        if channel.closed_reason is None:
            # We are leaving without channel_closed: end the session on the AWS side too.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(aws.terminate_session,
                                                         info.session_id), 3)
        await channel.close()


def exit_for(message: str) -> int:
    """The exit code for a channel failure that carries none of its own."""
    lowered = message.lower()
    if any(word in lowered for word in ("kms", "data key", "challenge", "ciphertext")):
        return Exit.KMS_FAILED
    if "resume" in lowered or "connection" in lowered:
        return Exit.CONNECTION_LOST
    return Exit.PROTOCOL


def channel_options(debug: bool = False) -> ChannelOptions:
    """Channel tunables; ``SSMSHELL_CONNECT_TIMEOUT``, ``SSMSHELL_RESUME_BUDGET`` and
    ``SSMSHELL_PING_INTERVAL`` (seconds) override the websocket open timeout, the total
    time spent resuming, and the keep-alive ping interval (= pong deadline)."""
    options = ChannelOptions(debug=debug)
    for name, attr in (("SSMSHELL_CONNECT_TIMEOUT", "open_timeout"),
                       ("SSMSHELL_RESUME_BUDGET", "resume_budget"),
                       ("SSMSHELL_PING_INTERVAL", "ping_interval"),
                       ("SSMSHELL_PING_INTERVAL", "ping_timeout")):
        value = os.environ.get(name)
        if value:
            try:
                setattr(options, attr, float(value))
            except ValueError:
                raise UserError(f"{name} must be a number of seconds, not {value!r}",
                                Exit.USAGE) from None
    return options


def run_shell(aws: Aws, info: SessionInfo, options: ChannelOptions) -> int:
    """An interactive (or command) session on the local terminal; the remote status."""
    from ssmshell.sessions.shell import ShellSession

    async def body(channel: Channel) -> int:
        return await ShellSession(channel, notice=notice).run()

    return run_session(aws, info, body, options)


def run_stdio(aws: Aws, info: SessionInfo, options: ChannelOptions) -> int:
    """A standard-stream Port session on stdin/stdout (ssh's ProxyCommand)."""
    from ssmshell.sessions.proxy import StdioSession

    async def body(channel: Channel) -> int:
        return await StdioSession(channel, notice=notice).run()

    return run_session(aws, info, body, options)


def run_forwards(aws: Aws, forwards: list[tuple[SessionInfo, Listen, Callable[[str], None]]],
                 options: ChannelOptions) -> int:
    """Port sessions, each behind a local listener (``on_ready`` gets the bound
    address), until one ends or Ctrl-C; every session is then terminated."""
    from ssmshell.sessions.ports import PortSession

    async def main() -> int:
        sessions = [PortSession(make_channel(aws, info, options), listen, notice=notice,
                                on_ready=on_ready) for info, listen, on_ready in forwards]
        tasks = [asyncio.create_task(s.run()) for s in sessions]

        async def all_of_them() -> int:
            return max(await asyncio.gather(*tasks))

        try:
            return await guarded(all_of_them())
        finally:
            for session in sessions:
                with contextlib.suppress(Exception):
                    await session.terminate()
            for info, _, _ in forwards:
                await asyncio.to_thread(aws.terminate_session, info.session_id)
            for task in tasks:
                task.cancel()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0
