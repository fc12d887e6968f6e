"""The embedded local Session Manager: AWS endpoints + websocket gateway + agent emulator.

Usable in-process (``async with LocalSessionManager() as sm``), in a background
thread (:meth:`LocalSessionManager.start_in_thread`, what ``ssmshell demo`` and
the tests use, so that blocking boto3 calls never stall it), or in the
foreground (``ssmshell local serve``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import TracebackType
from typing import Any

from ssmshell.local.agent import AgentOptions
from ssmshell.local.aws_api import AwsEndpoints
from ssmshell.local.config import LocalConfig, default_config
from ssmshell.local.faults import Faults
from ssmshell.local.gateway import Gateway
from ssmshell.local.kms import LocalKms
from ssmshell.local.registry import Registry

#: Dummy credentials the local endpoints accept (they check SigV4's shape only).
ACCESS_KEY_ID = "AKIALOCALSSMSHELL000"
SECRET_ACCESS_KEY = "local-secret-not-a-real-key"


class LocalSessionManager:
    """One local Session Manager on 127.0.0.1.

    Args:
        config: the fake world (instances, clusters, keys, preferences).
        agent_options: how the emulated agent behaves (pacing, delays, …).
    """

    def __init__(self, config: LocalConfig | None = None,
                 agent_options: AgentOptions | None = None) -> None:
        self.config = config or default_config()
        options = agent_options or AgentOptions()
        options.require_kms_challenge = options.require_kms_challenge or bool(
            self.config.require_kms_challenge)
        if options.shell is None and self.config.shell:
            options.shell = self.config.shell
        self.default_faults = Faults()
        self.faults: dict[str, Faults] = {}
        self.kms = LocalKms(self.config)
        self.registry = Registry(stream_url_for=self._stream_url)
        self.gateway = Gateway(self.registry, decrypt=self._decrypt, options=options,
                               faults_for=lambda sid: self.faults.get(sid, self.default_faults))
        self.endpoints = AwsEndpoints(self.config, self.registry, self.kms)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ facts for clients

    @property
    def endpoint_url(self) -> str:
        """The URL for ``--endpoint-url`` / ``AWS_ENDPOINT_URL``."""
        return str(self.endpoints.url)

    @property
    def region(self) -> str:
        return str(self.config.region)

    def client_env(self) -> dict[str, str]:
        """Environment variables that point boto3 and the AWS CLI here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def _stream_url(self, session_id: str) -> str:
        return self.gateway.stream_url(session_id)

    def _decrypt(self, blob: bytes, context: dict[str, str], key_id: str) -> bytes:
        plaintext: bytes = self.kms.decrypt(blob, context, key_id)
        return plaintext

    # ------------------------------------------------------------------ in-process

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    gateway_port: int = 0) -> None:
        """Start the gateway and the endpoints on ``host``."""
        await self.gateway.start(host, gateway_port)
        await self.endpoints.start(host, port)

    async def close(self) -> None:
        """End every session and stop both servers."""
        await self.gateway.close()
        await self.endpoints.close()

    async def outage(self, seconds: float) -> None:
        """The network goes away for ``seconds``: both servers stop answering and every
        websocket drops abruptly; then they listen again on the same ports. Sessions
        (and their agents) live on, as they do at AWS when a client's network fails."""
        host, http_port, gateway_port = self.endpoints.host, self.endpoints.port, \
            self.gateway.port
        await self.gateway.suspend()
        await self.endpoints.close()
        await asyncio.sleep(seconds)
        await self.gateway.start(host, gateway_port)
        await self.endpoints.start(host, http_port)

    async def __aenter__(self) -> LocalSessionManager:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ background thread

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0,
                        gateway_port: int = 0) -> LocalSessionManager:
        """Run on a private event loop in a daemon thread; returns once listening."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(host, port, gateway_port))
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self.close())
            # What is still running (a connection handler that outlived close()'s
            # deadline, a session draining) is cancelled and awaited, as asyncio.run()
            # does, so that no coroutine is left to be collected on a closed loop.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=main, name="ssmshell-local", daemon=True)
        self._thread.start()
        started.result(timeout=30)
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the background loop (tests use it to poke at sessions)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_thread(self) -> None:
        """Stop the background loop and wait for the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
            self._thread = None
