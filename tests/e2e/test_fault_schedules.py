"""Random fault schedules end to end (issue 7): real websockets, the real agent emulator,
frames dropped, duplicated, reordered, delayed and corrupted at random in both directions.
Every stream must arrive exact. Many sessions run at once in one process (the async API),
which also covers "50 concurrent sessions, all streams exact"."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from ssmshell.local.faults import Faults
from ssmshell.local.server import LocalSessionManager
from ssmshell.runner import make_channel
from tests.local.test_sessions import aws_for, collect, echo_server, start
from tests.reliability import record

OUTPUT_SCHEDULES = 1000
INPUT_SCHEDULES = 200
CONCURRENCY = 25


def schedule(seed: int) -> Faults:
    rng = random.Random(seed)
    return Faults(drop=rng.uniform(0, 0.08), duplicate=rng.uniform(0, 0.08),
                  reorder=rng.uniform(0, 0.08), delay=rng.choice([0.0, 0.005, 0.02]),
                  corrupt_digest=rng.uniform(0, 0.05), seed=seed)


@pytest.mark.timeout(900)
def test_output_streams_exact_under_random_schedules(local_sm: LocalSessionManager,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    data = os.urandom(64_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    aws = aws_for(local_sm, monkeypatch)

    async def one(seed: int, gate: asyncio.Semaphore) -> bool:
        size = random.Random(-seed).randrange(1, len(data))
        async with gate:
            info = await asyncio.to_thread(start, local_sm, "SSMShell-NonInteractiveCommand",
                                           {"command": [f"head -c {size} {path}"]})
            local_sm.faults[info.session_id] = schedule(seed)
            out = await asyncio.wait_for(collect(make_channel(aws, info)), 120)
        return out["stdout"] == data[:size] and out["exit"] == 0

    async def main() -> list[bool]:
        gate = asyncio.Semaphore(CONCURRENCY)
        return await asyncio.gather(*(one(seed, gate) for seed in range(OUTPUT_SCHEDULES)))

    results = asyncio.run(main())
    record("random drop/duplicate/reorder/delay/corrupt schedules, output stream exact",
           len(results), sum(results))
    assert all(results), [n for n, ok in enumerate(results) if not ok][:20]


@pytest.mark.timeout(600)
def test_input_streams_exact_under_random_schedules(local_sm: LocalSessionManager,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Client → agent (and back) through port sessions to an echo server."""
    from ssmshell.sessions.ports import Listen, PortSession

    aws = aws_for(local_sm, monkeypatch)

    async def one(seed: int, port: int, gate: asyncio.Semaphore) -> bool:
        payload = random.Random(seed).randbytes(random.Random(-seed).randrange(1, 40_000))
        async with gate:
            info = await asyncio.to_thread(start, local_sm, "AWS-StartPortForwardingSession",
                                           {"portNumber": [str(port)]})
            local_sm.faults[info.session_id] = schedule(10_000 + seed)
            bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            session = PortSession(make_channel(aws, info), Listen("127.0.0.1", 0),
                                  on_ready=bound.set_result)
            task = asyncio.create_task(session.run())
            try:
                local_port = int((await asyncio.wait_for(bound, 60)).rsplit(":", 1)[1])
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
                writer.write(payload)
                await writer.drain()
                got = bytearray()
                while len(got) < len(payload):
                    chunk = await asyncio.wait_for(reader.read(65536), 60)
                    if not chunk:
                        break
                    got += chunk
                writer.close()
                return hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            finally:
                await session.terminate()
                task.cancel()
                await asyncio.to_thread(aws.terminate_session, info.session_id)

    async def main() -> list[bool]:
        server, port = await echo_server()
        gate = asyncio.Semaphore(CONCURRENCY)
        try:
            return await asyncio.gather(*(one(seed, port, gate)
                                          for seed in range(INPUT_SCHEDULES)))
        finally:
            server.close()

    results = asyncio.run(main())
    record("random fault schedules on port sessions, input stream echoed back exact",
           len(results), sum(results))
    assert all(results), [n for n, ok in enumerate(results) if not ok][:20]
